//! One connection: a reader loop (this thread) and a writer thread.
//!
//! The reader frames and dispatches requests as they arrive, so a client can
//! pipeline requests and a 0x03 is seen while an earlier 0x01 is still being
//! inferred. Replies go through a bounded channel to the writer, which writes
//! them strictly in request order (waiting for a batch's images when needed).
//! A panic in a handler becomes an error_code 3 answer; the connection and the
//! server go on.
//!
//! A reset connection, or one whose answer cannot be written, has its queued
//! images cancelled; a plain end of input (`nc -q`, `nc -N`) is a half-close
//! and still gets every answer.

use crate::commands::{self, Conn, Reply};
use crate::inference::CancelRegistry;
use crate::protocol::{parse_request, ErrorCode, Frame, Framer, Response};
use crate::state::Shared;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Replies waiting to be written, at most; beyond it the reader waits (TCP back-pressure).
const PIPELINE_DEPTH: usize = 64;

/// How often a reader with nothing to read checks its deadlines and the shutdown signal.
const TICK: Duration = Duration::from_millis(200);

struct Pending {
    reply: Reply,
    cmd: Option<u8>,
    started: Instant,
}

pub struct Peer {
    stream: TcpStream,
    peer: String,
    shared: Arc<Shared>,
    cancel: CancelRegistry,
    outstanding: Arc<AtomicUsize>,
}

impl Peer {
    pub fn new(stream: TcpStream, peer: String, shared: Arc<Shared>) -> Self {
        let cancel = CancelRegistry::new(shared.connection_id());
        Peer { stream, peer, shared, cancel, outstanding: Arc::new(AtomicUsize::new(0)) }
    }

    pub fn run(self) {
        log::info!("{}: connected", self.peer);
        let opened = Instant::now();
        let (tx, rx) = bounded::<Pending>(PIPELINE_DEPTH);
        let _ = self.stream.set_nodelay(true);
        // A client that stops reading must not pin this connection forever.
        let _ = self.stream.set_write_timeout(Some(Duration::from_secs(self.shared.config.server.idle_timeout_secs)));
        let writer = match self.stream.try_clone() {
            Ok(w) => w,
            Err(e) => {
                log::error!("{}: cannot clone socket: {e}", self.peer);
                return;
            }
        };
        let (peer, outstanding, cancel, shared) = (self.peer.clone(), self.outstanding.clone(), self.cancel.clone(), self.shared.clone());
        let writer = std::thread::Builder::new().name(format!("write-{}", self.peer)).spawn(move || {
            let on_broken = || {
                let n = cancel.cancel_all(&shared.pool);
                if n > 0 {
                    log::info!("{peer}: cancelled {n} queued image(s): answers cannot be written");
                }
            };
            write_loop(writer, rx, &peer, &shared, &outstanding, on_broken)
        });
        let writer = match writer {
            Ok(h) => h,
            Err(e) => {
                log::error!("{}: cannot start writer thread: {e}", self.peer);
                return;
            }
        };
        let reason = self.read_loop(&tx);
        drop(tx); // the writer drains what is queued, then ends
        let _ = writer.join();
        let _ = self.stream.shutdown(Shutdown::Both);
        log::info!("{}: closed ({reason}) after {:.1} s", self.peer, opened.elapsed().as_secs_f64());
    }

    fn send(&self, tx: &Sender<Pending>, reply: Reply, cmd: Option<u8>, started: Instant) -> bool {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        tx.send(Pending { reply, cmd, started }).is_ok()
    }

    fn error(&self, tx: &Sender<Pending>, message: String) -> bool {
        log::warn!("{}: invalid request: {message}", self.peer);
        self.send(tx, Reply::Ready(Response::error(ErrorCode::InvalidMessage, message)), None, Instant::now())
    }

    /// Returns why the connection ended.
    fn read_loop(&self, tx: &Sender<Pending>) -> String {
        let cfg = &self.shared.config.server;
        let idle = Duration::from_secs(cfg.idle_timeout_secs);
        let request_limit = Duration::from_secs(cfg.request_read_timeout_secs);
        let mut stream = &self.stream;
        let _ = stream.set_read_timeout(Some(TICK));
        let mut framer = Framer::new(cfg.max_request_bytes);
        let mut buf = vec![0u8; 16 * 1024];
        // Idle time runs from the last complete request (or the last answer
        // still being worked on), so trickling bytes does not keep a connection
        // open; an unfinished request has its own deadline.
        let mut last_request = Instant::now();
        let mut request_started: Option<Instant> = None;
        loop {
            if self.outstanding.load(Ordering::Acquire) > 0 {
                last_request = Instant::now();
            }
            if self.shared.shutdown.is_draining() {
                self.read_what_arrived(&mut framer, &mut buf, tx);
                return "server draining".into();
            }
            let n = match stream.read(&mut buf) {
                Ok(0) => {
                    if let Some(Frame::Garbage { reason, .. }) = framer.finish() {
                        self.error(tx, reason.to_string());
                    }
                    return "client closed".into();
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if let Some(reason) = self.idle(request_started, last_request, idle) {
                        return reason;
                    }
                    if let Some(reason) = self.too_slow(request_started, request_limit, tx) {
                        return reason;
                    }
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A reset client will never read its answers: stop working for it.
                    let n = self.cancel.cancel_all(&self.shared.pool);
                    if n > 0 {
                        log::info!("{}: cancelled {n} queued image(s) of a broken connection", self.peer);
                    }
                    return format!("read error: {e}");
                }
            };
            if request_started.is_none() {
                request_started = Some(Instant::now());
            }
            framer.push(&buf[..n]);
            let completed = match self.frames(&mut framer, tx) {
                Ok(c) => c,
                Err(reason) => return reason,
            };
            if completed {
                last_request = Instant::now();
            }
            // What is left, if anything, is the start of the next request.
            request_started = match (framer.has_partial(), completed) {
                (false, _) => None,
                (true, true) => Some(Instant::now()),
                (true, false) => request_started,
            };
            // Checked after every read too: a byte every tick must not dodge them.
            if let Some(reason) = self.idle(request_started, last_request, idle) {
                return reason;
            }
            if let Some(reason) = self.too_slow(request_started, request_limit, tx) {
                return reason;
            }
        }
    }

