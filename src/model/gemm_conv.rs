//! Dense (groups = 1) 2-D convolution on the CPU as one GEMM per image, with
//! bias and optional SiLU fused.
//!
//! candle's conv2d lays im2col out pixel-major, multiplies, then copies the
//! result back to NCHW, and bias and activation are two more passes with two
//! more allocations: for YOLOv8n at 320x256 the GEMM itself was a sixth of
//! the time. Here the weights are the GEMM's left matrix as loaded (O x I*k*k,
//! row-major, BN folded), im2col writes channel-major rows (I*k*k x OH*OW)
//! into a buffer each worker thread keeps, and the product lands in NCHW
//! directly on top of the bias; SiLU runs over the output while it is hot.
//! 1x1 stride-1 convolutions skip im2col: the input already is that matrix.

use super::activation::silu_inplace;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::Arc;

/// Folded weights `weight[o][c][ky][kx]`, `bias[o]`.
#[derive(Debug, Clone)]
pub struct GemmConv2d {
    weight: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    in_channels: usize,
    out_channels: usize,
    k: usize,
    stride: usize,
    pad: usize,
    silu: bool,
}

thread_local! {
    /// im2col matrix, reused by every convolution this thread runs.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows of at least this many floats are worth a rayon task.
const PAR_MIN: usize = 4096;

impl GemmConv2d {
    /// `weight` has shape (O, I, k, k), `bias` (O).
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, pad: usize, silu: bool) -> candle_core::Result<Self> {
        let (o, i, kh, kw) = weight.dims4()?;
        if kh != kw || stride == 0 {
            candle_core::bail!("gemm conv needs a square kernel and stride >= 1, got {:?} stride {stride}", weight.dims());
        }
        Ok(GemmConv2d {
            weight: Arc::new(weight.flatten_all()?.to_vec1::<f32>()?),
            bias: Arc::new(bias.flatten_all()?.to_vec1::<f32>()?),
            in_channels: i,
            out_channels: o,
            k: kh,
            stride,
            pad,
            silu,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }

    fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.pad - self.k) / self.stride + 1
    }

    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Writes the (I*k*k) x (oh*ow) column matrix of one image into `cols`.
    fn im2col(&self, src: &[f32], h: usize, w: usize, oh: usize, ow: usize, cols: &mut [f32]) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        let n = oh * ow;
        let fill = |r: usize, row: &mut [f32]| {
            let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            let plane = &src[c * h * w..(c + 1) * h * w];
            // ox range whose input column ox*s + kx - p lies inside the row.
            let lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) }.min(ow);
            let hi = if w + p > kx { ((w + p - kx - 1) / s + 1).min(ow) } else { 0 }.max(lo);
            for oy in 0..oh {
                let out = &mut row[oy * ow..(oy + 1) * ow];
                let iy = (oy * s + ky) as isize - p as isize;
                if iy < 0 || iy >= h as isize {
                    out.fill(0.0);
                    continue;
                }
                let irow = &plane[iy as usize * w..(iy as usize + 1) * w];
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                if hi > lo {
                    let first = lo * s + kx - p;
                    if s == 1 {
                        out[lo..hi].copy_from_slice(&irow[first..first + (hi - lo)]);
                    } else {
                        for (j, o) in out[lo..hi].iter_mut().enumerate() {
                            *o = irow[first + j * s];
                        }
                    }
                }
            }
        };
        if n >= PAR_MIN {
            cols.par_chunks_mut(n).enumerate().for_each(|(r, row)| fill(r, row));
        } else {
            cols.chunks_mut(n).enumerate().for_each(|(r, row)| fill(r, row));
        }
    }

    /// One image: `dst` (O x n) = bias + weight (O x K) * cols (K x n), then SiLU.
    fn image(&self, cols: &[f32], dst: &mut [f32], n: usize) {
        let (o, kk) = (self.out_channels, self.in_channels * self.k * self.k);
        let init = |(r, row): (usize, &mut [f32])| row.fill(self.bias[r]);
        if n >= PAR_MIN {
            dst.par_chunks_mut(n).enumerate().for_each(init);
        } else {
            dst.chunks_mut(n).enumerate().for_each(init);
        }
        let threads = rayon::current_num_threads();
        let par = if threads > 1 && o * n * kk >= 1 << 16 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        // SAFETY: the three matrices are dense row-major slices of exactly
        // o*n, o*kk and kk*n floats (checked by the caller), not aliasing.
        unsafe {
            gemm::gemm(
                o,
                n,
                kk,
                dst.as_mut_ptr(),
                1,
                n as isize,
                true,
                self.weight.as_ptr(),
                1,
                kk as isize,
                cols.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        if self.silu {
            if dst.len() >= PAR_MIN {
                dst.par_chunks_mut(PAR_MIN).for_each(silu_inplace);
            } else {
                silu_inplace(dst);
            }
        }
    }
}

impl CustomOp1 for GemmConv2d {
    fn name(&self) -> &'static str {
        "gemm-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, c, h, w) = layout.shape().dims4()?;
        if c != self.in_channels {
            candle_core::bail!("conv expects {} input channels, got {c}", self.in_channels);
        }
        let src = match storage {
            CpuStorage::F32(v) => v.as_slice(),
            _ => candle_core::bail!("gemm conv supports f32 only"),
        };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("gemm conv needs a contiguous input".into()))?;
        let src = &src[start..end];
        if h + 2 * self.pad < self.k || w + 2 * self.pad < self.k {
            candle_core::bail!("conv input {h}x{w} smaller than its {0}x{0} kernel", self.k);
        }
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let (n, kk, o) = (oh * ow, c * self.k * self.k, self.out_channels);
        let mut out = vec![0f32; batch * o * n];
        for (b, dst) in out.chunks_mut(o * n).enumerate() {
            let img = &src[b * c * h * w..(b + 1) * c * h * w];
            if self.is_pointwise() {
                self.image(img, dst, n);
            } else {
                COLUMNS.with_borrow_mut(|cols| {
                    cols.resize(kk * n, 0.0);
                    self.im2col(img, h, w, oh, ow, &mut cols[..kk * n]);
                    self.image(&cols[..kk * n], dst, n);
                });
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, o, oh, ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Equal to candle's conv2d + bias (+ SiLU) on random shapes, strides,
    /// paddings and odd sizes, batch 1 and 2.
    #[test]
    fn matches_candle_conv2d() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let cases = [
            // (batch, in, out, k, stride, pad, h, w, silu)
            (1, 3, 16, 3, 2, 1, 64, 48, true),
            (2, 5, 7, 3, 1, 1, 9, 13, false),
            (1, 8, 4, 3, 2, 1, 7, 5, true),
            (1, 4, 6, 1, 1, 0, 11, 3, true),
            (2, 6, 3, 1, 2, 0, 9, 8, false),
            (1, 3, 5, 5, 1, 2, 6, 7, true),
            (1, 2, 3, 5, 2, 2, 5, 5, false),
            (1, 16, 32, 3, 1, 1, 80, 64, true),
            (1, 7, 9, 3, 1, 0, 4, 3, false),
            (1, 1, 1, 3, 1, 1, 1, 1, true),
        ];
        for (b, i, o, k, s, p, h, w, silu) in cases {
            let x = Tensor::randn(0f32, 1.0, (b, i, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 0.5, (o, i, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, o, &dev)?;
            let ours = GemmConv2d::new(&wt, &bias, s, p, silu)?.forward(&x)?;
            let mut theirs = x.conv2d(&wt, p, s, 1, 1)?.broadcast_add(&bias.reshape((1, o, 1, 1))?)?;
            if silu {
                theirs = candle_nn::ops::silu(&theirs)?;
            }
            assert_eq!(ours.dims(), theirs.dims(), "b{b} i{i} o{o} k{k} s{s} p{p} {h}x{w}");
            let diff = (ours - theirs)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "b{b} i{i} o{o} k{k} s{s} p{p} {h}x{w}: max diff {diff}");
        }
        Ok(())
    }

    /// A strided view (here a channel slice) is made contiguous, not misread.
    #[test]
    fn non_contiguous_input() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 8, 10, 10), &dev)?.narrow(1, 2, 4)?;
        let wt = Tensor::randn(0f32, 0.5, (3, 4, 3, 3), &dev)?;
        let bias = Tensor::zeros(3, candle_core::DType::F32, &dev)?;
        let ours = GemmConv2d::new(&wt, &bias, 1, 1, false)?.forward(&x)?;
        let theirs = x.contiguous()?.conv2d(&wt, 1, 1, 1, 1)?;
        let diff = (ours - theirs)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{diff}");
        Ok(())
    }
}
