//! The little HTTP/1.1 the metrics listener needs: GET and HEAD, one request
//! per connection (`Connection: close`), each connection on a thread of its
//! own, at most `MAX_OPEN` at once.
//!
//! Why not a crate's pool: a browser keeps idle connections open and opens
//! spare ones it may never use. tiny_http parked each on one of a few pool
//! threads and, past them, left new connections queued until one of the
//! old ones closed, so the dashboard stalled in headless Chromium. Here no
//! connection waits for another; an idle one is dropped after `READ_TIMEOUT`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once, at most; beyond, answered 503 at once.
const MAX_OPEN: usize = 64;
/// A request's head must arrive within this, or the connection is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer must be taken within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head_only: bool,
    /// The path, not decoded (`/api/inspections`).
    pub path: String,
    /// After the `?`, not decoded; empty when none.
    pub query: String,
    /// The `Authorization` header's value.
    pub authorization: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![("Content-Type", content_type.to_string())], body: body.into() }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Response {
        self.headers.push((name, value.to_string()));
        self
    }

    /// The bytes on the wire (no body for HEAD).
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", self.body.len()));
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Parses a request head (up to and without the blank line). Pure: bytes in, a request or the answer to give out.
pub fn parse_head(head: &[u8]) -> Result<Request, Response> {
    let bad = |why: &str| Response::new(400, "text/plain", format!("bad request: {why}\n"));
    let text = std::str::from_utf8(head).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("the request line is not 'METHOD /path HTTP/1.x'"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("only HTTP/1.x is spoken here"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Response::new(405, "text/plain", "only GET and HEAD\n").with_header("Allow", "GET, HEAD")),
    };
    if !target.starts_with('/') {
        return Err(bad("the target must be a path"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut authorization = None;
    for h in lines {
        let Some((name, value)) = h.split_once(':') else { return Err(bad("a header without ':'")) };
        if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.trim().to_string());
        }
    }
    Ok(Request { head_only, path: path.into(), query: query.into(), authorization })
}

/// Reads up to the blank line that ends the head; `None` when the peer gave up first.
fn read_head(stream: &mut TcpStream) -> Result<Option<Vec<u8>>, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Err(Response::new(431, "text/plain", "request head too large\n"));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One connection: one request, one answer, closed.
fn connection(mut stream: TcpStream, handle: &(dyn Fn(&Request) -> Response + Sync)) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let (resp, head_only) = match read_head(&mut stream).and_then(|h| h.map(|h| parse_head(&h)).transpose()) {
        Ok(None) => return,
        Ok(Some(req)) => (handle(&req), req.head_only),
        Err(resp) => (resp, false),
    };
    if let Err(e) = stream.write_all(&resp.encode(head_only)).and_then(|()| stream.flush()) {
        log::debug!("http: cannot answer: {e}");
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// One connection open, counted until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Binds `addr` and serves `handle` from a thread of its own; gives the bound address.
pub fn serve<H>(addr: &str, name: &str, handle: H) -> std::io::Result<SocketAddr>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let listener = TcpListener::bind(addr).map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let handle = Arc::new(handle);
    let open = Arc::new(AtomicUsize::new(0));
    let name = name.to_string();
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        for stream in listener.incoming() {
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors, say: wait a little instead of spinning on accept.
                    log::debug!("{name}: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if open.fetch_add(1, Ordering::AcqRel) >= MAX_OPEN {
                open.fetch_sub(1, Ordering::AcqRel);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = stream.write_all(&Response::new(503, "text/plain", "too many connections\n").encode(false));
                continue;
            }
            let (guard, handle) = (Open(open.clone()), handle.clone());
            let spawned = std::thread::Builder::new().name(format!("{name}-conn")).spawn(move || {
                let _guard = guard;
                connection(stream, &*handle);
            });
            if let Err(e) = spawned {
                log::warn!("{name}: cannot start a thread: {e}");
            }
        }
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let r = parse_head(b"GET /api/inspections?limit=2 HTTP/1.1\r\nHost: x\r\nauthorization: Basic YTpi").unwrap();
        assert_eq!(
            r,
            Request {
                head_only: false,
                path: "/api/inspections".into(),
                query: "limit=2".into(),
                authorization: Some("Basic YTpi".into())
            }
        );
        assert!(parse_head(b"HEAD / HTTP/1.0").unwrap().head_only);
        assert_eq!(parse_head(b"POST / HTTP/1.1").unwrap_err().status, 405);
        for bad in [&b"GET /"[..], b"GET / HTTP/2", b"GET http://x/ HTTP/1.1", b"GET / HTTP/1.1\r\nno colon", b"\xff"] {
            assert_eq!(parse_head(bad).unwrap_err().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn answers_close_and_head_has_no_body() {
        let r = Response::new(200, "text/plain", "ok\n");
        assert_eq!(r.encode(false), b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
        assert!(r.encode(true).ends_with(b"\r\n\r\n"));
    }
}
