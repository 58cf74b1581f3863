//! What the commands work on: the model registry, the image folder, the
//! inference pool, the download state, and the settings they read. Connection
//! limits live with the listener, the shutdown signal with `main`.

use crate::commands::Downloads;
use crate::config::Config;
use crate::inference::Pool;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::models::ModelRegistry;
use crate::sync::{read, write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

pub struct State {
    pub config: Config,
    pub models: ModelRegistry,
    pub images: ImageFolder,
    pub pool: Pool,
    pub downloads: Downloads,
    pub metrics: Arc<Metrics>,
    /// This host's name, for the records.
    pub host: Arc<str>,
    /// Requests received, server-wide: each one's sequence number.
    pub requests: AtomicU64,
    /// `[journal]`, when on.
    pub journal: Option<Journal>,
}

/// The folder 0x01 names are relative to, and where 0x30 may move it.
pub struct ImageFolder {
    dir: RwLock<PathBuf>,
    roots: Vec<PathBuf>,
}

impl ImageFolder {
    pub fn open(dir: &Path, roots: Vec<PathBuf>) -> std::io::Result<ImageFolder> {
        Ok(ImageFolder { dir: RwLock::new(dir.canonicalize()?), roots })
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
}

/// The configured roots, or the folder itself when none are.
pub fn roots_or(roots: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    if roots.is_empty() {
        vec![dir.to_path_buf()]
    } else {
        roots.to_vec()
    }
}
