//! The metrics and health listener (`[metrics] listen`), off the wire
//! protocol so existing clients never see it. A small blocking HTTP server
//! (tiny_http) on its own thread:
//!
//! - `/metrics`: Prometheus/OpenMetrics text (`crate::metrics`);
//! - `/healthz`: 200 while the process serves;
//! - `/readyz`: 200 when a model is loaded and the server is not draining,
//!   503 while draining, so a balancer stops sending before a restart;
//! - `/api/inspections`, `/api/summary`: the journal's history (`api.rs`).

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

fn text(status: u16, body: String, content_type: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut r = Response::from_string(body).with_status_code(status);
    if let Ok(h) = Header::from_bytes("Content-Type", content_type) {
        r.add_header(h);
    }
    r
}
