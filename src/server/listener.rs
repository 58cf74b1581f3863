//! Accepts connections; one OS thread per connection, up to `max_connections`.

use super::peer::Peer;
use crate::config::Config;
use crate::inference::Pool;
use crate::model::ModelError;
use crate::protocol::{ErrorCode, Response};
use crate::state::{ActiveModel, Shared};
use candle_core::Device;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let pool = Pool::new(workers, threads, config.inference.queue_capacity, config.images.limits())?;
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&addr).map_err(|source| StartError::Bind { addr: addr.clone(), source })?;
    let shared = Arc::new(Shared::new(config, device, model, pool)?);
    Ok(Server { listener, shared })
}

impl Server {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts forever.
    pub fn run(self) {
        for conn in self.listener.incoming() {
            match conn {
                Ok(stream) => self.accept(stream),
                Err(e) => log::warn!("accept failed: {e}"),
            }
        }
    }

    fn accept(&self, mut stream: TcpStream) {
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        let max = self.shared.config.server.max_connections;
        let open = self.shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        if open > max {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            log::warn!("{peer}: refused, {max} connections already open");
            let msg = Response::error(ErrorCode::Internal, format!("server busy: {max} connections already open (server.max_connections)"));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(&msg.to_bytes());
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new().name(format!("peer-{peer}")).spawn(move || {
            Peer::new(stream, peer, shared.clone()).run();
            shared.connections.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            log::error!("cannot start a connection thread: {e}");
        }
    }
}
