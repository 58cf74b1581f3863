//! One connection: a reader loop (this thread) and a writer thread.
//!
//! The reader takes frames from its `Connection` and dispatches them as they
//! arrive, so a client can pipeline requests and a 0x03 is seen while an
//! earlier 0x01 is still being inferred. Replies go through a bounded channel
//! to the writer, which finishes each (waiting for a batch's images when
//! needed), records it, and writes it, strictly in request order. A panic in
//! a handler becomes an error_code 3 answer; the connection and the server
//! go on.
//!
//! A reset connection, or one whose answer cannot be written, has its queued
//! images cancelled; a plain end of input (`nc -q`, `nc -N`) is a half-close
//! and still gets every answer.

use super::connection::{Activity, Connection, Next};
use crate::commands::{self, Conn, Reply};
use crate::inference::CancelRegistry;
use crate::shutdown::Shutdown;
use crate::state::State;
use crossbeam_channel::{bounded, Receiver, Sender};
use pear_protocol::{parse_request, ErrorCode, Frame, Response};
use std::io::Write;
use std::net::{Shutdown as Side, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Replies waiting to be written, at most; beyond it the reader waits (TCP back-pressure).
const PIPELINE_DEPTH: usize = 64;

struct Pending {
    reply: Reply,
    /// "0x01" .. "0x34", or "invalid".
    command: String,
    started: Instant,
}

pub struct Peer {
    stream: TcpStream,
    peer: String,
    state: Arc<State>,
    shutdown: Shutdown,
    cancel: CancelRegistry,
    activity: Arc<Activity>,
}

/// Why a connection ended, for its closing log line.
type Ended = String;

impl Peer {
    pub fn new(stream: TcpStream, peer: String, state: Arc<State>, shutdown: Shutdown) -> Self {
        let cancel = CancelRegistry::new(state.pool.next_lane());
        Peer { stream, peer, state, shutdown, cancel, activity: Arc::default() }
    }

    pub fn run(self) {
        log::info!("{}: connected", self.peer);
        let opened = Instant::now();
        let cfg = &self.state.config.server;
        let _ = self.stream.set_nodelay(true);
        // A client that stops reading must not pin this connection forever.
        let _ = self.stream.set_write_timeout(Some(Duration::from_secs(cfg.idle_timeout_secs)));
        let (reader, writer, waker) = match (self.stream.try_clone(), self.stream.try_clone(), self.stream.try_clone()) {
            (Ok(r), Ok(w), Ok(k)) => (r, w, k),
            _ => {
                log::error!("{}: cannot clone socket", self.peer);
                return;
            }
        };
        let (tx, rx) = bounded::<Pending>(PIPELINE_DEPTH);
        let writer = {
            let (peer, activity, cancel, state) = (self.peer.clone(), self.activity.clone(), self.cancel.clone(), self.state.clone());
            std::thread::Builder::new()
                .name(format!("write-{}", self.peer))
                .spawn(move || write_loop(writer, rx, &peer, &state, &activity, &cancel))
        };
        let writer = match writer {
            Ok(h) => h,
            Err(e) => {
                log::error!("{}: cannot start writer thread: {e}", self.peer);
                return;
            }
        };
        // Draining: the read side is shut, so a blocked read returns; what
        // the client had already sent is still read, then end of stream.
        let wake = self.shutdown.on_begin(move || {
            let _ = waker.shutdown(Side::Read);
        });
        let idle = Duration::from_secs(cfg.idle_timeout_secs);
        let limit = Duration::from_secs(cfg.request_read_timeout_secs);
        let mut conn = Connection::new(reader, cfg.max_request_bytes, idle, limit, self.activity.clone());
        let reason = self.read_loop(&mut conn, &tx);
        drop(wake);
        drop(tx); // the writer drains what is queued, then ends
        let _ = writer.join();
        let _ = self.stream.shutdown(Side::Both);
        log::info!("{}: closed ({reason}) after {:.1} s", self.peer, opened.elapsed().as_secs_f64());
    }

    fn read_loop(&self, conn: &mut Connection, tx: &Sender<Pending>) -> Ended {
        loop {
            let sent = match conn.next() {
                Next::Frame(Frame::Object(bytes)) => self.handle(tx, &bytes),
                Next::Frame(Frame::Garbage { reason, .. }) => self.error(tx, reason.to_string()),
                Next::Frame(Frame::TooLarge { limit }) => {
                    self.error(tx, format!("request larger than {limit} bytes (server.max_request_bytes)"));
                    return "request too large".into();
                }
                Next::TooSlow(limit) => {
                    self.error(
                        tx,
                        format!("request not complete {} s after its first byte (server.request_read_timeout_secs)", limit.as_secs()),
                    );
                    return "request too slow".into();
                }
                Next::Idle(idle) => return format!("idle for {} s", idle.as_secs()),
                Next::Closed if self.shutdown.is_draining() => return "server draining".into(),
                Next::Closed => return "client closed".into(),
                Next::Broken(e) => {
                    // A reset client will never read its answers: stop working for it.
                    let n = self.cancel.cancel_all(&self.state.pool);
                    if n > 0 {
                        log::info!("{}: cancelled {n} queued image(s) of a broken connection", self.peer);
                    }
                    return format!("read error: {e}");
                }
            };
            if !sent {
                return "write side closed".into();
            }
        }
    }

    fn send(&self, tx: &Sender<Pending>, reply: Reply, command: String, started: Instant) -> bool {
        self.activity.request();
        let sent = tx.send(Pending { reply, command, started }).is_ok();
        if !sent {
            self.activity.answered();
        }
        sent
    }

    fn error(&self, tx: &Sender<Pending>, message: String) -> bool {
        log::warn!("{}: invalid request: {message}", self.peer);
        self.send(tx, Reply::Ready(Response::error(ErrorCode::InvalidMessage, message)), "invalid".into(), Instant::now())
    }

    fn handle(&self, tx: &Sender<Pending>, bytes: &[u8]) -> bool {
        let started = Instant::now();
        let (cmd, code) = match parse_request(bytes).and_then(|req| Ok((commands::parse(&req)?, req.code))) {
            Ok(c) => c,
            Err(e) => return self.error(tx, e.0),
        };
        let request = self.state.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = Conn { state: &self.state, cancel: &self.cancel, peer: &self.peer, received: started, request };
        let reply = catch_unwind(AssertUnwindSafe(|| cmd.apply(&conn))).unwrap_or_else(|_| {
            log::error!("{}: handler for 0x{code:02x} panicked", self.peer);
            Reply::Ready(Response::error(ErrorCode::Internal, format!("internal error while handling 0x{code:02x}")))
        });
        self.send(tx, reply, format!("0x{code:02x}"), started)
    }
}

/// Finishes each reply in order, records it, and writes it. The record comes
/// first, so a client that has read an answer finds it counted in /metrics.
fn write_loop(mut stream: TcpStream, rx: Receiver<Pending>, peer: &str, state: &State, activity: &Activity, cancel: &CancelRegistry) {
    let mut broken = false;
    for p in rx {
        let answer = p.reply.finish();
        let took = p.started.elapsed();
        state.metrics.answered(&p.command, &answer, took);
        if !broken {
            if let Err(e) = stream.write_all(&answer.response.to_bytes()) {
                log::info!("{peer}: cannot write response: {e}");
                broken = true;
                let n = cancel.cancel_all(&state.pool);
                if n > 0 {
                    log::info!("{peer}: cancelled {n} queued image(s): answers cannot be written");
                }
                // Unblock the reader: the client is gone.
                let _ = stream.shutdown(Side::Both);
            }
        }
        activity.answered();
        let files = if answer.images.is_empty() { String::new() } else { format!(" files={}", answer.images.len()) };
        log::info!("{peer}: {}{files} answered in {:.1} ms", p.command, took.as_secs_f64() * 1e3);
        if let (Some(j), false) = (&state.journal, answer.images.is_empty()) {
            j.append(answer.images);
        }
    }
}
