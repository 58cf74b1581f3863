//! Named tensors for the layers' `load` functions.
//!
//! Like candle's VarBuilder, but shapes are read from the file (the loaders
//! infer an architecture's widths and depths from them) and every tensor a
//! loader takes is recorded, so a test can prove a loader consumes exactly
//! the names a reference library writes.

use super::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Weights {
    tensors: Arc<HashMap<String, Tensor>>,
    used: Arc<Mutex<BTreeSet<String>>>,
    prefix: String,
}

impl Weights {
    /// Takes tensors as stored; all are converted to f32 on `device`.
    pub fn new(tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let mut map = HashMap::with_capacity(tensors.len());
        for (k, t) in tensors {
            map.insert(k, t.to_dtype(DType::F32)?.to_device(device)?);
        }
        Ok(Weights { tensors: Arc::new(map), used: Default::default(), prefix: String::new() })
    }

    /// A view under `prefix.` (like `VarBuilder::pp`).
    pub fn pp(&self, name: impl std::fmt::Display) -> Weights {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{}", self.prefix, name) };
        Weights { prefix, ..self.clone() }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(&self.full(name))
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        let full = self.full(name);
        let t = self.tensors.get(&full).cloned().ok_or_else(|| ModelError::MissingTensor(full.clone()))?;
        if let Ok(mut used) = self.used.lock() {
            used.insert(full);
        }
        Ok(t)
    }

    /// Gets a tensor and checks its rank.
    pub fn get_rank(&self, name: &str, rank: usize) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.rank() != rank {
            return Err(ModelError::BadShape { name: self.full(name), expected: format!("rank {rank}"), got: t.dims().to_vec() });
        }
        Ok(t)
    }

    /// Gets a tensor and checks its exact shape.
    pub fn get_shape(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.dims() != shape {
            return Err(ModelError::BadShape { name: self.full(name), expected: format!("{shape:?}"), got: t.dims().to_vec() });
        }
        Ok(t)
    }

    /// Number of consecutive children `prefix.0`, `prefix.1`, ... that exist.
    pub fn count_children(&self, name: &str) -> usize {
        let base = self.full(name);
        (0..)
            .take_while(|i| {
                let p = format!("{base}.{i}.");
                self.tensors.keys().any(|k| k.starts_with(&p))
            })
            .count()
    }

    /// Tensor names under this prefix that no loader asked for.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let p = if self.prefix.is_empty() { String::new() } else { format!("{}.", self.prefix) };
        let mut v: Vec<String> = self.tensors.keys().filter(|k| k.starts_with(&p) && !used.contains(*k)).cloned().collect();
        v.sort();
        v
    }
}
