//! `server.toml`: every knob of the server, with defaults and checks.
//!
//! A bad config stops the server at start with a message that names the key
//! and the problem; nothing is discovered later on the sorting line.
//! Relative paths are taken relative to the config file's folder, so the
//! server behaves the same whatever directory it is started from.

use pear_model::decode::Limits;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub host: String,
    pub port: u16,
    /// Open connections at most; one more gets an error and is closed.
    pub max_connections: usize,
    /// A single request larger than this is refused and its connection closed.
    pub max_request_bytes: usize,
    /// A connection with nothing pending is closed this long after its last
    /// complete request (or after it opened).
    pub idle_timeout_secs: u64,
    /// A request must be complete this long after its first byte arrived;
    /// otherwise it is refused and the connection closed (slow senders).
    pub request_read_timeout_secs: u64,
    /// Open connections from one IP address at most; unset = no cap of its own.
    pub max_connections_per_address: Option<usize>,
    /// On SIGTERM/SIGINT, how long requests already received may take to be
    /// answered before the server exits anyway.
    pub drain_timeout_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            host: "0.0.0.0".into(),
            port: 9090,
            max_connections: 64,
            max_request_bytes: 64 * 1024,
            idle_timeout_secs: 600,
            request_read_timeout_secs: 10,
            max_connections_per_address: None,
            drain_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceSection {
    /// Inference workers, each running one image at a time on its own thread
    /// pool; unset = cores / threads_per_worker.
    pub workers: Option<usize>,
    /// Threads each worker's kernels use; unset = cores / workers.
    pub threads_per_worker: Option<usize>,
    /// Images waiting for a worker, across all connections.
    pub queue_capacity: usize,
    /// Images waiting from one connection; also the largest 0x01 batch.
    /// Unset = the smaller of 256 and `queue_capacity`.
    pub max_queued_per_connection: Option<usize>,
    /// A request's images still waiting after this many seconds without any
    /// of them being answered get error_code 4.
    pub request_timeout_secs: u64,
    /// Largest `deadline_ms` a 0x01 may ask for; more is refused with error_code 1.
    pub max_deadline_ms: u64,
    /// How the inference threads yield to the rest of the server.
    pub scheduling: Scheduling,
}

/// The inference threads' Linux scheduling, against the connection threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// SCHED_IDLE: a core goes to any other thread that wants it, at once.
    Idle,
    /// nice 10: a smaller share of a busy core than a connection thread.
    Nice,
    /// As every other thread.
    Normal,
}

impl Default for InferenceSection {
    fn default() -> Self {
        InferenceSection {
            workers: None,
            threads_per_worker: None,
            queue_capacity: 1024,
            max_queued_per_connection: None,
            request_timeout_secs: 60,
            max_deadline_ms: 60_000,
            scheduling: Scheduling::Idle,
        }
    }
}

impl InferenceSection {
    pub fn per_connection(&self) -> usize {
        self.max_queued_per_connection.unwrap_or(self.queue_capacity.min(256))
    }

