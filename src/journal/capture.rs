//! Images worth relabelling (`[journal] capture = "uncertain"`): a copy of
//! every image the classifier was unsure of, or where no pear was found,
//! kept beside the journal as `captured/<UTC date>/<record id>.<ext>`.
//!
//! Run by the journal's writer thread once a batch is committed (a copy is
//! named by its row's id), so it is never on an answer's path. A copy is a
//! hard link where the file system allows, else a copy of the bytes; either
//! way it is checked against the SHA-256 of the bytes that were judged, and
//! an image changed since is not kept. The folder holds at most `max_bytes`;
//! the oldest copies go first, and a copy goes with its row when the journal
//! prunes it.

use crate::metrics::Metrics;
use crate::models::sha256_hex;
use crate::paths::resolve_file;
use crate::record::{utc_text, Record};
use pear_protocol::ErrorCode;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

pub struct Settings {
    /// `captured/` beside the journal file.
    pub dir: PathBuf,
    /// Classifier confidence below which an image is kept.
    pub below: f32,
    pub max_bytes: u64,
}

struct Kept {
    id: i64,
    path: PathBuf,
    bytes: u64,
}

pub struct Capture {
    s: Settings,
    /// Oldest (lowest id) first.
    kept: VecDeque<Kept>,
    bytes: u64,
    /// In a run of failures (logged at its start only).
    failing: bool,
}

impl Capture {
    /// Takes stock of what an earlier run kept.
    pub fn open(s: Settings, metrics: &Metrics) -> Capture {
        let mut kept = Vec::new();
        for day in read_dir(&s.dir) {
            for f in read_dir(&day) {
                let id = f.file_stem().and_then(|n| n.to_str()).and_then(|n| n.parse::<i64>().ok());
                match (id, std::fs::metadata(&f)) {
                    (Some(id), Ok(m)) if m.is_file() => kept.push(Kept { id, path: f, bytes: m.len() }),
                    _ => {}
                }
            }
        }
        kept.sort_by_key(|k| k.id);
        let bytes = kept.iter().map(|k| k.bytes).sum();
        metrics.journal_captured_bytes.set(bytes as i64);
        if !kept.is_empty() {
            log::info!("journal: {} captured image(s), {bytes} bytes, in {}", kept.len(), s.dir.display());
        }
        let mut c = Capture { s, kept: kept.into(), bytes, failing: false };
        c.make_room(0, metrics);
        c
    }

    /// Uncertain: the classifier's confidence is below the bound, or the image was read and no pear found.
    pub fn wanted(&self, r: &Record) -> bool {
        r.error_code == ErrorCode::NoError && (!r.detected || r.confidence.is_some_and(|c| c < self.s.below))
    }

    /// Keeps a copy of the record's image as `id`.
    pub fn keep(&mut self, id: i64, r: &Record, metrics: &Metrics) {
        match self.copy(id, r) {
            Ok((k, replaced)) => {
                if let Some(at) = replaced.then(|| self.kept.iter().position(|old| old.path == k.path)).flatten() {
                    // The leftover's entry goes: deleting it later would delete this copy.
                    if let Some(old) = self.kept.remove(at) {
                        self.bytes -= old.bytes;
                    }
                }
                self.make_room(k.bytes, metrics);
                self.bytes += k.bytes;
                self.kept.push_back(k);
                metrics.journal_captured.inc();
                metrics.journal_captured_bytes.set(self.bytes as i64);
                if self.failing {
                    log::info!("journal: capturing images again");
                    self.failing = false;
                }
            }
            Err(why) => {
                metrics.journal_capture_failures.inc();
                if !self.failing {
                    log::warn!("journal: cannot capture {} (record {id}): {why}; counted in pear_journal_capture_failures_total", r.file);
                    self.failing = true;
                }
            }
        }
    }

