//! The one shutdown signal every loop hears, and the completion that tells
//! `main` when the last connection is done (mini-redis's `shutdown.rs` and
//! its `shutdown_complete` channel, for OS threads).
//!
//! Nothing polls a flag. A loop that blocks (the listener in `accept`, each
//! connection in `read`) registers a waker that unblocks it; `begin` runs
//! them all. Each connection holds a [`Task`]; [`Completion::wait`] returns
//! when the last one is dropped, or when its time is up.
//!
//! Draining: the listener stops accepting, each connection answers what it
//! has already received and closes, workers finish the queue. If the drain
//! runs out of time, `stop` makes the workers answer what is still queued as
//! "server shutting down" (error 4) instead of the clients getting nothing.

use crate::sync::lock;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPING: u8 = 2;

type WakeFn = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Inner {
    phase: AtomicU8,
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
struct Wakers {
    next: u64,
    all: HashMap<u64, WakeFn>,
}

/// Cheap to clone; every clone is the same signal.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Shutdown {
    pub fn is_draining(&self) -> bool {
        self.inner.phase.load(Ordering::Acquire) >= DRAINING
    }

    /// The drain ran out of time: queued images are answered without inference.
    pub fn is_stopping(&self) -> bool {
        self.inner.phase.load(Ordering::Acquire) == STOPPING
    }

    /// Raises the signal and wakes every registered loop; true the first time.
    pub fn begin(&self) -> bool {
        self.raise(DRAINING)
    }

    /// The drain ran out of time (see `is_stopping`).
    pub fn stop(&self) {
        self.raise(STOPPING);
    }

    fn raise(&self, to: u8) -> bool {
        // Under the wakers' lock, so a loop registering now either sees the
        // phase or is in the list that is woken.
        let wakers = lock(&self.inner.wakers);
        let was = self.inner.phase.fetch_max(to, Ordering::AcqRel);
        if was == RUNNING {
            for wake in wakers.all.values() {
                wake();
            }
        }
        was == RUNNING
    }

    /// Calls `wake` when the signal is raised (at once if it already was),
    /// until the returned guard is dropped. `wake` must only unblock its
    /// loop (shut a socket's read side, say), never take this signal's lock.
    pub fn on_begin(&self, wake: impl Fn() + Send + Sync + 'static) -> Registration {
        let mut wakers = lock(&self.inner.wakers);
        if self.is_draining() {
            wake();
        }
        let id = wakers.next;
        wakers.next += 1;
        wakers.all.insert(id, Box::new(wake));
        Registration { inner: self.inner.clone(), id }
    }
}

/// Keeps a waker registered; dropping it unregisters.
pub struct Registration {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.inner.wakers).all.remove(&self.id);
    }
}

/// Held by each connection thread until it has answered everything.
pub struct Task {
    _done: Sender<()>,
}

/// Tells `main` when every [`Task`] is gone.
pub struct Completion {
    tx: Option<Sender<()>>,
    rx: Receiver<()>,
}

impl Default for Completion {
    fn default() -> Self {
        let (tx, rx) = bounded(0);
        Completion { tx: Some(tx), rx }
    }
}

impl Completion {
    /// A task to hand to a connection (or `None` once waiting has begun).
    pub fn task(&self) -> Option<Task> {
        self.tx.as_ref().map(|tx| Task { _done: tx.clone() })
    }

    /// Waits until every task is dropped, at most `timeout`; true if they
    /// were. No task can be made once waiting has begun.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        self.tx = None;
        // Nothing is ever sent: the only message is the last sender's drop.
        !matches!(self.rx.recv_timeout(timeout), Err(RecvTimeoutError::Timeout))
    }
}

/// Starts the thread that turns SIGTERM/SIGINT into `on_first` (drain) and
/// a second one into `on_second` (exit now).
pub fn on_signals(on_first: impl Fn() + Send + 'static, on_second: impl Fn() + Send + 'static) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            if seen == 1 {
                log::info!("{name}: draining (a second signal exits at once)");
                on_first();
            } else {
                log::warn!("{name} again: exiting without waiting");
                on_second();
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn wakers_run_once_and_late_ones_at_once() {
        let s = Shutdown::default();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let _early = s.on_begin(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        let gone = {
            let w = woken.clone();
            s.on_begin(move || {
                w.fetch_add(100, Ordering::SeqCst);
            })
        };
        drop(gone);
        assert!(s.begin());
        assert!(!s.begin());
        s.stop();
        assert_eq!(woken.load(Ordering::SeqCst), 1, "one registered waker, woken once; the dropped one not at all");
        let w = woken.clone();
        let _late = s.on_begin(move || {
            w.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(woken.load(Ordering::SeqCst), 11);
        assert!(s.is_draining() && s.is_stopping());
    }

    #[test]
    fn completion_waits_for_the_last_task() {
        let mut c = Completion::default();
        let t = c.task().unwrap();
        let h = std::thread::spawn(move || {
            let _t = t;
        });
        assert!(c.wait(Duration::from_secs(30)));
        h.join().unwrap();
        let mut c = Completion::default();
        let _held = c.task().unwrap();
        assert!(!c.wait(Duration::from_millis(1)), "a task still held is not done");
        assert!(c.task().is_none());
    }
}
