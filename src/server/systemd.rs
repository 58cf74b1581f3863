//! systemd integration (`deploy/pear-server.service`, `Type=notify`): READY
//! once the model is loaded and the sockets are bound, STOPPING when the
//! drain begins, and watchdog pings when the unit sets `WatchdogSec`. Without
//! systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::Duration;

pub fn ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        log::warn!("cannot notify systemd: {e}");
    }
    if let Some(interval) = sd_notify::watchdog_enabled() {
        // Ping at half the interval: a hung process (not just a dead one) is restarted.
        let every = (interval / 2).max(Duration::from_millis(100));
        let spawned = std::thread::Builder::new().name("watchdog".into()).spawn(move || loop {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            std::thread::sleep(every);
        });
        if let Err(e) = spawned {
            log::warn!("cannot start the watchdog thread: {e}");
        }
    }
}

pub fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}
