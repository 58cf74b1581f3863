//! The journal's one writer thread: opens the database (moving a corrupt one
//! aside), writes batches of records in transactions, prunes old rows.

use super::capture::{self, Capture};
use super::schema;
use crate::metrics::Metrics;
use crate::record::{now_ms, Record};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use rusqlite::{params, Connection, ErrorCode};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Rows per transaction at most (a burst is split, not held).
const MAX_BATCH: usize = 4096;
/// How often a journal that could not be opened is tried again.
const REOPEN_EVERY: Duration = Duration::from_secs(5);
/// How often rows older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long writes must go without a failure before an incident is over.
/// On a nearly full disk a small batch can still fit where a larger one did
/// not; without this the log would flap between "cannot write" and "writing
/// again" once per batch.
const QUIET_BEFORE_RECOVERED: Duration = Duration::from_secs(60);

/// A run of failures, logged once at its start and once at its end.
#[derive(Default)]
struct Incident {
    last_failure: Option<Instant>,
}

impl Incident {
    /// True when this failure starts an incident (and so should be logged).
    fn failed(&mut self, now: Instant) -> bool {
        self.last_failure.replace(now).is_none()
    }

    /// True when this success ends an incident (and so should be logged).
    fn succeeded(&mut self, now: Instant) -> bool {
        match self.last_failure {
            Some(t) if now.saturating_duration_since(t) >= QUIET_BEFORE_RECOVERED => {
                self.last_failure = None;
                true
            }
            _ => false,
        }
    }
}

pub struct Settings {
    pub path: PathBuf,
    pub batch: Duration,
    pub retention: Duration,
    /// 0 = no limit.
    pub max_rows: u64,
    /// `capture = "uncertain"`.
    pub capture: Option<capture::Settings>,
}

enum OpenError {
    /// Not a database, damaged, or from a newer build: moved aside.
    Unusable(String),
    /// Cannot be opened or written at all (permissions, a full disk).
    Io(String),
}

fn classify(e: rusqlite::Error) -> OpenError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OpenError::Unusable(e.to_string()),
        _ => OpenError::Io(e.to_string()),
    }
}

fn try_open(path: &Path) -> Result<Connection, OpenError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::Io(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut db = Connection::open(path).map_err(classify)?;
    db.busy_timeout(Duration::from_secs(5)).map_err(classify)?;
    // WAL: readers (the history API) never block the writer; a committed
    // transaction survives a crash of the process. NORMAL: no fsync per commit.
    let mode: String = db.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("journal {}: journal_mode is {mode}, not WAL", path.display());
    }
    db.pragma_update(None, "synchronous", "NORMAL").map_err(classify)?;
    let check: String = db.pragma_query_value(None, "quick_check", |r| r.get(0)).map_err(classify)?;
    if check != "ok" {
        return Err(OpenError::Unusable(format!("quick_check: {check}")));
    }
    schema::migrate(&mut db).map_err(OpenError::Unusable)?;
    Ok(db)
}

/// Opens the journal; an unusable file (and its -wal, -shm) is renamed to
/// `<path>.corrupt-<unix time>` and a new journal begun. With the database
/// comes the suffix it was moved aside with, if it was.
fn open(path: &Path) -> Result<(Connection, Option<String>), String> {
    match try_open(path) {
        Ok(db) => Ok((db, None)),
        Err(OpenError::Io(e)) => Err(e),
        Err(OpenError::Unusable(why)) => {
            let suffix = format!(".corrupt-{}", now_ms() / 1000);
            let aside = PathBuf::from(format!("{}{suffix}", path.display()));
            for suffix in ["", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", path.display()));
                if from.exists() {
                    let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                    std::fs::rename(&from, &to).map_err(|e| format!("cannot move {} aside: {e}", from.display()))?;
                }
            }
            log::error!("journal {} is unusable ({why}); moved it to {} and began a new one", path.display(), aside.display());
            let db = try_open(path).map_err(|e| match e {
                OpenError::Io(e) | OpenError::Unusable(e) => e,
            })?;
            Ok((db, Some(suffix)))
        }
    }
}

/// Writes the rows in one transaction; their ids, in order.
fn insert(db: &mut Connection, rows: &[Record]) -> rusqlite::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    let tx = db.transaction()?;
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO inspections (time_ms, host, peer, request, view, image_dir, file, image_bytes, image_sha256,
                model, model_sha256, result, label, confidence, bbox_x1, bbox_y1, bbox_x2, bbox_y2, detected,
                error_code, message, missed_deadline, fruit_id, queue_wait_ms, inference_ms, answer_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
        )?;
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        // The f32's shortest decimal (0.95345765), not its binary widening (0.9534576535224916).
        let wide = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::from(x));
        for r in rows {
            let b = r.bbox.map(|b| b.map(wide));
            st.execute(params![
                r.time_ms,
                &*r.host,
                &*r.peer,
                r.request as i64,
                r.index as i64,
                &*r.image_dir,
                r.file,
                r.image_bytes.map(|n| n as i64),
                r.image_sha256,
                &*r.model,
                &*r.model_sha256,
                r.result,
                r.label,
                r.confidence.map(wide),
                b.map(|b| b[0]),
                b.map(|b| b[1]),
                b.map(|b| b[2]),
                b.map(|b| b[3]),
                r.detected,
                r.error_code as u8,
                r.message,
                r.missed_deadline,
                r.fruit_id,
                ms(r.queue_wait),
                ms(r.inference),
                r.answer.as_secs_f64() * 1e3,
            ])?;
            ids.push(tx.last_insert_rowid());
        }
    }
    tx.commit()?;
    Ok(ids)
}

