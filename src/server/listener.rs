//! Accepts connections; one OS thread per connection, up to `max_connections`.

use super::peer::Peer;
use super::slot::{ConnectionLimits, Slot};
use crate::shutdown::{Completion, Shutdown};
use crate::state::State;
use pear_protocol::{ErrorCode, Response};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
    limits: Arc<ConnectionLimits>,
    shutdown: Shutdown,
    completion: Completion,
}

impl Server {
    pub(super) fn new(listener: TcpListener, state: Arc<State>, shutdown: Shutdown) -> Server {
        let limits = ConnectionLimits::new(&state.config.server, state.metrics.clone());
        Server { listener, state, limits, shutdown, completion: Completion::default() }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    /// The signal that ends `run` and drains the connections.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Accepts until the shutdown signal, then closes the listening socket,
    /// so new clients are refused by the kernel (a balancer moves on) while
    /// the connections already open drain.
    pub fn run(self) -> Drain {
        // Shutting a listening socket's read side wakes a blocked `accept`
        // (it fails) and stops the kernel taking new connections.
        let fd = self.listener.as_raw_fd();
        let _wake = self.shutdown.on_begin(move || {
            // SAFETY: `fd` is the listener's, open until `run` returns, and
            // this waker is unregistered (`_wake` dropped) before that.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        });
        for conn in self.listener.incoming() {
            if self.shutdown.is_draining() {
                break;
            }
            match conn {
                Ok(stream) => self.accept(stream),
                Err(e) => log::warn!("accept failed: {e}"),
            }
        }
        log::info!("no longer accepting connections");
        Drain { state: self.state, shutdown: self.shutdown, completion: self.completion }
    }

    fn accept(&self, mut stream: TcpStream) {
        let addr = stream.peer_addr().ok();
        let peer = addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
        let slot = match Slot::acquire(&self.limits, addr.map(|a| a.ip())) {
            Ok(s) => s,
            Err(why) => {
                log::warn!("{peer}: refused: {why}");
                let msg = Response::error(ErrorCode::Internal, why);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = stream.write_all(&msg.to_bytes());
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
        };
        let Some(task) = self.completion.task() else { return };
        let (state, shutdown) = (self.state.clone(), self.shutdown.clone());
        let spawned = std::thread::Builder::new().name(format!("peer-{peer}")).spawn(move || {
            // Dropped when the connection has answered everything: the slot
            // is free again and `Drain` hears that this one is done.
            let _held = (slot, task);
            Peer::new(stream, peer, state, shutdown).run();
        });
        if let Err(e) = spawned {
            log::error!("cannot start a connection thread: {e}");
        }
    }
}

/// What is left once the listener has stopped: the connections still
/// answering, and the pool.
pub struct Drain {
    pub state: Arc<State>,
    shutdown: Shutdown,
    completion: Completion,
}

impl Drain {
    /// Waits until every connection has answered what it received and
    /// closed, at most `timeout`. If that runs out, images still queued are
    /// answered "shutting down" rather than dropped, and the connections get
    /// a few more seconds to write that. Then the workers are stopped and
    /// joined. True if the drain finished in time.
    pub fn finish(mut self, timeout: Duration) -> bool {
        let drained = self.completion.wait(timeout);
        if !drained {
            log::warn!("drain not finished after {} s (server.drain_timeout_secs); answering the rest as shutting down", timeout.as_secs());
            self.shutdown.stop();
            if !self.completion.wait(Duration::from_secs(5)) {
                log::warn!("exiting with connections still open");
            }
        }
        self.state.pool.close_and_join();
        // Every answer is written by now: the journal gets the last of them.
        if let Some(j) = &self.state.journal {
            j.close();
        }
        self.state.downloads.remove_partial();
        drained
    }
}
