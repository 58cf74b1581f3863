//! One record per answered image, made in one place (`classify.rs`, when
//! the answer is final) and consumed by everything downstream: the metrics,
//! and the journal with its history API. Nothing downstream reads the 0x02
//! response again.

use pear_protocol::ErrorCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the answer was final: UTC, ms since 1970.
    pub time_ms: i64,
    pub host: Arc<str>,
    /// The client's address.
    pub peer: Arc<str>,
    /// The request's sequence number, server-wide since start, and the image's place in it.
    pub request: u64,
    pub index: usize,
    pub image_dir: Arc<str>,
    /// The name the client sent.
    pub file: String,
    /// Size and SHA-256 (hex) of the bytes judged, when the file was read.
    pub image_bytes: Option<u64>,
    pub image_sha256: Option<String>,
    /// The model's file name and SHA-256 (hex, computed at load).
    pub model: Arc<str>,
    pub model_sha256: Arc<str>,
    /// The `result` the client got.
    pub result: Option<i64>,
    pub label: Option<String>,
    pub confidence: Option<f32>,
    pub bbox: Option<[f32; 4]>,
    /// A pear was found.
    pub detected: bool,
    pub error_code: ErrorCode,
    /// Why, for an error.
    pub message: Option<String>,
    /// Answered "deadline missed".
    pub missed_deadline: bool,
    /// The request's `fruit_id`, as JSON text.
    pub fruit_id: Option<String>,
    pub queue_wait: Option<Duration>,
    pub inference: Option<Duration>,
    /// From the request's arrival to this answer being final.
    pub answer: Duration,
}

/// What is the same for every image of one request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub host: Arc<str>,
    pub peer: Arc<str>,
    pub request: u64,
    pub image_dir: Arc<str>,
    pub model: Arc<str>,
    pub model_sha256: Arc<str>,
    pub fruit_id: Option<String>,
}

/// Now, in ms since 1970 (UTC).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// This machine's host name, once at start.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates when it fits.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
