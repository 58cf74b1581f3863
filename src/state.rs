//! What all connections share: config, the active model, the two folders, the pool.
//!
//! The active model is an `Arc` swapped under a lock: a job holds the model it
//! was queued with, so a model change never disturbs images in flight, and
//! readers (0x22, every 0x01) only clone an `Arc`.

use crate::config::Config;
use crate::inference::Pool;
use crate::metrics::Metrics;
use crate::model::{ModelError, Pipeline};
use crate::server::shutdown::Shutdown;
use candle_core::Device;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub struct ActiveModel {
    /// File name in the model folder, as clients name it.
    pub name: String,
    pub path: PathBuf,
    pub pipeline: Arc<Pipeline>,
}

pub struct Shared {
    pub config: Config,
    pub device: Device,
    pub pool: Pool,
    model: RwLock<Arc<ActiveModel>>,
    model_dir: RwLock<PathBuf>,
    image_dir: RwLock<PathBuf>,
    /// Serialises model changes, deletions, folder changes and a download's final rename.
    pub model_ops: Mutex<()>,
    /// Held for a whole 0x20: one download at a time.
    pub download: Mutex<()>,
    /// Temporary files of downloads in progress, removed if the server exits mid-download.
    pub partial_downloads: Mutex<HashSet<PathBuf>>,
    pub connections: AtomicUsize,
    pub per_address: Mutex<HashMap<IpAddr, usize>>,
    next_conn: AtomicU64,
    /// Heard by the listener, every Peer and the pool's workers.
    pub shutdown: Arc<Shutdown>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(
        config: Config,
        device: Device,
        model: ActiveModel,
        pool: Pool,
        shutdown: Arc<Shutdown>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Shared> {
        metrics.set_active_model(&model.name);
        let model_dir = config.model.dir.canonicalize()?;
        let image_dir = config.images.dir.canonicalize()?;
        Ok(Shared {
            config,
            device,
            pool,
            model: RwLock::new(Arc::new(model)),
            model_dir: RwLock::new(model_dir),
            image_dir: RwLock::new(image_dir),
            model_ops: Mutex::new(()),
            download: Mutex::new(()),
            partial_downloads: Mutex::default(),
            connections: AtomicUsize::new(0),
            per_address: Mutex::default(),
            next_conn: AtomicU64::new(1),
            shutdown,
            metrics,
        })
    }

    /// A fresh id for a connection (its lane in the inference queue).
    pub fn connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Removes the temporary files of downloads still running (exit path).
    pub fn remove_partial_downloads(&self) {
        for p in self.partial_downloads.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            let _ = std::fs::remove_file(p);
        }
    }

    pub fn model(&self) -> Arc<ActiveModel> {
        self.model.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_model(&self, m: ActiveModel) {
        self.metrics.set_active_model(&m.name);
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
    }

    pub fn model_dir(&self) -> PathBuf {
        self.model_dir.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_model_dir(&self, p: PathBuf) {
        *self.model_dir.write().unwrap_or_else(|p| p.into_inner()) = p;
    }

    pub fn image_dir(&self) -> PathBuf {
        self.image_dir.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_image_dir(&self, p: PathBuf) {
        *self.image_dir.write().unwrap_or_else(|p| p.into_inner()) = p;
    }

    /// Folders the model folder may move to.
    pub fn model_roots(&self) -> Vec<PathBuf> {
        roots_or(&self.config.model.allowed_roots, &self.config.model.dir)
    }

    /// Folders the image folder may move to.
    pub fn image_roots(&self) -> Vec<PathBuf> {
        roots_or(&self.config.images.allowed_roots, &self.config.images.dir)
    }

    /// Loads a bundle fully (the caller swaps it in only on success).
    pub fn load_pipeline(&self, path: &Path) -> Result<Pipeline, ModelError> {
        let t = std::time::Instant::now();
        let p = Pipeline::load(path, &self.device, self.config.model.confidence_threshold);
        self.metrics.model_load(p.is_ok(), t.elapsed());
        p
    }
}

fn roots_or(roots: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    if roots.is_empty() {
        vec![dir.to_path_buf()]
    } else {
        roots.to_vec()
    }
}
