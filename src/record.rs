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

/// `2026-12-02 04:06:04.550`, UTC, from ms since 1970 (the journal's times
/// as people read them: `pear-client history`, captured images' folders).
pub fn utc_text(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{milli:03}", rest / 3600, rest / 60 % 60, rest % 60)
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

#[cfg(test)]
mod tests {
    use super::utc_text;

    #[test]
    fn utc_times() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc_text(1_796_184_364_550), "2026-12-02 04:06:04.550");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(utc_text(951_868_800_000 - 1), "2000-02-29 23:59:59.999");
        assert_eq!(utc_text(-1), "1969-12-31 23:59:59.999");
    }
}
