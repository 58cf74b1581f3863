//! The integration tests, one binary (one link of the server, one set of
//! shared helpers), one module per area. Most talk to the real `pear-server`
//! binary over TCP with real weights (`common::TestServer`).

mod common;

mod capture;
mod cli;
mod client;
mod commands;
mod dashboard;
mod deadlines;
mod fruit;
mod fuzz_corpus;
mod heldout;
mod hostile;
mod images;
mod journal;
mod jpeg;
mod manifests;
mod metrics;
mod parity;
mod protocol;
mod systemd;
