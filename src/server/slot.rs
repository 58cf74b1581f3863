//! A connection's place under `max_connections` and
//! `max_connections_per_address`, released by its guard whatever ends the
//! connection (close, error, panic). The limits belong to the listener.

use crate::config::ServerSection;
use crate::metrics::Metrics;
use crate::sync::lock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct ConnectionLimits {
    max: usize,
    per_address_cap: Option<usize>,
    open: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
}

impl ConnectionLimits {
    pub fn new(cfg: &ServerSection, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max: cfg.max_connections,
            per_address_cap: cfg.max_connections_per_address,
            open: AtomicUsize::new(0),
            per_address: Mutex::default(),
            metrics,
        })
    }
}

pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
    /// Accepted, so counted in `connections_open`.
    counted: bool,
}

impl Slot {
    /// Takes a place, or says why there is none.
    pub fn acquire(limits: &Arc<ConnectionLimits>, ip: Option<IpAddr>) -> Result<Slot, String> {
        let open = limits.open.fetch_add(1, Ordering::AcqRel) + 1;
        // From here on the guard gives the place back, on every path.
        let mut slot = Slot { limits: limits.clone(), ip: None, counted: false };
        let refused = |why: String| {
            limits.metrics.connections_refused.inc();
            Err(why)
        };
        if open > limits.max {
            return refused(format!("server busy: {} connections already open (server.max_connections)", limits.max));
        }
        if let (Some(ip), Some(cap)) = (ip, limits.per_address_cap) {
            let mut per = lock(&limits.per_address);
            let n = per.entry(ip).or_insert(0);
            if *n >= cap {
                return refused(format!("server busy: {cap} connections already open from {ip} (server.max_connections_per_address)"));
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        limits.metrics.connections_accepted.inc();
        limits.metrics.connections_open.inc();
        slot.counted = true;
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per = lock(&self.limits.per_address);
            if let Some(n) = per.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&ip);
                }
            }
        }
        if self.counted {
            self.limits.metrics.connections_open.dec();
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}
