//! pear-server: inspects pears on fruit-sorting lines over the original
//! Python server's TCP protocol.
//!
//! Layers, outside in: `server` (sockets and threads), `commands` (one file
//! per protocol command), `inference` (the worker pool), `protocol` (pure
//! parsing/formatting), `model` (pure math), `decode` (image files to pixels,
//! as the original's OpenCV read them). `state` is what connections
//! share, `config` is server.toml, `paths` keeps client paths in their folders;
//! `fuzzing` holds the fuzz targets' bodies, `metrics` what `/metrics` shows.

pub mod commands;
pub mod annotate;
pub mod client;
pub mod config;
pub mod decode;
pub mod fuzzing;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod paths;
pub mod protocol;
pub mod server;
pub mod state;
