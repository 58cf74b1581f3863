//! Nearest-neighbour upsampling by an integer factor, as YOLOv8's neck
//! doubles P5 and P4.
//!
//! candle's `upsample_nearest2d` computes a source index per output value;
//! here each source row is widened once and copied `factor` times, planes in
//! parallel.

use super::cpu::cpu_f32;
use candle_core::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Planes smaller than this many output values per task are done together.
const PAR_MIN_VALUES: usize = 1 << 15;

/// `x` (N, C, H, W) -> (N, C, H*factor, W*factor).
pub fn upsample_nearest(x: &Tensor, factor: usize) -> candle_core::Result<Tensor> {
    if factor == 0 {
        candle_core::bail!("upsampling factor must be at least 1");
    }
    let (n, c, h, w) = x.dims4()?;
    let x = x.contiguous()?;
    let view = cpu_f32(&x)?;
    let (oh, ow) = (h * factor, w * factor);
    let len = n * c * oh * ow;
    // Not zeroed (that was a third of the time): every value is written below.
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // An empty plane has nothing to copy (and chunks of 0 are not allowed).
    if let Some(per_task) = PAR_MIN_VALUES.checked_div(oh * ow) {
        let planes = out.spare_capacity_mut()[..len].par_chunks_mut(oh * ow).zip(view.slice().par_chunks(h * w));
        planes.with_min_len(per_task.max(1)).for_each(|(dst, src)| {
            for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(ow * factor)) {
                let (first, rest) = d.split_at_mut(ow);
                for (v, d) in s.iter().zip(first.chunks_exact_mut(factor)) {
                    d.fill(MaybeUninit::new(*v));
                }
                for d in rest.chunks_exact_mut(ow) {
                    d.copy_from_slice(first);
                }
            }
        });
    }
    // SAFETY: the planes cover all `len` values (none when a plane is empty,
    // and then len is 0), each written above.
    unsafe { out.set_len(len) };
    drop(view);
    Tensor::from_vec(out, (n, c, oh, ow), x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_upsample_nearest2d() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, c, h, w, f) in [(1, 256, 8, 10, 2), (2, 3, 5, 7, 2), (1, 2, 3, 4, 3), (1, 1, 1, 1, 2), (1, 4, 6, 5, 1)] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
            let got = upsample_nearest(&x, f)?;
            let want = x.upsample_nearest2d(h * f, w * f)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{n}x{c}x{h}x{w} x{f}");
        }
        // A channel slice (not contiguous in batch 2) is read as its values.
        let x = Tensor::randn(0f32, 1.0, (2, 6, 4, 4), &dev)?.narrow(1, 1, 3)?;
        let diff = (upsample_nearest(&x, 2)? - x.upsample_nearest2d(8, 8)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        assert!(upsample_nearest(&x, 0).is_err());
        let empty = Tensor::zeros((1, 2, 0, 3), candle_core::DType::F32, &dev)?;
        assert_eq!(upsample_nearest(&empty, 2)?.dims(), [1, 2, 0, 6]);
        Ok(())
    }
}
