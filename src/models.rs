//! The model registry: the active model, the model folder, and the one lock
//! that serialises changing either.
//!
//! The active model is an `Arc` swapped under a lock: a job holds the model it
//! was queued with, so a model change never disturbs images in flight, and
//! readers (0x22, every 0x01) only clone an `Arc`.

use crate::metrics::Metrics;
use crate::paths::{check_model_name, PathError};
use crate::sync::{lock, read, write};
use candle_core::Device;
use pear_model::{ModelError, Pipeline};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

pub struct ActiveModel {
    /// File name in the model folder, as clients name it.
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 (hex) of the bytes that were loaded: which model judged an image, on record.
    pub sha256: String,
    pub pipeline: Arc<Pipeline>,
}

/// A bundle loaded from its file, and the hash of exactly those bytes.
pub struct Loaded {
    pub pipeline: Pipeline,
    pub sha256: String,
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn load_file(path: &Path, device: &Device, confidence_threshold: Option<f32>) -> Result<Loaded, ModelError> {
    let bytes = std::fs::read(path)?;
    let pipeline = Pipeline::from_bytes(&bytes, device, confidence_threshold)?;
    Ok(Loaded { pipeline, sha256: sha256_hex(&bytes) })
}

pub struct ModelRegistry {
    active: RwLock<Arc<ActiveModel>>,
    dir: RwLock<PathBuf>,
    /// Folders the model folder may move to.
    roots: Vec<PathBuf>,
    /// Serialises model changes, deletions, folder changes and a download's final rename.
    ops: Mutex<()>,
    device: Device,
    confidence_threshold: Option<f32>,
    metrics: Arc<Metrics>,
}

impl ModelRegistry {
    /// Loads `name` from `dir` as the first active model.
    pub fn open(
        dir: &Path,
        name: &str,
        roots: Vec<PathBuf>,
        confidence_threshold: Option<f32>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        let path = dir.join(name);
        let t = Instant::now();
        let Loaded { pipeline, sha256 } = load_file(&path, &device, confidence_threshold)?;
        metrics.model_load(true, t.elapsed());
        log::info!(
            "loaded {} in {:.0} ms ({}; confidence threshold {})",
            path.display(),
            t.elapsed().as_secs_f64() * 1e3,
            pipeline.meta.source,
            pipeline.confidence_threshold()
        );
        metrics.set_active_model(name);
        let active = ActiveModel { name: name.to_string(), path: path.canonicalize()?, sha256, pipeline: Arc::new(pipeline) };
        Ok(ModelRegistry {
            active: RwLock::new(Arc::new(active)),
            dir: RwLock::new(dir.canonicalize()?),
            roots,
            ops: Mutex::new(()),
            device,
            confidence_threshold,
            metrics,
        })
    }

    pub fn active(&self) -> Arc<ActiveModel> {
        read(&self.active).clone()
    }

    pub fn set_active(&self, m: ActiveModel) {
        self.metrics.set_active_model(&m.name);
        *write(&self.active) = Arc::new(m);
    }

    pub fn dir(&self) -> PathBuf {
        read(&self.dir).clone()
    }

    pub fn set_dir(&self, p: PathBuf) {
        *write(&self.dir) = p;
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Held while the active model, the folder or a file in it changes.
    pub fn lock_ops(&self) -> MutexGuard<'_, ()> {
        lock(&self.ops)
    }

    /// Loads a bundle fully (the caller swaps it in only on success).
    pub fn load(&self, path: &Path) -> Result<Loaded, ModelError> {
        let t = Instant::now();
        let p = load_file(path, &self.device, self.confidence_threshold);
        self.metrics.model_load(p.is_ok(), t.elapsed());
        p
    }

    /// A model file in the current model folder. A name of the original's
    /// PyTorch weights (`best.pt`, `x.pth`) resolves to its converted bundle
    /// (`best.safetensors`) when only that exists.
    pub fn file(&self, name: &str) -> Result<PathBuf, PathError> {
        check_model_name(name)?;
        let dir = self.dir();
        let direct = dir.join(name);
        if direct.is_file() {
            return Ok(direct);
        }
        if let Some(stem) = name.strip_suffix(".pt").or_else(|| name.strip_suffix(".pth")) {
            let bundle = dir.join(format!("{stem}.safetensors"));
            if bundle.is_file() {
                return Ok(bundle);
            }
        }
        Err(PathError::NotFound(format!("model '{name}' not found in {}", dir.display())))
    }
}
