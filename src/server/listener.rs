//! Accepts connections; one OS thread per connection, up to `max_connections`.

use super::peer::Peer;
use super::slot::Slot;
use crate::config::Config;
use crate::inference::{Pool, PoolOptions};
use crate::model::ModelError;
use crate::protocol::{ErrorCode, Response};
use crate::state::{ActiveModel, Shared};
use candle_core::Device;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Temporary files of downloads a killed server left behind.
fn remove_stale_downloads(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".download-") && name.ends_with(".part") {
            match std::fs::remove_file(e.path()) {
                Ok(()) => log::info!("removed {} left by an interrupted download", e.path().display()),
                Err(err) => log::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot load default model {path}: {source}")]
    Model { path: String, source: ModelError },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Loads the default model, starts the worker pool and binds the socket.
pub fn start(config: Config, device: Device) -> Result<Server, StartError> {
    remove_stale_downloads(&config.model.dir);
    let path = config.model.dir.join(&config.model.default);
    let t = Instant::now();
    let pipeline = crate::model::Pipeline::load(&path, &device, config.model.confidence_threshold)
        .map_err(|source| StartError::Model { path: path.display().to_string(), source })?;
    log::info!(
        "loaded {} in {:.0} ms ({}; confidence threshold {})",
        path.display(),
        t.elapsed().as_secs_f64() * 1e3,
        pipeline.meta.source,
        pipeline.confidence_threshold()
    );
    let model = ActiveModel { name: config.model.default.clone(), path: path.canonicalize()?, pipeline: Arc::new(pipeline) };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (workers, threads) = config.inference.thread_budget(cores);
    log::info!("{workers} inference worker(s) x {threads} thread(s) on {cores} core(s)");
    let shutdown = Arc::new(super::shutdown::Shutdown::default());
    let metrics = Arc::new(crate::metrics::Metrics::new());
    metrics.model_load(true, t.elapsed());
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
        annotated: match &config.debug.annotated_dir {
            Some(dir) => {
                log::info!("saving annotated images to {} (newest {} kept)", dir.display(), config.debug.annotated_keep);
                Some(Arc::new(crate::inference::annotated::AnnotatedDir::open(dir, config.debug.annotated_keep)?))
            }
            None => None,
        },
    })?;
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&addr).map_err(|source| StartError::Bind { addr: addr.clone(), source })?;
    let shared = Arc::new(Shared::new(config, device, model, pool, shutdown, metrics)?);
    Ok(Server { listener, shared })
}

impl Server {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Accepts until the shutdown signal is raised (see `shutdown::wake`),
    /// then closes the listening socket, so new clients are refused by the
    /// kernel (a balancer moves on) while the connections already open drain.
    pub fn run(self) -> Arc<Shared> {
        for conn in self.listener.incoming() {
            if self.shared.shutdown.is_draining() {
                break;
            }
            match conn {
                Ok(stream) => self.accept(stream),
                Err(e) => log::warn!("accept failed: {e}"),
            }
        }
        log::info!("no longer accepting connections");
        self.shared
    }

    fn accept(&self, mut stream: TcpStream) {
        let addr = stream.peer_addr().ok();
        let peer = addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
        let slot = match Slot::acquire(&self.shared, addr.map(|a| a.ip())) {
            Ok(s) => s,
            Err(why) => {
                log::warn!("{peer}: refused: {why}");
                let msg = Response::error(ErrorCode::Internal, why);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = stream.write_all(&msg.to_bytes());
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
        };
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new().name(format!("peer-{peer}")).spawn(move || {
            let _slot = slot;
            Peer::new(stream, peer, shared).run();
        });
        if let Err(e) = spawned {
            log::error!("cannot start a connection thread: {e}");
        }
    }
}
