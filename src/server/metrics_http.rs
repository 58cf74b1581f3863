//! The metrics and health listener (`[metrics] listen`), off the wire
//! protocol so existing clients never see it, over the small HTTP of
//! `http.rs` (a thread per connection):
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

use super::http::{self, Request, Response};
use super::{api, dashboard, thumbnail};
use crate::shutdown::Shutdown;
use crate::state::State;
use std::net::SocketAddr;
use std::sync::Arc;

/// Binds `addr` and serves from a thread of its own; gives the bound address.
pub fn start(addr: &str, state: Arc<State>, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let expected = state.config.metrics.credentials.as_deref().map(|c| format!("Basic {}", base64(c.as_bytes())));
    http::serve(addr, "metrics", move |req| serve(req, &state, &shutdown, expected.as_deref()))
}

fn serve(req: &Request, state: &State, shutdown: &Shutdown, expected: Option<&str>) -> Response {
    match req.path.as_str() {
        "/metrics" => {
            state.metrics.queue_depth.set(state.pool.queued() as i64);
            Response::new(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", state.metrics.encode())
        }
        "/healthz" => Response::new(200, "text/plain", "ok\n"),
        "/readyz" if shutdown.is_draining() => Response::new(503, "text/plain", "draining\n"),
        "/readyz" => Response::new(200, "text/plain", format!("ready: {}\n", state.models.active().name)),
        p if (p == "/" || p.starts_with("/api/")) && !authorized(req, expected) => {
            json(401, "{\"error\": \"credentials required (metrics.credentials)\"}".into())
                .with_header("WWW-Authenticate", "Basic realm=\"pear-server\"")
        }
        "/" => Response::new(200, "text/html; charset=utf-8", dashboard::PAGE),
        p if p.starts_with("/api/inspections/") && p.ends_with("/image") => image(state, p),
        p if p.starts_with("/api/") => {
            let (status, body) = api::answer(state, p, &req.query);
            json(status, body.to_string())
        }
        _ => Response::new(
            404,
            "text/plain",
            "not found: try /, /metrics, /healthz, /readyz, /api/status, /api/inspections or /api/summary\n",
        ),
    }
}

fn json(status: u16, body: String) -> Response {
    Response::new(status, "application/json", body)
}

/// `/api/inspections/{id}/image`: the id is the only thing taken from the path.
fn image(state: &State, path: &str) -> Response {
    let id = path.trim_start_matches("/api/inspections/").trim_end_matches("/image");
    let Ok(id) = id.parse::<i64>() else { return json(400, format!("{{\"error\": \"'{id}' is not a record id\"}}")) };
    let Some(journal) = state.config.journal.path.as_deref() else {
        return json(404, "{\"error\": \"the journal is off\"}".into());
    };
    match thumbnail::thumbnail(state, journal, id) {
        Ok(jpeg) => Response::new(200, "image/jpeg", jpeg).with_header("Cache-Control", "max-age=3600"),
        Err((status, why)) => json(status, serde_json::json!({ "error": why }).to_string()),
    }
}

/// The request carries the configured credentials (or none are configured).
fn authorized(req: &Request, expected: Option<&str>) -> bool {
    let Some(expected) = expected else { return true };
    let given = req.authorization.as_deref().unwrap_or("");
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
