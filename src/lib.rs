//! pear-server: inspects pears on fruit-sorting lines over the original
//! Python server's TCP protocol.
//!
//! The wire protocol (`pear_protocol`) and the model (`pear_model`) are crates
//! of their own; this one is the server: `server` (sockets and threads: the
//! listener, one `Connection` and `Peer` per client), `commands` (one file per
//! protocol command), `inference` (the worker pool and its queue), `grade`
//! (one grade per fruit from its views), `shutdown` (the signal
//! every loop hears and the completion that tells main all are done),
//! `config` (server.toml), `paths` (client paths kept in their folders),
//! `metrics` (what `/metrics` shows).

mod commands;
pub mod config;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod grade;
mod inference;
pub mod journal;
mod metrics;
mod models;
mod paths;
pub mod record;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod sync;