    /// No request begun and none complete (nor answered) for `idle`.
    fn idle(&self, request_started: Option<Instant>, last_request: Instant, idle: Duration) -> Option<String> {
        (request_started.is_none() && last_request.elapsed() >= idle).then(|| format!("idle for {} s", idle.as_secs()))
    }

    /// A request still unfinished `limit` after its first byte: refused, and
    /// the connection ends (why is returned).
    fn too_slow(&self, started: Option<Instant>, limit: Duration, tx: &Sender<Pending>) -> Option<String> {
        if started?.elapsed() < limit {
            return None;
        }
        self.error(tx, format!("request not complete {} s after its first byte (server.request_read_timeout_secs)", limit.as_secs()));
        Some("request too slow".into())
    }

    /// Handles every complete frame; Ok(true) if there was at least one,
    /// Err(why) when the connection must end.
    fn frames(&self, framer: &mut Framer, tx: &Sender<Pending>) -> Result<bool, String> {
        let mut any = false;
        while let Some(frame) = framer.next_frame() {
            any = true;
            let ok = match frame {
                Frame::Object(bytes) => self.handle(tx, &bytes),
                Frame::Garbage { reason, .. } => self.error(tx, reason.to_string()),
                Frame::TooLarge { limit } => {
                    self.error(tx, format!("request larger than {limit} bytes (server.max_request_bytes)"));
                    return Err("request too large".into());
                }
            };
            if !ok {
                return Err("write side closed".into());
            }
        }
        Ok(any)
    }

    /// Draining: handles the requests already in the socket's buffer, without
    /// waiting for more. (A 1 ms read timeout, not O_NONBLOCK: the flag would
    /// also make the writer's clone of this socket non-blocking mid-answer.)
    fn read_what_arrived(&self, framer: &mut Framer, buf: &mut [u8], tx: &Sender<Pending>) {
        let mut stream = &self.stream;
        if stream.set_read_timeout(Some(Duration::from_millis(1))).is_err() {
            return;
        }
        while let Ok(n) = stream.read(buf) {
            if n == 0 {
                break;
            }
            framer.push(&buf[..n]);
            if self.frames(framer, tx).is_err() {
                break;
            }
        }
    }

    fn handle(&self, tx: &Sender<Pending>, bytes: &[u8]) -> bool {
        let started = Instant::now();
        let (cmd, code) = match parse_request(bytes).and_then(|req| Ok((commands::parse(&req)?, req.code as u8))) {
            Ok(c) => c,
            Err(e) => return self.error(tx, e.0),
        };
        let conn = Conn { shared: &self.shared, cancel: &self.cancel, peer: &self.peer };
        let reply = catch_unwind(AssertUnwindSafe(|| cmd.apply(&conn))).unwrap_or_else(|_| {
            log::error!("{}: handler for 0x{code:02x} panicked", self.peer);
            Reply::Ready(Response::error(ErrorCode::Internal, format!("internal error while handling 0x{code:02x}")))
        });
        self.send(tx, reply, Some(code), started)
    }
}

fn write_loop(mut stream: TcpStream, rx: Receiver<Pending>, peer: &str, shared: &Shared, outstanding: &AtomicUsize, on_broken: impl Fn()) {
    let mut broken = false;
    for p in rx {
        let accepted = p.reply.accepted_images();
        let (response, detail) = p.reply.finish();
        if !broken {
            if let Err(e) = stream.write_all(&response.to_bytes()) {
                log::info!("{peer}: cannot write response: {e}");
                broken = true;
                on_broken();
                // Unblock the reader: the client is gone.
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        outstanding.fetch_sub(1, Ordering::AcqRel);
        let cmd = p.cmd.map(|c| format!("0x{c:02x}")).unwrap_or_else(|| "invalid".into());
        let m = &shared.metrics;
        m.images_in_flight.dec_by(accepted as i64);
        if response.cmd == Some(0x02) {
            for e in &response.response_data {
                m.image(e.error_code as u8, e.result);
            }
        }
        let ok = response.cmd.is_some() && response.response_data.iter().all(|e| e.error_code as u8 == 0);
        m.request(&cmd, ok, p.started.elapsed());
        log::info!("{peer}: {cmd}{detail} answered in {:.1} ms", p.started.elapsed().as_secs_f64() * 1e3);
    }
}
