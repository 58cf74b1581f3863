//! Sockets and threads. `start` composes the server (folders, model, pool,
//! socket); `Server::run` accepts, handing each connection to its own OS
//! thread running a `Peer`, until the shutdown signal; `Drain::finish` waits
//! for the connections to answer what they received and stops the pool.
//!
//! `listener` accepts, `slot` is a connection's place under the limits,
//! `connection` is a socket's read side (frames and deadlines), `peer`
//! dispatches a connection's requests and writes its answers in order.

mod api;
mod connection;
mod dashboard;
mod http;
mod listener;
pub mod metrics_http;
mod peer;
mod slot;
pub mod systemd;
mod thumbnail;

pub use listener::{Drain, Server};

use crate::commands::Downloads;
use crate::config::Config;
use crate::inference::annotated::AnnotatedDir;
use crate::inference::{Pool, PoolOptions};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::models::ModelRegistry;
use crate::shutdown::Shutdown;
use crate::state::{roots_or, ImageFolder, State};
use pear_model::ModelError;
use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot load default model {path}: {source}")]
    Model { path: String, source: ModelError },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Loads the default model, starts the worker pool and binds the socket.
pub fn start(config: Config) -> Result<Server, StartError> {
    Downloads::remove_stale(&config.model.dir);
    let metrics = Arc::new(Metrics::new());
    let shutdown = Shutdown::default();
    let m = &config.model;
    let models = ModelRegistry::open(&m.dir, &m.default, roots_or(&m.allowed_roots, &m.dir), m.confidence_threshold, metrics.clone())
        .map_err(|source| StartError::Model { path: m.dir.join(&m.default).display().to_string(), source })?;
    let images = ImageFolder::open(&config.images.dir, roots_or(&config.images.allowed_roots, &config.images.dir))?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (workers, threads) = config.inference.thread_budget(cores);
    log::info!("{workers} inference worker(s) x {threads} thread(s) on {cores} core(s)");
    let annotated = match &config.debug.annotated_dir {
        Some(dir) => {
            log::info!("saving annotated images to {} (newest {} kept)", dir.display(), config.debug.annotated_keep);
            Some(Arc::new(AnnotatedDir::open(dir, config.debug.annotated_keep)?))
        }
        None => None,
    };
    let pool = Pool::new(PoolOptions {
        workers,
        threads,
        capacity: config.inference.queue_capacity,
        per_connection: config.inference.per_connection(),
        limits: config.images.limits(),
        min_job: Duration::from_millis(config.debug.min_inference_ms),
        settle: Duration::from_millis(config.images.settle_ms),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        annotated,
        scheduling: config.inference.scheduling,
    })?;
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&addr).map_err(|source| StartError::Bind { addr: addr.clone(), source })?;
    let host = crate::record::host_name().into();
    let journal = Journal::start(&config.journal, metrics.clone())?;
    let requests = AtomicU64::new(0);
    let state = State { config, models, images, pool, downloads: Downloads::default(), metrics, host, requests, journal };
    Ok(Server::new(listener, Arc::new(state), shutdown))
}
