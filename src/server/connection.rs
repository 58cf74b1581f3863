//! One client's socket, read side: bytes in, frames out, with the read
//! deadlines (mini-redis's `connection.rs`). The Peer only dispatches what
//! `next` gives.
//!
//! - A request must be complete `request_read_timeout_secs` after its first
//!   byte (slow senders cannot hold a place).
//! - Idle time runs from the last complete request or the last answer, and
//!   not while answers are pending, so trickling bytes does not keep a
//!   connection open and a long batch does not use it up.
//! - The socket's read timeout is set to the nearest of those deadlines, so
//!   nothing wakes between them; the shutdown signal ends a blocked read by
//!   shutting the read side, after which what the client had already sent is
//!   still read (then end of stream).

use pear_protocol::{Frame, Framer};
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the reader and the writer of one connection both see: answers not
/// yet written, and when the last one was.
#[derive(Debug)]
pub struct Activity {
    outstanding: AtomicUsize,
    last_answer: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity { outstanding: AtomicUsize::new(0), last_answer: Mutex::new(Instant::now()) }
    }
}

impl Activity {
    /// A request was handed to the writer.
    pub fn request(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    /// Its answer was written (or given up on).
    pub fn answered(&self) {
        *crate::sync::lock(&self.last_answer) = Instant::now();
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }

    fn pending(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) > 0
    }

    fn last_answer(&self) -> Instant {
        *crate::sync::lock(&self.last_answer)
    }
}

/// What the connection gives next.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// A request still unfinished this long after its first byte.
    TooSlow(Duration),
    /// Nothing begun, pending or answered for this long.
    Idle(Duration),
    /// End of stream: the client closed its side, or the server shut our read side.
    Closed,
    /// The socket failed (reset): the client will never read its answers.
    Broken(std::io::Error),
}

pub struct Connection {
    stream: TcpStream,
    framer: Framer,
    buf: Vec<u8>,
    idle: Duration,
    request_limit: Duration,
    activity: Arc<Activity>,
    last_request: Instant,
    /// First byte of the request being received, if one is.
    request_started: Option<Instant>,
    /// A frame came out of the bytes of the last read.
    completed: bool,
    ended: bool,
}

impl Connection {
    pub fn new(stream: TcpStream, max_request_bytes: usize, idle: Duration, request_limit: Duration, activity: Arc<Activity>) -> Self {
        Connection {
            stream,
            framer: Framer::new(max_request_bytes),
            buf: vec![0; 16 * 1024],
            idle,
            request_limit,
            activity,
            last_request: Instant::now(),
            request_started: None,
            completed: false,
            ended: false,
        }
    }

    /// The next frame, or why there is none. After `Closed`, `TooSlow`,
    /// `Idle` or `Broken` the connection is done.
    pub fn next(&mut self) -> Next {
        loop {
            if let Some(frame) = self.framer.next_frame() {
                self.completed = true;
                self.last_request = Instant::now();
                return Next::Frame(frame);
            }
            if self.ended {
                return Next::Closed;
            }
            // What is left, if anything, is the start of the next request.
            self.request_started = match (self.framer.has_partial(), std::mem::take(&mut self.completed)) {
                (false, _) => None,
                (true, true) => Some(Instant::now()),
                (true, false) => self.request_started,
            };
            let wait = match self.deadline() {
                Ok(wait) => wait,
                Err(why) => return why,
            };
            if self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).is_err() {
                return Next::Broken(std::io::Error::other("cannot set a read timeout"));
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) => {
                    self.ended = true;
                    if let Some(garbage) = self.framer.finish() {
                        return Next::Frame(garbage);
                    }
                    return Next::Closed;
                }
                Ok(n) => {
                    self.request_started.get_or_insert_with(Instant::now);
                    self.framer.push(&self.buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return Next::Broken(e),
            }
        }
    }

    /// How long the next read may wait, or the deadline that has passed.
    fn deadline(&self) -> Result<Duration, Next> {
        let now = Instant::now();
        if let Some(started) = self.request_started {
            let left = (started + self.request_limit).saturating_duration_since(now);
            return if left.is_zero() { Err(Next::TooSlow(self.request_limit)) } else { Ok(left) };
        }
        if self.activity.pending() {
            // Not idle while answers are owed; look again an idle period on.
            return Ok(self.idle);
        }
        let since = self.last_request.max(self.activity.last_answer());
        let left = (since + self.idle).saturating_duration_since(now);
        if left.is_zero() {
            Err(Next::Idle(self.idle))
        } else {
            Ok(left)
        }
    }
}
