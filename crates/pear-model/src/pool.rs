//! Max-pooling with "same" padding (stride 1, window k x k, k odd), as
//! YOLOv8's SPPF chains it three times.
//!
//! candle pads with two concatenations of -inf and then pools with a
//! 25-compare loop per output: 0.7 ms of a 320x256 yolov8n forward for a
//! few thousand values. Here the window is separable (a row pass, then a
//! column pass over whole rows, which vectorises) and padding is the window
//! clipped at the edges, which is what -inf padding computes.

use super::cpu::cpu_f32;
use candle_core::Tensor;
use rayon::prelude::*;

/// Planes smaller than this many values per task are pooled together.
const PAR_MIN_VALUES: usize = 1 << 14;

/// `x` (N, C, H, W) -> same shape, each value the max of its k x k window.
pub fn max_pool_same(x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    if k.is_multiple_of(2) {
        candle_core::bail!("same max-pool needs an odd window, got {k}");
    }
    let (n, c, h, w) = x.dims4()?;
    let x = x.contiguous()?;
    let view = cpu_f32(&x)?;
    let plane = h * w;
    let mut out = vec![0f32; n * c * plane];
    // An empty plane has nothing to pool (and chunks of 0 are not allowed).
    if let Some(per_task) = PAR_MIN_VALUES.checked_div(plane) {
        out.par_chunks_mut(plane).zip(view.slice().par_chunks(plane)).with_min_len(per_task.max(1)).for_each(|(dst, src)| {
            pool_plane(src, dst, h, w, k / 2);
        });
    }
    drop(view);
    Tensor::from_vec(out, (n, c, h, w), x.device())
}

fn pool_plane(src: &[f32], dst: &mut [f32], h: usize, w: usize, r: usize) {
    // Row pass into `rows`, then each output row is the max of up to 2r+1 of them.
    let mut rows = vec![0f32; h * w];
    for (s, d) in src.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
        for (x, d) in d.iter_mut().enumerate() {
            let window = &s[x.saturating_sub(r)..(x + r + 1).min(w)];
            *d = window.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        }
    }
    for (y, d) in dst.chunks_exact_mut(w).enumerate() {
        let (top, bottom) = (y.saturating_sub(r), (y + r + 1).min(h));
        d.copy_from_slice(&rows[top * w..(top + 1) * w]);
        for row in rows[(top + 1) * w..bottom * w].chunks_exact(w) {
            for (d, &v) in d.iter_mut().zip(row) {
                *d = d.max(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// candle's own: pad with -inf, then max_pool2d with stride 1.
    fn reference(x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let p = k / 2;
        let side = Tensor::full(f32::NEG_INFINITY, (n, c, h, p), x.device())?;
        let x = Tensor::cat(&[&side, x, &side], 3)?;
        let top = Tensor::full(f32::NEG_INFINITY, (n, c, p, w + 2 * p), x.device())?;
        Tensor::cat(&[&top, &x, &top], 2)?.max_pool2d_with_stride(k, 1)
    }

    #[test]
    fn matches_padded_candle_max_pool() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // (n, c, h, w, k): the SPPF shape, planes smaller than the window, one pixel, k 1.
        for (n, c, h, w, k) in [(1, 128, 8, 10, 5), (2, 3, 13, 7, 5), (1, 4, 2, 3, 5), (1, 2, 1, 1, 5), (1, 5, 9, 9, 3), (1, 3, 6, 4, 1)] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
            let got = max_pool_same(&x, k)?;
            let want = reference(&x, k)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{n}x{c}x{h}x{w} k{k}");
        }
        Ok(())
    }

    #[test]
    fn an_even_window_is_an_error_and_an_empty_plane_is_not() {
        let x = Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool_same(&x, 4).is_err());
        let empty = Tensor::zeros((1, 2, 0, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(max_pool_same(&empty, 5).unwrap().dims(), [1, 2, 0, 3]);
    }
}
