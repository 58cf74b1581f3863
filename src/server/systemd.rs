//! systemd integration (`deploy/pear-server.service`, `Type=notify`): READY
//! once the model is loaded and the sockets are bound, STOPPING when the
//! drain begins, and watchdog pings when the unit sets `WatchdogSec`. Without
//! systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use crate::shutdown::Shutdown;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Says READY=1; with a watchdog, starts the thread that keeps it fed.
pub fn ready(listen: SocketAddr, shutdown: Shutdown) {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        log::warn!("cannot notify systemd: {e}");
    }
    let Some(interval) = sd_notify::watchdog_enabled() else { return };
    let every = (interval / 2).max(Duration::from_millis(100));
    let spawned = std::thread::Builder::new().name("watchdog".into()).spawn(move || loop {
        // A ping means the server answers its own protocol (a 0x22 over TCP),
        // so a hung server is restarted, not just a dead one. While draining
        // the listener is closed on purpose; being alive is enough then.
        if shutdown.is_draining() || answers(listen, every) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            log::warn!("watchdog: the server did not answer a 0x22 on {listen}; not telling systemd it is alive");
        }
        std::thread::sleep(every);
    });
    if let Err(e) = spawned {
        log::warn!("cannot start the watchdog thread: {e}");
    }
}

/// True when a 0x22 sent to `listen` gets an answer (a "server busy" answer counts: it is alive).
fn answers(listen: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&loopback(listen), timeout) else { return false };
    let _ = s.set_read_timeout(Some(timeout));
    if s.write_all(b"{\"cmd\": 0x22, \"request_data\": null}\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 256];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[0] == b'{')
}

pub fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// The address that reaches a listener bound to `addr` from this host.
fn loopback(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}
