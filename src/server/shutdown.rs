//! The shutdown signal every loop hears, and the SIGTERM/SIGINT handling
//! that raises it.
//!
//! Draining: the listener stops accepting, each Peer answers what it has
//! already received and closes, workers finish the queue; `main` waits for the
//! last connection (at most `server.drain_timeout_secs`) and exits 0. If the
//! drain runs out of time, `stop` makes the workers answer what is still
//! queued as "server shutting down" (error 4) instead of the clients getting
//! nothing. A second signal exits at once.

use crate::state::Shared;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Shutdown {
    draining: AtomicBool,
    stopping: AtomicBool,
}

impl Shutdown {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Raises the signal; true if it was not raised before.
    pub fn begin(&self) -> bool {
        !self.draining.swap(true, Ordering::AcqRel)
    }

    /// The drain ran out of time: queued images are answered without inference.
    pub fn stop(&self) {
        self.draining.store(true, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// After the listener stopped: waits until every connection has answered
/// what it received and closed, at most `timeout`; true if they all did.
pub fn drain(shared: &Shared, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while shared.connections.load(Ordering::Acquire) > 0 {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The address that reaches a listener bound to `addr` from this host.
pub fn wake_address(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// Wakes a listener blocked in `accept` so it sees the signal.
pub fn wake(addr: SocketAddr) {
    let _ = TcpStream::connect_timeout(&wake_address(addr), Duration::from_secs(1));
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
