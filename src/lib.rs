//! pear-server: inspects pears on fruit-sorting lines over the original
//! Python server's TCP protocol.
//!
//! Layers, outside in: `server` (sockets and threads), `commands` (one file
//! per protocol command), `inference` (the worker pool), `protocol` (pure
//! parsing/formatting), `model` (pure math).

pub mod model;
pub mod protocol;