    /// The copy, and whether it replaced a file of the same name.
    fn copy(&self, id: i64, r: &Record) -> Result<(Kept, bool), String> {
        let Some(sha) = r.image_sha256.as_deref() else { return Err("the image was not read".into()) };
        if r.image_bytes.is_some_and(|n| n > self.s.max_bytes) {
            return Err(format!("it is larger than journal.capture_max_bytes ({})", self.s.max_bytes));
        }
        let from = resolve_file(Path::new(&*r.image_dir), &r.file).map_err(|e| e.to_string())?;
        let day = self.s.dir.join(utc_date(r.time_ms));
        std::fs::create_dir_all(&day).map_err(|e| format!("cannot create {}: {e}", day.display()))?;
        let to = day.join(file_name(id, &r.file));
        // A leftover of an earlier journal with the same id (one deleted by
        // hand: a corrupt one takes its folder along) is replaced.
        let replaced = std::fs::remove_file(&to).is_ok();
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(|e| format!("cannot copy it to {}: {e}", to.display()))?;
        }
        let bytes = std::fs::read(&to).map_err(|e| format!("cannot read back {}: {e}", to.display()))?;
        if sha256_hex(&bytes) != sha {
            let _ = std::fs::remove_file(&to);
            return Err("the file changed after it was judged".into());
        }
        Ok((Kept { id, path: to, bytes: bytes.len() as u64 }, replaced))
    }

    /// Deletes the oldest copies until `incoming` more bytes fit.
    fn make_room(&mut self, incoming: u64, metrics: &Metrics) {
        while self.bytes + incoming > self.s.max_bytes {
            let Some(k) = self.kept.pop_front() else { break };
            self.delete(k);
        }
        metrics.journal_captured_bytes.set(self.bytes as i64);
    }

    /// Deletes the copies of rows the journal no longer has (ids below `first`; `None`: no rows left).
    pub fn forget_before(&mut self, first: Option<i64>, metrics: &Metrics) {
        while self.kept.front().is_some_and(|k| first.is_none_or(|f| k.id < f)) {
            if let Some(k) = self.kept.pop_front() {
                self.delete(k);
            }
        }
        metrics.journal_captured_bytes.set(self.bytes as i64);
    }

    fn delete(&mut self, k: Kept) {
        self.bytes -= k.bytes;
        if let Err(e) = std::fs::remove_file(&k.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("journal: cannot delete captured {}: {e}", k.path.display());
            }
        }
        // An emptied day folder goes too (fails, harmlessly, while it still holds files).
        if let Some(day) = k.path.parent() {
            let _ = std::fs::remove_dir(day);
        }
    }

    /// The journal was moved aside: its captured images go with it, and capture starts afresh.
    pub fn set_aside(&mut self, suffix: &str, metrics: &Metrics) {
        if self.s.dir.exists() {
            let aside = PathBuf::from(format!("{}{suffix}", self.s.dir.display()));
            match std::fs::rename(&self.s.dir, &aside) {
                Ok(()) => log::warn!("journal: its captured images moved to {}", aside.display()),
                Err(e) => log::warn!("journal: cannot move {} aside: {e}", self.s.dir.display()),
            }
        }
        self.kept.clear();
        self.bytes = 0;
        metrics.journal_captured_bytes.set(0);
    }
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
}

/// `<id>.<ext>`, the extension kept when it is a plain one (so a viewer knows the format).
fn file_name(id: i64, original: &str) -> String {
    let ext =
        Path::new(original).extension().and_then(|e| e.to_str()).filter(|e| e.len() <= 8 && e.chars().all(|c| c.is_ascii_alphanumeric()));
    match ext {
        Some(ext) => format!("{id}.{}", ext.to_ascii_lowercase()),
        None => id.to_string(),
    }
}

/// `YYYY-MM-DD` of a UTC time in ms since 1970.
fn utc_date(ms: i64) -> String {
    let t = utc_text(ms);
    t.split(' ').next().unwrap_or(&t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(utc_date(951_868_800_000 - 1), "2000-02-29");
        assert_eq!(utc_date(951_868_800_000), "2000-03-01");
        assert_eq!(utc_date(1_796_083_200_000), "2026-12-01");
        assert_eq!(utc_date(-1), "1969-12-31");
    }

    fn record(dir: &Path, file: &str, bytes: &[u8], confidence: Option<f32>) -> Record {
        Record {
            time_ms: 1_796_083_200_000,
            host: "h".into(),
            peer: "p".into(),
            request: 1,
            index: 0,
            image_dir: dir.to_string_lossy().into(),
            file: file.into(),
            image_bytes: Some(bytes.len() as u64),
            image_sha256: Some(sha256_hex(bytes)),
            model: "m".into(),
            model_sha256: "s".into(),
            result: Some(1),
            label: None,
            confidence,
            bbox: None,
            detected: confidence.is_some(),
            error_code: ErrorCode::NoError,
            message: None,
            missed_deadline: false,
            fruit_id: None,
            queue_wait: None,
            inference: None,
            answer: std::time::Duration::ZERO,
        }
    }

    /// A file rewritten between its answer and its capture is not kept as if it had been judged.
    #[test]
    fn a_changed_image_is_not_kept() {
        let dir = std::env::temp_dir().join(format!("pear-capture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let metrics = Metrics::new();
        let mut c = Capture::open(Settings { dir: dir.join("captured"), below: 0.5, max_bytes: 1000 }, &metrics);
        std::fs::write(dir.join("a.jpg"), b"judged").unwrap();
        let r = record(&dir, "a.jpg", b"judged", Some(0.4));
        assert!(c.wanted(&r) && !c.wanted(&record(&dir, "a.jpg", b"judged", Some(0.5))));
        std::fs::write(dir.join("a.jpg"), b"rewritten").unwrap();
        c.keep(1, &r, &metrics);
        assert_eq!(metrics.journal_capture_failures.get(), 1);
        assert!(!dir.join("captured/2026-12-01/1.jpg").exists());
        std::fs::write(dir.join("a.jpg"), b"judged").unwrap();
        c.keep(2, &r, &metrics);
        assert_eq!(std::fs::read(dir.join("captured/2026-12-01/2.jpg")).unwrap(), b"judged");
        c.keep(2, &r, &metrics); // ids begun again (a journal deleted by hand): replaced, counted once
        assert_eq!(metrics.journal_captured_bytes.get(), 6);
        c.forget_before(Some(3), &metrics);
        assert!(!dir.join("captured/2026-12-01").exists(), "the emptied day goes too");
        assert_eq!(metrics.journal_captured_bytes.get(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names() {
        assert_eq!(file_name(7, "cam1/a.JPG"), "7.jpg");
        assert_eq!(file_name(7, "noext"), "7");
        assert_eq!(file_name(7, "weird.j p g"), "7");
    }
}
