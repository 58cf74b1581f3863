//! Sockets and threads: the listener hands each connection to its own OS
//! thread running a `Peer`.

pub mod listener;
pub mod peer;

pub use listener::{start, Server};
