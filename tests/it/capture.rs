//! `[journal] capture = "uncertain"` against the real binary: the images the
//! classifier was unsure of (by PyTorch's own logits for the parity images),
//! or where no pear was found, are kept as hard links named by their journal
//! row, the bytes judged; the folder stays within `capture_max_bytes`, the
//! oldest going first.

use crate::common::*;
use rusqlite::Connection;
use serde_json::Value;
use std::collections::{BTreeSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

struct Row {
    id: i64,
    time_ms: i64,
    file: String,
    wanted: bool,
    sha256: Option<String>,
}

/// The journal's rows, each marked with whether the capture rule wants it.
fn rows(s: &TestServer, below: f64) -> Vec<Row> {
    let db = Connection::open(s.journal_path()).unwrap();
    let mut st =
        db.prepare("SELECT id, time_ms, file, error_code, detected, confidence, image_sha256 FROM inspections ORDER BY id").unwrap();
    st.query_map([], |r| {
        let (code, detected, conf): (i64, bool, Option<f64>) = (r.get(3)?, r.get(4)?, r.get(5)?);
        Ok(Row {
            id: r.get(0)?,
            time_ms: r.get(1)?,
            file: r.get(2)?,
            wanted: code == 0 && (!detected || conf.is_some_and(|c| c < below)),
            sha256: r.get(6)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Every file under `journal/captured`, as `<day>/<name>`.
fn captured(s: &TestServer) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = s.dir.join("journal/captured");
    for day in std::fs::read_dir(&root).into_iter().flatten() {
        let day = day.unwrap().path();
        for f in std::fs::read_dir(&day).unwrap() {
            let f = f.unwrap().path();
            out.insert(f.strip_prefix(&root).unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

/// `<UTC day>/<id>.<ext>`, the day as GNU date writes it.
fn name(r: &Row) -> String {
    let out = std::process::Command::new("date").args(["-u", "-d", &format!("@{}", r.time_ms / 1000), "+%F"]).output().unwrap();
    let day = String::from_utf8(out.stdout).unwrap();
    let ext = Path::new(&r.file).extension().unwrap().to_str().unwrap();
    format!("{}/{}.{ext}", day.trim(), r.id)
}

#[test]
fn uncertain_images_are_kept_as_links_named_by_record() {
    let below = 0.9;
    let mut s = TestServer::start(Options {
        journal: true,
        metrics: true,
        journal_extra: format!("capture = \"uncertain\"\ncapture_below = {below}"),
        ..Options::default()
    });
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity");
    let parity: Value = serde_json::from_str(&std::fs::read_to_string(fixtures.join("parity.json")).unwrap()).unwrap();
    // PyTorch's confidence for each parity image: the softmax of its logits, at the class.
    let mut torch = Vec::new();
    for img in parity["images"].as_array().unwrap() {
        let file = img["file"].as_str().unwrap().to_string();
        std::fs::copy(fixtures.join(&file), s.dir.join("images").join(&file)).unwrap();
        let logits: Vec<f64> = img["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let top = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        torch.push((file, 1.0 / logits.iter().map(|l| (l - top).exp()).sum::<f64>()));
    }
    let mut files: Vec<&str> = torch.iter().map(|(f, _)| f.as_str()).collect();
    files.extend(["no_pear_1.jpg", "normal_1.jpg", "missing.jpg", "corrupt.jpg"]);
    let answer = s.client().request(&classify(&files));
    wait_for_metric(&s, "pear_journal_rows_total", "", |v| v == files.len() as f64);
    let rows = rows(&s, below);
    let wanted: Vec<&Row> = rows.iter().filter(|r| r.wanted).collect();
    let is_wanted = |f: &str| wanted.iter().any(|r| r.file == f);
    for (f, p) in &torch {
        assert_eq!(is_wanted(f), *p < below, "{f}: PyTorch's confidence {p}, the answer {answer}");
    }
    assert!(is_wanted("no_pear_1.jpg"), "no pear found: kept");
    assert!(!is_wanted("missing.jpg") && !is_wanted("corrupt.jpg"), "never judged: nothing to keep");
    assert!(torch.iter().filter(|(_, p)| *p < below).count() >= 2, "the fixture has uncertain images");
    wait_for_metric(&s, "pear_journal_captured_total", "", |v| v == wanted.len() as f64);
    let bytes: u64 = wanted.iter().map(|r| std::fs::metadata(s.dir.join("images").join(&r.file)).unwrap().len()).sum();
    assert_eq!(metric(&scrape(&s), "pear_journal_captured_bytes", ""), bytes as f64);
    drain(&mut s);
    assert_eq!(captured(&s), wanted.iter().map(|r| name(r)).collect::<BTreeSet<_>>());
    for r in &wanted {
        let copy = s.dir.join("journal/captured").join(name(r));
        assert_eq!(Some(sha256_file(&copy)), r.sha256, "{}: the bytes judged", r.file);
        let source = std::fs::metadata(s.dir.join("images").join(&r.file)).unwrap();
        let kept = std::fs::metadata(&copy).unwrap();
        assert_eq!((kept.dev(), kept.ino()), (source.dev(), source.ino()), "{}: a hard link on one file system", r.file);
    }
}

/// Each image its own request, so rows (and copies) come in a known order;
/// the test replays the rule "oldest first" on the real file sizes.
#[test]
fn captured_images_stay_within_capture_max_bytes_oldest_first() {
    let max = 100_000u64;
    let mut s = TestServer::start(Options {
        journal: true,
        metrics: true,
        journal_extra: format!("capture = \"uncertain\"\ncapture_below = 1.0\ncapture_max_bytes = {max}"),
        ..Options::default()
    });
    let files =
        ["scab_1.jpg", "normal_1.jpg", "bruise_1.jpg", "no_pear_1.jpg", "black_spots_1.jpg", "rot_1.jpg", "scratches_1.jpg", "crack_1.jpg"];
    let mut c = s.client();
    for f in files {
        assert_eq!(entries(&c.request(&classify(&[f])))[0]["error_code"], 0, "{f}");
    }
    wait_for_metric(&s, "pear_journal_rows_total", "", |v| v == files.len() as f64);
    let rows = rows(&s, 1.0);
    let (mut kept, mut total) = (VecDeque::new(), 0);
    let wanted: Vec<&Row> = rows.iter().filter(|r| r.wanted).collect();
    for r in &wanted {
        let n = std::fs::metadata(s.dir.join("images").join(&r.file)).unwrap().len();
        while total + n > max {
            let (_, m): (&Row, u64) = kept.pop_front().unwrap();
            total -= m;
        }
        kept.push_back((*r, n));
        total += n;
    }
    assert!(kept.len() < wanted.len(), "the bound was reached: {} of {} kept", kept.len(), wanted.len());
    wait_for_metric(&s, "pear_journal_captured_total", "", |v| v == wanted.len() as f64);
    assert_eq!(metric(&scrape(&s), "pear_journal_captured_bytes", ""), total as f64);
    drain(&mut s);
    assert_eq!(captured(&s), kept.iter().map(|(r, _)| name(r)).collect::<BTreeSet<_>>());
}
