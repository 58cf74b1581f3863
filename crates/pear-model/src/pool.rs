//! Max-pooling with "same" padding (stride 1, window k x k, k odd), as
//! YOLOv8's SPPF chains it three times.
//!
//! candle pads with two concatenations of -inf and then pools with a
//! 25-compare loop per output: 0.7 ms of a 320x256 yolov8n forward for a
//! few thousand values. A window clipped at each plane's edge per output
//! (the next version) still took 80 us a pool there: a scalar chain of
//! compares per value, on planes 10 wide. Here every plane is padded with
//! -inf once, all planes one after another, so the window is separable
//! into k shifted maxima along the whole buffer (a row pass, then a column
//! pass a padded row apart): straight vector loops whose values in the
//! padding are computed and dropped, over groups of planes in parallel.
//! SPPF's three pools in a forward: 237 us before, 82-86 us now.

use super::cpu::cpu_f32;
use candle_core::Tensor;
use rayon::prelude::*;

/// Values per task, at least: smaller groups of planes are not worth a task.
const PAR_MIN_VALUES: usize = 1 << 12;

/// `x` (N, C, H, W) -> same shape, each value the max of its k x k window.
pub fn max_pool_same(x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    if k.is_multiple_of(2) {
        candle_core::bail!("same max-pool needs an odd window, got {k}");
    }
    let (n, c, h, w) = x.dims4()?;
    if n * c * h * w == 0 {
        return Tensor::zeros((n, c, h, w), x.dtype(), x.device());
    }
    let x = x.contiguous()?;
    let view = cpu_f32(&x)?;
    let plane = h * w;
    let mut out = vec![0f32; n * c * plane];
    // Groups of planes in parallel, each with its own buffers.
    let group = (PAR_MIN_VALUES / plane).max(1) * plane;
    out.par_chunks_mut(group).zip(view.slice().par_chunks(group)).for_each(|(dst, src)| pool_planes(src, dst, h, w, k));
    drop(view);
    Tensor::from_vec(out, (n, c, h, w), x.device())
}

/// Pools whole planes of `src` (each h x w) into `dst`.
fn pool_planes(src: &[f32], dst: &mut [f32], h: usize, w: usize, k: usize) {
    let r = k / 2;
    let (hp, wp) = (h + 2 * r, w + 2 * r);
    let mut padded = vec![f32::NEG_INFINITY; src.len() / (h * w) * hp * wp];
    for (src, pad) in src.chunks_exact(h * w).zip(padded.chunks_exact_mut(hp * wp)) {
        for (s, d) in src.chunks_exact(w).zip(pad[r * wp..].chunks_exact_mut(wp)) {
            d[r..r + w].copy_from_slice(s);
        }
    }
    // rows[i]: the max of padded[i..i + k]; at a plane's row y + r, column x,
    // that is the window's row through input pixel (y, x).
    let rows = shifted_max(&padded, k, 1);
    // cols[i]: the max of rows i, i + wp, ..., i + (k-1) wp; at plane
    // position (y, x), the whole window of input pixel (y, x).
    let cols = shifted_max(&rows, k, wp);
    for (plane, dst) in cols.chunks(hp * wp).zip(dst.chunks_exact_mut(h * w)) {
        for (row, d) in plane.chunks(wp).zip(dst.chunks_exact_mut(w)) {
            d.copy_from_slice(&row[..w]);
        }
    }
}

/// `out[i] = max(v[i], v[i + step], ..., v[i + (k-1) step])` for every i
/// where all of those exist, compiled for the active SIMD level.
fn shifted_max(v: &[f32], k: usize, step: usize) -> Vec<f32> {
    let len = v.len() - (k - 1) * step;
    let mut out = v[..len].to_vec();
    let out_slice = out.as_mut_slice();
    crate::simd::at_level!(crate::simd::Simd::active(), (v: &[f32], k: usize, step: usize, out_slice: &mut [f32]),
        avx512 => max_into(v, k, step, out_slice),
        avx2 => max_into(v, k, step, out_slice),
        portable => max_into(v, k, step, out_slice),
    );
    out
}

/// Block by block, so that the k passes over a block run in L1 (the
/// whole buffer, passed k times, was L2-bound).
#[inline(always)]
fn max_into(v: &[f32], k: usize, step: usize, out: &mut [f32]) {
    const BLOCK: usize = 1024;
    for (b, block) in out.chunks_mut(BLOCK).enumerate() {
        for j in 1..k {
            for (d, &s) in block.iter_mut().zip(&v[b * BLOCK + j * step..]) {
                // A plain compare (one vmaxps), not f32::max: its NaN rule costs
                // three more instructions a vector, and activations are finite
                // (the pipeline rejects non-finite outputs).
                *d = if s > *d { s } else { *d };
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