/// Deletes rows beyond `max_rows` (the oldest) and, every `PRUNE_EVERY`, rows older than the retention.
fn prune(db: &Connection, s: &Settings, last: &mut Option<Instant>) -> rusqlite::Result<usize> {
    let mut n = 0;
    if s.max_rows > 0 {
        n += db.execute("DELETE FROM inspections WHERE id <= (SELECT MAX(id) FROM inspections) - ?1", [s.max_rows as i64])?;
    }
    if last.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
        *last = Some(Instant::now());
        let before = now_ms() - s.retention.as_millis() as i64;
        n += db.execute("DELETE FROM inspections WHERE time_ms < ?1", [before])?;
    }
    Ok(n)
}

/// State of the writer between batches.
struct Writer<'a> {
    s: Settings,
    metrics: &'a Metrics,
    db: Option<Connection>,
    last_open: Option<Instant>,
    last_prune: Option<Instant>,
    incident: Incident,
    capture: Option<Capture>,
}

impl Writer<'_> {
    fn db(&mut self) -> Option<&mut Connection> {
        if self.db.is_none() && self.last_open.is_none_or(|t| t.elapsed() >= REOPEN_EVERY) {
            self.last_open = Some(Instant::now());
            match open(&self.s.path) {
                Ok((db, aside)) => {
                    log::info!("journal: writing to {} (schema version {})", self.s.path.display(), schema::current());
                    if let (Some(c), Some(suffix)) = (self.capture.as_mut(), aside) {
                        c.set_aside(&suffix, self.metrics);
                    }
                    self.db = Some(db);
                }
                Err(e) => self.failed(&format!("cannot open {}: {e}", self.s.path.display())),
            }
        }
        self.db.as_mut()
    }

    fn failed(&mut self, why: &str) {
        if self.incident.failed(Instant::now()) {
            log::error!("journal: {why}; answers go on, and rows not written are counted in pear_journal_errors_total");
        }
    }

    fn write(&mut self, batch: &[Record]) {
        let result = match self.db() {
            Some(db) => insert(db, batch).map_err(|e| e.to_string()),
            None => Err("no journal open".to_string()),
        };
        match result {
            Ok(ids) => {
                self.metrics.journal_rows.inc_by(batch.len() as u64);
                if let Some(c) = self.capture.as_mut() {
                    for (id, r) in ids.into_iter().zip(batch) {
                        if c.wanted(r) {
                            c.keep(id, r, self.metrics);
                        }
                    }
                }
                if self.incident.succeeded(Instant::now()) {
                    log::info!("journal: writing again");
                }
                if let Some(db) = self.db.as_ref() {
                    match prune(db, &self.s, &mut self.last_prune) {
                        Ok(0) => {}
                        Ok(_) => {
                            // Captured images go with their rows.
                            let first = db.query_row("SELECT MIN(id) FROM inspections", [], |r| r.get::<_, Option<i64>>(0));
                            if let (Some(c), Ok(first)) = (self.capture.as_mut(), first) {
                                c.forget_before(first, self.metrics);
                            }
                        }
                        Err(e) => log::warn!("journal: cannot prune old rows: {e}"),
                    }
                }
            }
            Err(e) => {
                self.metrics.journal_errors.inc_by(batch.len() as u64);
                self.failed(&format!("cannot write {} row(s): {e}", batch.len()));
            }
        }
    }
}

/// Serves the queue until every sender is gone and it is empty.
pub fn run(rx: Receiver<Record>, mut s: Settings, metrics: &Metrics) {
    let batch_time = s.batch;
    let capture = s.capture.take().map(|c| Capture::open(c, metrics));
    let mut w = Writer { s, metrics, db: None, last_open: None, last_prune: None, incident: Incident::default(), capture };
    w.db(); // open at start, so a corrupt file is replaced (and said) before the first answer
    while let Ok(first) = rx.recv() {
        let until = Instant::now() + batch_time;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.recv_deadline(until) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        w.write(&batch);
    }
    if let Some(db) = w.db.take() {
        // Fold the WAL into the database file, so the journal is one file at rest.
        let _ = db.pragma_update(None, "wal_checkpoint", "TRUNCATE");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_is_logged_once_even_when_writes_flap() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut i = Incident::default();
        assert!(!i.succeeded(at(0)), "no incident, nothing to end");
        assert!(i.failed(at(1)), "the first failure starts one");
        assert!(!i.succeeded(at(2)), "a success soon after is not the end");
        assert!(!i.failed(at(3)), "nor is the next failure a new incident");
        assert!(!i.succeeded(at(3 + 59)));
        assert!(i.succeeded(at(3 + 60)), "a minute without failures ends it");
        assert!(!i.succeeded(at(3 + 61)), "and only once");
        assert!(i.failed(at(100)), "a later failure is a new incident");
    }
}
