//! The shared inference queue: images with a deadline first, earliest
//! deadline first; the others round-robin across connections.
//!
//! Images whose request set `deadline_ms` wait in one heap ordered by
//! deadline, and a worker always takes from it first: an answer due soon is
//! worth more than one nobody waits for in particular. (A job whose deadline
//! has passed by then is answered unrun by the worker.) Each connection has
//! its own FIFO of the other jobs; workers take one job from each
//! connection in turn, so a single image from one client waits for at most
//! one job per other busy connection, never behind another client's whole
//! batch. A connection may have at most `per_connection` images waiting, all
//! together at most `capacity`; but a connection with nothing waiting is
//! always let in with one image (`GUARANTEED`), so clients that fill the queue (say, by sending
//! big batches and hanging up, again and again) cannot lock out a client
//! asking for one image. The crossbeam channel carries one token per queued
//! job and wakes exactly one idle worker per job; the order in which jobs are
//! served is decided here. Closing the queue drops the token sender: workers
//! serve what is left, then their `pop` returns `None` and they end.

use super::pool::Job;
use crate::sync::lock;
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// All connections together have `queue_capacity` images waiting.
    QueueFull,
    /// This connection has `max_queued_per_connection` images waiting.
    ConnectionShare,
    /// The pool is shutting down.
    Closed,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::QueueFull => "server busy: inference queue full (inference.queue_capacity)",
            Refusal::ConnectionShare => {
                "server busy: this connection already has its share of the queue waiting (inference.max_queued_per_connection)"
            }
            Refusal::Closed => "server shutting down",
        }
    }
}

/// Images a connection may always have waiting, even when the queue is full:
/// one, so a client asking for one image is never refused, while a client
/// that opens connection after connection only gains one place per connection.
pub const GUARANTEED: usize = 1;

/// A job with a deadline, ordered so that the heap's top is the earliest
/// deadline (and, among equal deadlines, the one queued first).
struct Urgent {
    deadline: Instant,
    seq: u64,
    job: Job,
}

impl Ord for Urgent {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

impl PartialOrd for Urgent {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Urgent {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Urgent {}

#[derive(Default)]
struct Lanes {
    /// Jobs without a deadline, per connection.
    jobs: HashMap<u64, VecDeque<Job>>,
    /// Connections with queued jobs, in serving order.
    ring: VecDeque<u64>,
    urgent: BinaryHeap<Urgent>,
    /// Jobs waiting per connection, both kinds.
    waiting: HashMap<u64, usize>,
    total: usize,
    seq: u64,
}

impl Lanes {
    fn took(&mut self, conn: u64) {
        self.total -= 1;
        if let Some(n) = self.waiting.get_mut(&conn) {
            *n -= 1;
            if *n == 0 {
                self.waiting.remove(&conn);
            }
        }
    }
}

pub struct FairQueue {
    lanes: Mutex<Lanes>,
    /// None once closed.
    tokens_tx: Mutex<Option<Sender<()>>>,
    tokens_rx: Receiver<()>,
    capacity: usize,
    per_connection: usize,
}

impl FairQueue {
    pub fn new(capacity: usize, per_connection: usize) -> FairQueue {
        let (tokens_tx, tokens_rx) = unbounded();
        FairQueue {
            lanes: Mutex::default(),
            tokens_tx: Mutex::new(Some(tokens_tx)),
            tokens_rx,
            capacity: capacity.max(1),
            per_connection: per_connection.max(1),
        }
    }

    fn lanes(&self) -> MutexGuard<'_, Lanes> {
        lock(&self.lanes)
    }

    pub fn push(&self, job: Job) -> Result<(), (Job, Refusal)> {
        let mut lanes = self.lanes();
        let conn = job.conn;
        let waiting = lanes.waiting.get(&conn).copied().unwrap_or(0);
        if waiting >= self.per_connection {
            return Err((job, Refusal::ConnectionShare));
        }
        if lanes.total >= self.capacity && waiting >= GUARANTEED {
            return Err((job, Refusal::QueueFull));
        }
        // The token goes in under the lock, so a worker holding a token always
        // finds the job once it gets the lock. (The receiver lives in `self`.)
        match lock(&self.tokens_tx).as_ref() {
            Some(tx) => {
                let _ = tx.send(());
            }
            None => return Err((job, Refusal::Closed)),
        }
        lanes.total += 1;
        *lanes.waiting.entry(conn).or_default() += 1;
        if let Some(deadline) = job.deadline {
            lanes.seq += 1;
            let seq = lanes.seq;
            lanes.urgent.push(Urgent { deadline, seq, job });
            return Ok(());
        }
        let lane = lanes.jobs.entry(conn).or_default();
        lane.push_back(job);
        if lane.len() == 1 {
            lanes.ring.push_back(conn);
        }
        Ok(())
    }

    /// Blocks until a job is queued: the earliest deadline, or else the next
    /// connection in turn gives one. `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<Job> {
        loop {
            let closed = self.tokens_rx.recv().is_err();
            let mut lanes = self.lanes();
            if let Some(Urgent { job, .. }) = lanes.urgent.pop() {
                lanes.took(job.conn);
                return Some(job);
            }
            // A purge may have taken this token's job; wait for the next one.
            while let Some(conn) = lanes.ring.pop_front() {
                let Some(lane) = lanes.jobs.get_mut(&conn) else { continue };
                let Some(job) = lane.pop_front() else {
                    lanes.jobs.remove(&conn);
                    continue;
                };
                if lane.is_empty() {
                    lanes.jobs.remove(&conn);
                } else {
                    lanes.ring.push_back(conn);
                }
                lanes.took(conn);
                return Some(job);
            }
            if closed {
                return None;
            }
        }
    }

    /// Refuses new jobs; workers serve the queued ones, then `pop` ends.
    pub fn close(&self) {
        lock(&self.tokens_tx).take();
    }

    /// Removes every queued job of `conn` (already cancelled by its owner),
    /// freeing their places at once; returns how many were removed.
    pub fn purge(&self, conn: u64) -> usize {
        let mut lanes = self.lanes();
        let Some(n) = lanes.waiting.remove(&conn) else { return 0 };
        lanes.jobs.remove(&conn);
        lanes.ring.retain(|c| *c != conn);
        lanes.urgent.retain(|u| u.job.conn != conn);
        lanes.total -= n;
        // Take back their tokens. A token a worker already holds finds no job
        // and is simply spent, so tokens never outnumber jobs for long.
        for _ in 0..n {
            if self.tokens_rx.try_recv().is_err() {
                break;
            }
        }
        n
    }

    /// Images waiting, all connections together.
    pub fn len(&self) -> usize {
        self.lanes().total
    }
}
