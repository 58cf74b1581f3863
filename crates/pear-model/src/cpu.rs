//! Borrowing a CPU tensor's data for our own kernels, and the one small
//! reduction they need.
//!
//! candle's elementwise ops run on one process-wide thread pool that every
//! inference worker shares (and queues on); our kernels run on the calling
//! worker's own rayon pool instead, so they read tensors directly.

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};
use rayon::prelude::*;

/// A contiguous f32 CPU tensor's data, borrowed while the view lives.
pub struct CpuView<'a> {
    guard: StorageRef<'a>,
    start: usize,
    len: usize,
}

impl CpuView<'_> {
    pub fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => &[], // cpu_f32 admits nothing else
        }
    }
}

pub fn cpu_f32(t: &Tensor) -> candle_core::Result<CpuView<'_>> {
    let (guard, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("conv needs contiguous inputs".into()))?;
    if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
        candle_core::bail!("our conv kernels take f32 CPU tensors");
    }
    Ok(CpuView { guard, start, len: end - start })
}

/// Turns candle's own process-wide elementwise pool off unless
/// CANDLE_NUM_THREADS says otherwise: every worker shares it and queues on
/// it (yolov8n took 31 instead of 26 ms with it on), while the heavy work
/// runs in our kernels on each worker's own pool. Call at start, before any
/// other thread exists and before the first tensor operation.
pub fn single_threaded_candle_ops() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Mean over the spatial dims: (N, C, H, W) -> (N, C), channels in parallel.
pub fn global_avg_pool(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let x = x.contiguous()?;
    let view = cpu_f32(&x)?;
    let plane = h * w;
    let means: Vec<f32> = view.slice().par_chunks(plane.max(1)).map(|p| p.iter().sum::<f32>() / plane as f32).collect();
    drop(view);
    Tensor::from_vec(means, (n, c), x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn avg_pool_matches_candle_mean() -> candle_core::Result<()> {
        let x = Tensor::randn(0f32, 1.0, (2, 5, 7, 3), &Device::Cpu)?;
        let want = x.flatten_from(2)?.mean(D::Minus1)?;
        let got = global_avg_pool(&x.narrow(1, 1, 3)?)?;
        let diff = (got - want.narrow(1, 1, 3)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }
}
