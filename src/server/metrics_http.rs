//! The metrics and health listener (`[metrics] listen`), off the wire
//! protocol so existing clients never see it. A small blocking HTTP server
//! (tiny_http) on its own thread:
//!
//! - `/metrics`: Prometheus/OpenMetrics text (`crate::metrics`);
//! - `/healthz`: 200 while the process serves;
//! - `/readyz`: 200 when a model is loaded and the server is not draining,
//!   503 while draining, so a balancer stops sending before a restart;
//! - `/`: the dashboard (`dashboard.rs`); `/api/status`, `/api/inspections`,
//!   `/api/summary`: the journal's history (`api.rs`), and
//!   `/api/inspections/{id}/image` (`thumbnail.rs`),
//!   behind HTTP basic auth when `metrics.credentials` is set (required for a
//!   listener that is not on loopback).

use super::{api, dashboard, thumbnail};
use crate::shutdown::Shutdown;
use crate::state::State;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tiny_http::{Header, Response, Server};

/// Binds `addr` and serves from a thread of its own; gives the bound address.
pub fn start(addr: &str, state: Arc<State>, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let server = Server::http(addr).map_err(|e| std::io::Error::other(format!("cannot listen on {addr}: {e}")))?;
    let bound = server.server_addr().to_ip().ok_or_else(|| std::io::Error::other(format!("{addr} is not an IP address")))?;
    let expected = state.config.metrics.credentials.as_deref().map(|c| format!("Basic {}", base64(c.as_bytes())));
    let expected: Arc<Option<String>> = Arc::new(expected);
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for req in server.incoming_requests() {
            // Each request on a thread of its own: a client that stops reading
            // (a browser's lingering helper, a stuck scraper) must not hold up
            // /metrics or /readyz for everyone else. At most MAX_BUSY at once;
            // beyond, the request is dropped (tiny_http closes it).
            if busy.load(Ordering::Acquire) >= MAX_BUSY {
                log::warn!("metrics listener: {MAX_BUSY} requests in progress; dropping one");
                continue;
            }
            let (state, shutdown, expected, guard) = (state.clone(), shutdown.clone(), expected.clone(), Busy::new(&busy));
            let spawned = std::thread::Builder::new().name("http".into()).spawn(move || {
                let _guard = guard;
                serve(req, &state, &shutdown, expected.as_deref());
            });
            if let Err(e) = spawned {
                log::warn!("metrics listener: cannot start a thread: {e}");
            }
        }
    })?;
    Ok(bound)
}

/// Requests served at once, at most.
const MAX_BUSY: usize = 32;

/// One request in progress, counted until dropped.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(n: &Arc<AtomicUsize>) -> Busy {
        n.fetch_add(1, Ordering::AcqRel);
        Busy(n.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn serve(req: tiny_http::Request, state: &State, shutdown: &Shutdown, expected: Option<&str>) {
    let (path, query) = req.url().split_once('?').unwrap_or((req.url(), ""));
    let (path, query) = (path.to_string(), query.to_string());
    let resp = match path.as_str() {
        "/metrics" => {
            state.metrics.queue_depth.set(state.pool.queued() as i64);
            let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            text(200, state.metrics.encode(), ct)
        }
        "/healthz" => text(200, "ok\n".into(), "text/plain"),
        "/readyz" if shutdown.is_draining() => text(503, "draining\n".into(), "text/plain"),
        "/readyz" => text(200, format!("ready: {}\n", state.models.active().name), "text/plain"),
        p if (p == "/" || p.starts_with("/api/")) && !authorized(&req, expected) => {
            let mut r = text(401, "{\"error\": \"credentials required (metrics.credentials)\"}".into(), "application/json");
            if let Ok(h) = Header::from_bytes("WWW-Authenticate", "Basic realm=\"pear-server\"") {
                r.add_header(h);
            }
            r
        }
        "/" => text(200, dashboard::PAGE.into(), "text/html; charset=utf-8"),
        p if p.starts_with("/api/inspections/") && p.ends_with("/image") => image(state, p),
        p if p.starts_with("/api/") => {
            let (status, body) = api::answer(state, p, &query);
            text(status, body.to_string(), "application/json")
        }
        _ => {
            text(404, "not found: try /, /metrics, /healthz, /readyz, /api/status, /api/inspections or /api/summary\n".into(), "text/plain")
        }
    };
    if let Err(e) = req.respond(resp) {
        log::debug!("metrics: cannot answer: {e}");
    }
}

/// `/api/inspections/{id}/image`: the id is the only thing taken from the path.
fn image(state: &State, path: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let id = path.trim_start_matches("/api/inspections/").trim_end_matches("/image");
    let Ok(id) = id.parse::<i64>() else { return text(400, format!("{{\"error\": \"'{id}' is not a record id\"}}"), "application/json") };
    let Some(journal) = state.config.journal.path.as_deref() else {
        return text(404, "{\"error\": \"the journal is off\"}".into(), "application/json");
    };
    match thumbnail::thumbnail(state, journal, id) {
        Ok(jpeg) => {
            let mut r = Response::from_data(jpeg);
            for (k, v) in [("Content-Type", "image/jpeg"), ("Cache-Control", "max-age=3600")] {
                if let Ok(h) = Header::from_bytes(k, v) {
                    r.add_header(h);
                }
            }
            r
        }
        Err((status, why)) => text(status, serde_json::json!({ "error": why }).to_string(), "application/json"),
    }
}

/// The request carries the configured credentials (or none are configured).
fn authorized(req: &tiny_http::Request, expected: Option<&str>) -> bool {
    let Some(expected) = expected else { return true };
    let given = req.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.as_str()).unwrap_or("");
    // Compared in full whatever the first difference, so timing says nothing.
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

fn text(status: u16, body: String, content_type: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut r = Response::from_string(body).with_status_code(status);
    if let Ok(h) = Header::from_bytes("Content-Type", content_type) {
        r.add_header(h);
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_as_rfc_4648() {
        for (raw, enc) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ==")]
        {
            assert_eq!(super::base64(raw.as_bytes()), enc);
        }
    }
}