    /// (workers, threads per worker) for a machine with `cores` cores: what
    /// is unset is chosen so that workers x threads = cores. With neither
    /// set, one worker uses every core: the lowest latency per image, and on
    /// 2 cores also the highest throughput (README, "Benchmarks").
    pub fn thread_budget(&self, cores: usize) -> (usize, usize) {
        let cores = cores.max(1);
        match (self.workers, self.threads_per_worker) {
            (Some(w), Some(t)) => (w, t),
            (Some(w), None) => (w, (cores / w).max(1)),
            (None, Some(t)) => ((cores / t).max(1), t),
            (None, None) => (1, cores),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Folder of model bundles.
    pub dir: PathBuf,
    /// Bundle loaded at start (a file name inside `dir`).
    pub default: String,
    /// Minimum detector score for a fruit box; unset = the bundle's suggestion.
    pub confidence_threshold: Option<f32>,
    /// Folders 0x34 may switch the model folder to (and their subfolders); empty = `dir` only.
    pub allowed_roots: Vec<PathBuf>,
    /// Largest model 0x20 will download.
    pub download_max_bytes: u64,
    pub download_timeout_secs: u64,
    /// Hosts 0x20 may download from (and be redirected to), e.g.
    /// "models.example.com" or "10.0.0.5:8000"; empty = 0x20 refused.
    pub download_allowed_hosts: Vec<String>,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            dir: "weights".into(),
            default: "pear-default.safetensors".into(),
            confidence_threshold: None,
            allowed_roots: vec![],
            download_max_bytes: 512 * 1024 * 1024,
            download_timeout_secs: 300,
            download_allowed_hosts: vec![],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesSection {
    /// Folder that 0x01 file names are relative to.
    pub dir: PathBuf,
    /// Folders 0x30 may switch to (and their subfolders); empty = `dir` only.
    pub allowed_roots: Vec<PathBuf>,
    /// Largest image (width x height) decoded; checked from the header, before any pixel buffer.
    pub max_pixels: u64,
    /// Largest image file read.
    pub max_file_bytes: u64,
    /// An incomplete image still growing (the camera writing it) is read again
    /// after this many ms while it grows; 0 = answer incomplete at once.
    pub settle_ms: u64,
}

impl Default for ImagesSection {
    fn default() -> Self {
        let l = Limits::default();
        ImagesSection {
            dir: "samples".into(),
            allowed_roots: vec![],
            max_pixels: l.max_pixels,
            max_file_bytes: l.max_file_bytes,
            settle_ms: 0,
        }
    }
}

impl ImagesSection {
    pub fn limits(&self) -> Limits {
        Limits { max_pixels: self.max_pixels, max_file_bytes: self.max_file_bytes }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolSection {
    /// Add `label`, `confidence`, `bbox`, `detected` (and per-file `message`) to 0x01 entries.
    pub extended_results: bool,
}

/// The metrics and health HTTP listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// host:port for /metrics, /healthz, /readyz and the history API; unset = off.
    pub listen: Option<String>,
    /// `user:password` the history API asks for (HTTP basic auth). Required
    /// when `listen` is not a loopback address: the API shows judgements and
    /// image names. /metrics, /healthz and /readyz stay open for scrapers.
    pub credentials: Option<String>,
    /// A file holding `user:password` (one line), instead of `credentials`.
    pub credentials_file: Option<PathBuf>,
}

impl MetricsSection {
    /// True when `listen` can only be reached from this host.
    pub fn is_loopback(&self) -> bool {
        let Some(listen) = &self.listen else { return true };
        let host = listen.rsplit_once(':').map_or(listen.as_str(), |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// Knobs for tests and troubleshooting; off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugSection {
    /// Every image takes at least this long: a slow worker made by
    /// configuration, so tests of queueing do not depend on machine speed.
    pub min_inference_ms: u64,
    /// Save every inspected image here with its box and label drawn; unset = off.
    pub annotated_dir: Option<PathBuf>,
    /// Newest annotated images kept; older ones are deleted.
    pub annotated_keep: usize,
}

impl Default for DebugSection {
    fn default() -> Self {
        DebugSection { min_inference_ms: 0, annotated_dir: None, annotated_keep: 1000 }
    }
}

/// The inspection journal (SQLite): every answered image's record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSection {
    /// The database file; unset = no journal.
    pub path: Option<PathBuf>,
    /// Rows older than this are deleted.
    pub retention_days: u64,
    /// Rows kept at most (the oldest go first); 0 = no limit.
    pub max_rows: u64,
    /// Records waiting for the writer at most; beyond, they are dropped and counted.
    pub queue_rows: usize,
    /// A record is committed at most this long after it was queued.
    pub batch_ms: u64,
    /// Which images to keep a copy of, for relabelling.
    pub capture: Capture,
    /// `capture = "uncertain"`: classifier confidence below this (or no pear found).
    pub capture_below: f32,
    /// Bytes of captured images kept at most; the oldest go first.
    pub capture_max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capture {
    Off,
    Uncertain,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            path: None,
            retention_days: 90,
            max_rows: 10_000_000,
            queue_rows: 10_000,
            batch_ms: 200,
            capture: Capture::Off,
            capture_below: 0.6,
            capture_max_bytes: 1 << 30,
        }
    }
}

/// Grading a fruit from several views (0x01 with `fruit_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FruitSection {
    /// Views that must be judged (read, pear found) for a fruit to get a grade.
    pub min_views_judged: usize,
}

impl Default for FruitSection {
    fn default() -> Self {
        FruitSection { min_views_judged: 1 }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub inference: InferenceSection,
    pub model: ModelSection,
    pub images: ImagesSection,
    pub protocol: ProtocolSection,
    pub fruit: FruitSection,
    pub journal: JournalSection,
    pub metrics: MetricsSection,
    pub debug: DebugSection,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, &base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
            other => other,
        })
    }

    /// Parses and validates; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        let abs = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        c.model.dir = abs(&c.model.dir);
        c.images.dir = abs(&c.images.dir);
        c.model.allowed_roots = c.model.allowed_roots.iter().map(|p| abs(p)).collect();
        c.images.allowed_roots = c.images.allowed_roots.iter().map(|p| abs(p)).collect();
        c.debug.annotated_dir = c.debug.annotated_dir.as_deref().map(abs);
        c.journal.path = c.journal.path.as_deref().map(abs);
        if let Some(f) = c.metrics.credentials_file.as_deref().map(abs) {
            let text = std::fs::read_to_string(&f).map_err(|e| ConfigError::Invalid {
                key: "metrics.credentials_file",
                problem: format!("cannot read {}: {e}", f.display()),
            })?;
            c.metrics.credentials = Some(text.trim().to_string());
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_string() });
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if self.server.max_request_bytes < 64 {
            return invalid("server.max_request_bytes", "must be at least 64");
        }
        if self.server.idle_timeout_secs == 0 {
            return invalid("server.idle_timeout_secs", "must be at least 1");
        }
        if self.inference.workers.is_some_and(|w| w == 0 || w > 256) {
            return invalid("inference.workers", "must be between 1 and 256");
        }
        if self.inference.threads_per_worker.is_some_and(|t| t == 0 || t > 256) {
            return invalid("inference.threads_per_worker", "must be between 1 and 256");
        }
        if self.inference.queue_capacity == 0 {
            return invalid("inference.queue_capacity", "must be at least 1");
        }
        if self.inference.max_queued_per_connection.is_some_and(|n| n == 0 || n > self.inference.queue_capacity) {
            return invalid("inference.max_queued_per_connection", "must be between 1 and inference.queue_capacity");
        }
        if self.debug.annotated_keep == 0 {
            return invalid("debug.annotated_keep", "must be at least 1");
        }
        if self.server.request_read_timeout_secs == 0 {
            return invalid("server.request_read_timeout_secs", "must be at least 1");
        }
        if self.server.max_connections_per_address == Some(0) {
            return invalid("server.max_connections_per_address", "must be at least 1");
        }
        if self.inference.request_timeout_secs == 0 {
            return invalid("inference.request_timeout_secs", "must be at least 1");
        }
        if !(1..=u64::from(u32::MAX)).contains(&self.inference.max_deadline_ms) {
            return invalid("inference.max_deadline_ms", "must be between 1 and 4294967295");
        }
        if let Some(cred) = &self.metrics.credentials {
            if !cred.split_once(':').is_some_and(|(u, p)| !u.is_empty() && !p.is_empty()) {
                return invalid("metrics.credentials", "must be user:password, both non-empty");
            }
        }
        if !self.metrics.is_loopback() && self.metrics.credentials.is_none() {
            return invalid(
                "metrics.credentials",
                "metrics.listen is not a loopback address, and the history API shows what was judged: set metrics.credentials or metrics.credentials_file (user:password)",
            );
        }
        if self.journal.retention_days == 0 {
            return invalid("journal.retention_days", "must be at least 1");
        }
        if self.journal.queue_rows == 0 {
            return invalid("journal.queue_rows", "must be at least 1");
        }
        if !(1..=1000).contains(&self.journal.batch_ms) {
            return invalid("journal.batch_ms", "must be between 1 and 1000");
        }
        if self.journal.capture != Capture::Off && self.journal.path.is_none() {
            return invalid("journal.capture", "needs journal.path: a captured image is named by its journal record");
        }
        if !(0.0..=1.0).contains(&self.journal.capture_below) {
            return invalid("journal.capture_below", "must be between 0 and 1 (a classifier confidence)");
        }
        if self.journal.capture_max_bytes == 0 {
            return invalid("journal.capture_max_bytes", "must be at least 1");
        }
        if self.fruit.min_views_judged == 0 {
            return invalid("fruit.min_views_judged", "must be at least 1");
        }
        if self.images.max_pixels == 0 {
            return invalid("images.max_pixels", "must be at least 1");
        }
        if self.images.settle_ms > 5000 {
            return invalid("images.settle_ms", "must be at most 5000 (a worker waits that long per read)");
        }
        if self.images.max_file_bytes == 0 {
            return invalid("images.max_file_bytes", "must be at least 1");
        }
        if let Some(t) = self.model.confidence_threshold {
            if !(0.0..=1.0).contains(&t) {
                return invalid("model.confidence_threshold", "must be between 0 and 1");
            }
        }
        if self.model.default.is_empty() {
            return invalid("model.default", "must name a model file in model.dir");
        }
        if !self.model.dir.is_dir() {
            return Err(ConfigError::Invalid { key: "model.dir", problem: format!("{} is not a folder", self.model.dir.display()) });
        }
        if !self.images.dir.is_dir() {
            return Err(ConfigError::Invalid { key: "images.dir", problem: format!("{} is not a folder", self.images.dir.display()) });
        }
        for (key, roots) in [("model.allowed_roots", &self.model.allowed_roots), ("images.allowed_roots", &self.images.allowed_roots)] {
            if let Some(r) = roots.iter().find(|r| !r.is_dir()) {
                return Err(ConfigError::Invalid { key, problem: format!("{} is not a folder", r.display()) });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_bad_key() {
        let tmp = std::env::temp_dir();
        let e = Config::from_toml("[server]\nport = \"x\"\n", &tmp).unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        let e = Config::from_toml("[inference]\nworkers = 0\n", &tmp).unwrap_err().to_string();
        assert!(e.contains("inference.workers"), "{e}");
        let e = Config::from_toml("[inference]\nthreads_per_worker = 0\n", &tmp).unwrap_err().to_string();
        assert!(e.contains("inference.threads_per_worker"), "{e}");
        let e = Config::from_toml("[metrics]\nlisten = \"0.0.0.0:9091\"\n", &tmp).unwrap_err().to_string();
        assert!(e.contains("metrics.credentials"), "{e}");
        let e = Config::from_toml("[metrics]\nlisten = \"[::]:9091\"\ncredentials = \"nopassword\"\n", &tmp).unwrap_err().to_string();
        assert!(e.contains("user:password"), "{e}");
        for ok in ["127.0.0.1:9091", "localhost:1", "[::1]:9091"] {
            assert!(MetricsSection { listen: Some(ok.into()), ..Default::default() }.is_loopback(), "{ok}");
        }
        let e = Config::from_toml("[fruit]\nmin_views_judged = 0\n", &tmp).unwrap_err().to_string();
        assert!(e.contains("fruit.min_views_judged"), "{e}");
        let e = Config::from_toml("[server]\nbogus = 1\n", &tmp).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn thread_budget_fills_the_cores() {
        let budget = |w: Option<usize>, t: Option<usize>, cores| {
            InferenceSection { workers: w, threads_per_worker: t, ..Default::default() }.thread_budget(cores)
        };
        assert_eq!(budget(None, None, 8), (1, 8));
        assert_eq!(budget(Some(2), None, 8), (2, 4));
        assert_eq!(budget(None, Some(2), 8), (4, 2));
        assert_eq!(budget(Some(3), Some(3), 2), (3, 3), "explicit values are kept");
        assert_eq!(budget(Some(4), None, 2), (4, 1));
        assert_eq!(budget(None, None, 0), (1, 1));
    }
}
