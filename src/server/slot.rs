//! A connection's place under `max_connections` and
//! `max_connections_per_address`, released by its guard whatever ends the
//! connection (close, error, panic).

use crate::state::Shared;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Slot {
    shared: Arc<Shared>,
    ip: Option<IpAddr>,
    /// Accepted, so counted in `connections_open`.
    counted: bool,
}

impl Slot {
    /// Takes a place, or says why there is none.
    pub fn acquire(shared: &Arc<Shared>, ip: Option<IpAddr>) -> Result<Slot, String> {
        let cfg = &shared.config.server;
        let open = shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        // From here on the guard gives the place back, on every path.
        let mut slot = Slot { shared: shared.clone(), ip: None, counted: false };
        let refused = |why: String| {
            shared.metrics.connections_refused.inc();
            Err(why)
        };
        if open > cfg.max_connections {
            return refused(format!("server busy: {} connections already open (server.max_connections)", cfg.max_connections));
        }
        if let (Some(ip), Some(cap)) = (ip, cfg.max_connections_per_address) {
            let mut per = shared.per_address.lock().unwrap_or_else(|p| p.into_inner());
            let n = per.entry(ip).or_insert(0);
            if *n >= cap {
                return refused(format!("server busy: {cap} connections already open from {ip} (server.max_connections_per_address)"));
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        shared.metrics.connections_accepted.inc();
        shared.metrics.connections_open.inc();
        slot.counted = true;
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per = self.shared.per_address.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&ip);
                }
            }
        }
        if self.counted {
            self.shared.metrics.connections_open.dec();
        }
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
