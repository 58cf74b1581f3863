//! The inspection journal: every answered image's record, kept in SQLite.
//!
//! It is never on an answer's path. Connection writers hand their records
//! to a bounded queue without waiting (`append`); one writer thread
//! (`writer.rs`) takes them in batches, one transaction per batch, at most
//! `batch_ms` after a batch's first row arrived. A full queue drops rows, a
//! failing database loses the rows of its failed batches: both are counted
//! (`pear_journal_dropped_total`, `pear_journal_errors_total`) and logged
//! once per incident, and answers go on unchanged. `close` (at the end of
//! the shutdown drain) writes what is queued and joins the writer, so after
//! a SIGTERM every answered image is in the journal; after a `kill -9` at
//! most the rows of the last `batch_ms` are missing (WAL: a committed
//! transaction survives the process).
//!
//! With `capture = "uncertain"` the writer also keeps a copy of each
//! uncertain image, named by its row's id (`capture.rs`).

mod capture;
pub mod query;
mod schema;
mod writer;

pub use schema::current as schema_version;

use crate::config::{Capture, JournalSection};
use crate::metrics::Metrics;
use crate::record::Record;
use crate::sync::lock;
use crossbeam_channel::{bounded, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub struct Journal {
    /// None once closed.
    tx: Mutex<Option<Sender<Record>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    /// In a run of dropped rows (logged at its start and end only).
    dropping: AtomicBool,
}

impl Journal {
    /// Starts the writer for `[journal] path`; it opens (or, if corrupt,
    /// replaces) the database itself, so a bad journal never stops the server.
    pub fn start(cfg: &JournalSection, metrics: Arc<Metrics>) -> std::io::Result<Option<Journal>> {
        let Some(path) = cfg.path.clone() else { return Ok(None) };
        let (tx, rx) = bounded(cfg.queue_rows);
        let capture = (cfg.capture == Capture::Uncertain).then(|| capture::Settings {
            dir: path.parent().unwrap_or(std::path::Path::new(".")).join("captured"),
            below: cfg.capture_below,
            max_bytes: cfg.capture_max_bytes,
        });
        let settings = writer::Settings {
            path,
            batch: std::time::Duration::from_millis(cfg.batch_ms),
            retention: std::time::Duration::from_secs(cfg.retention_days * 86_400),
            max_rows: cfg.max_rows,
            capture,
        };
        let m = metrics.clone();
        let handle = std::thread::Builder::new().name("journal".into()).spawn(move || writer::run(rx, settings, &m))?;
        Ok(Some(Journal { tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(handle)), metrics, dropping: AtomicBool::new(false) }))
    }

    /// Queues records without waiting; what does not fit is dropped and counted.
    pub fn append(&self, records: Vec<Record>) {
        let tx = lock(&self.tx).clone();
        let Some(tx) = tx else {
            self.metrics.journal_dropped.inc_by(records.len() as u64);
            return;
        };
        for r in records {
            match tx.try_send(r) {
                Ok(()) => {
                    if self.dropping.swap(false, Ordering::Relaxed) {
                        log::info!("journal: its queue has room again (dropped rows: pear_journal_dropped_total)");
                    }
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.metrics.journal_dropped.inc();
                    if !self.dropping.swap(true, Ordering::Relaxed) {
                        log::warn!("journal: queue full ({} rows), dropping rows until the writer catches up", tx.capacity().unwrap_or(0));
                    }
                }
            }
        }
    }

    /// Writes what is queued, then stops the writer.
    pub fn close(&self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}
