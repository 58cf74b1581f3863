//! The metrics and health listener (`[metrics] listen`), off the wire
//! protocol so existing clients never see it. A small blocking HTTP server
//! (tiny_http) on its own thread:
//!
//! - `/metrics`: Prometheus/OpenMetrics text (`crate::metrics`);
//! - `/healthz`: 200 while the process serves;
//! - `/readyz`: 200 when a model is loaded and the server is not draining,
//!   503 while draining, so a balancer stops sending before a restart;
//! - `/api/inspections`, `/api/summary`: the journal's history (`api.rs`),
//!   behind HTTP basic auth when `metrics.credentials` is set (required for a
//!   listener that is not on loopback).

use super::api;
use crate::shutdown::Shutdown;
use crate::state::State;
use std::net::SocketAddr;
use std::sync::Arc;
use tiny_http::{Header, Response, Server};

/// Binds `addr` and serves from a thread of its own; gives the bound address.
pub fn start(addr: &str, state: Arc<State>, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let server = Server::http(addr).map_err(|e| std::io::Error::other(format!("cannot listen on {addr}: {e}")))?;
    let bound = server.server_addr().to_ip().ok_or_else(|| std::io::Error::other(format!("{addr} is not an IP address")))?;
    let expected = state.config.metrics.credentials.as_deref().map(|c| format!("Basic {}", base64(c.as_bytes())));
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for req in server.incoming_requests() {
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
                p if p.starts_with("/api/") && !authorized(&req, expected.as_deref()) => {
                    let mut r = text(401, "{\"error\": \"credentials required (metrics.credentials)\"}".into(), "application/json");
                    if let Ok(h) = Header::from_bytes("WWW-Authenticate", "Basic realm=\"pear-server\"") {
                        r.add_header(h);
                    }
                    r
                }
                p if p.starts_with("/api/") => {
                    let (status, body) = api::answer(&state, p, &query);
                    text(status, body.to_string(), "application/json")
                }
                _ => text(404, "not found: try /metrics, /healthz, /readyz, /api/inspections or /api/summary\n".into(), "text/plain"),
            };
            if let Err(e) = req.respond(resp) {
                log::debug!("metrics: cannot answer: {e}");
            }
        }
    })?;
    Ok(bound)
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
