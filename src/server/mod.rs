//! Sockets and threads: the listener hands each connection to its own OS
//! thread running a `Peer`; `shutdown` is the signal they all hear.

pub mod listener;
pub mod metrics_http;
pub mod peer;
pub mod shutdown;
pub mod slot;
pub mod systemd;

pub use listener::{start, Server};
