//! One connection: a reader loop (this thread) and a writer thread.
//!
//! The reader frames and dispatches requests as they arrive, so a client can
//! pipeline requests and a 0x03 is seen while an earlier 0x01 is still being
//! inferred. Replies go through a bounded channel to the writer, which writes
//! them strictly in request order (waiting for a batch's images when needed).
//! A panic in a handler becomes an error_code 3 answer; the connection and the
//! server go on.

use crate::commands::{classify, dispatch, Conn, Reply};
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
        Peer { stream, peer, shared, cancel: CancelRegistry::default(), outstanding: Arc::new(AtomicUsize::new(0)) }
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
        let (peer, outstanding) = (self.peer.clone(), self.outstanding.clone());
        let writer = std::thread::Builder::new()
            .name(format!("write-{}", self.peer))
            .spawn(move || write_loop(writer, rx, &peer, &outstanding));
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
        let mut stream = &self.stream;
        let _ = stream.set_read_timeout(Some(idle));
        let mut framer = Framer::new(cfg.max_request_bytes);
        let mut buf = vec![0u8; 16 * 1024];
        let mut last_activity = Instant::now();
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => {
                    if let Some(Frame::Garbage { reason, .. }) = framer.finish() {
                        self.error(tx, reason.to_string());
                    }
                    return "client closed".into();
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    // Idle only counts while nothing is being worked on for this client.
                    if self.outstanding.load(Ordering::Acquire) > 0 || last_activity.elapsed() < idle {
                        continue;
                    }
                    return format!("idle for {} s", idle.as_secs());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return format!("read error: {e}"),
            };
            last_activity = Instant::now();
            framer.push(&buf[..n]);
            while let Some(frame) = framer.next_frame() {
                let ok = match frame {
                    Frame::Object(bytes) => self.handle(tx, &bytes),
                    Frame::Garbage { reason, .. } => self.error(tx, reason.to_string()),
                    Frame::TooLarge { limit } => {
                        self.error(tx, format!("request larger than {limit} bytes (server.max_request_bytes)"));
                        return "request too large".into();
                    }
                };
                if !ok {
                    return "write side closed".into();
                }
            }
        }
    }

    fn handle(&self, tx: &Sender<Pending>, bytes: &[u8]) -> bool {
        let started = Instant::now();
        let cmd = match parse_request(bytes) {
            Ok(c) => c,
            Err(e) => return self.error(tx, e.0),
        };
        let code = cmd.code();
        let conn = Conn { shared: &self.shared, cancel: &self.cancel, peer: &self.peer };
        let reply = catch_unwind(AssertUnwindSafe(|| dispatch(cmd, &conn))).unwrap_or_else(|_| {
            log::error!("{}: handler for 0x{code:02x} panicked", self.peer);
            Reply::Ready(Response::error(ErrorCode::Internal, format!("internal error while handling 0x{code:02x}")))
        });
        self.send(tx, reply, Some(code), started)
    }
}

fn write_loop(mut stream: TcpStream, rx: Receiver<Pending>, peer: &str, outstanding: &AtomicUsize) {
    let mut broken = false;
    for p in rx {
        let detail;
        let response = match p.reply {
            Reply::Ready(r) => {
                detail = String::new();
                r
            }
            Reply::Batch { batch, extended } => {
                let (files, outcomes) = batch.wait();
                detail = format!(" files={}", files.len());
                classify::respond(files, outcomes, extended)
            }
        };
        if !broken {
            if let Err(e) = stream.write_all(&response.to_bytes()) {
                log::info!("{peer}: cannot write response: {e}");
                broken = true;
                // Unblock the reader: the client is gone.
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        outstanding.fetch_sub(1, Ordering::AcqRel);
        let cmd = p.cmd.map(|c| format!("0x{c:02x}")).unwrap_or_else(|| "invalid".into());
        log::info!("{peer}: {cmd}{detail} answered in {:.1} ms", p.started.elapsed().as_secs_f64() * 1e3);
    }
}
