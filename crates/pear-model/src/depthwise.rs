//! Depthwise 2-D convolution on the CPU, with bias and optional SiLU fused.
//!
//! candle runs a grouped convolution as one convolution per group: for a
//! depthwise layer of 1000 channels that is 1000 tiny im2col+gemm calls, which
//! made one efficientnet_b3 forward at 512x683 take about 3.2 s. EfficientNet
//! spends most of its layers here, so this kernel convolves each channel plane
//! directly and spreads the planes over rayon's threads. Rows are zero-padded
//! (and, for strided layers, split into phases) once, so every kernel tap is
//! a contiguous run; outputs accumulate in registers over all taps, in loops
//! compiled per SIMD level and chosen at run time.

use super::activation::silu_inplace;
use super::cpu::{cpu_f32, sum};
use super::split_rows::{split_bases, split_row};
use crate::simd::{per_level, Simd};
use candle_core::Tensor;
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Folded depthwise weights: `weight[c][ky][kx]`, `bias[c]`.
#[derive(Debug, Clone)]
pub struct DepthwiseConv2d {
    weight: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    channels: usize,
    k: usize,
    stride: usize,
    pad: usize,
    silu: bool,
    simd: Simd,
}

impl DepthwiseConv2d {
    /// `weight` has shape (C, 1, k, k), `bias` (C).
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, pad: usize, silu: bool) -> candle_core::Result<Self> {
        let (c, one, kh, kw) = weight.dims4()?;
        if one != 1 || kh != kw {
            candle_core::bail!("depthwise weight must be (C, 1, k, k), got {:?}", weight.dims());
        }
        Ok(DepthwiseConv2d {
            weight: Arc::new(weight.flatten_all()?.to_vec1::<f32>()?),
            bias: Arc::new(bias.to_vec1::<f32>()?),
            channels: c,
            k: kh,
            stride,
            pad,
            silu,
            simd: Simd::active(),
        })
    }

    /// The same convolution at another SIMD level (one this CPU runs).
    #[cfg(test)]
    pub fn at_level(mut self, simd: Simd) -> Self {
        self.simd = simd;
        self
    }

    pub fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.pad - self.k) / self.stride + 1
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.run(x, false)?.0)
    }

    /// The output and each of its planes' mean (N, C): squeeze-excite's
    /// input, summed while each plane is still in cache instead of read
    /// back from memory afterwards.
    pub fn forward_and_means(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (y, means) = self.run(x, true)?;
        let (n, c, ..) = y.dims4()?;
        Ok((y, Tensor::from_vec(means, (n, c), x.device())?))
    }

    /// The output, and its planes' means when asked (else empty).
    fn run(&self, x: &Tensor, means: bool) -> candle_core::Result<(Tensor, Vec<f32>)> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.channels {
            candle_core::bail!("depthwise conv expects {} channels, got {c}", self.channels);
        }
        if h + 2 * self.pad < self.k || w + 2 * self.pad < self.k {
            candle_core::bail!("depthwise conv input {h}x{w} smaller than its kernel");
        }
        let x = x.contiguous()?;
        let view = cpu_f32(&x)?;
        let src = view.slice();
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let bases = split_bases(self.k, self.stride, w + 2 * self.pad);
        // Not zeroed: every plane is written whole before anything reads it.
        let len = n * c * oh * ow;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        // At least ~16k outputs per task: small planes are not worth a task each.
        let min_planes = (16384 / (oh * ow).max(1)).max(1);
        let plane_means: Vec<f32> = out.spare_capacity_mut()[..len]
            .par_chunks_mut((oh * ow).max(1))
            .enumerate()
            .with_min_len(min_planes)
            .map(|(i, o)| {
                self.plane(i % c, &src[i * h * w..(i + 1) * h * w], h, w, &bases, o, oh, ow);
                // SAFETY: `plane` wrote every element of `o`.
                let o = unsafe { &*(o as *const [MaybeUninit<f32>] as *const [f32]) };
                if means {
                    sum(o) / o.len() as f32
                } else {
                    0.0
                }
            })
            .collect();
        drop(view);
        // SAFETY: the planes above cover all `len` elements, each written whole.
        unsafe { out.set_len(len) };
        let y = Tensor::from_vec(out, (n, c, oh, ow), x.device())?;
        Ok((y, if means { plane_means } else { Vec::new() }))
    }

    /// Convolves one channel plane into `out` (oh*ow), bias included.
    #[allow(clippy::too_many_arguments)] // one plane's geometry, passed flat to stay in registers
    fn plane(&self, ch: usize, src: &[f32], h: usize, w: usize, bases: &[usize], out: &mut [MaybeUninit<f32>], oh: usize, ow: usize) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        let wk = &self.weight[ch * k * k..(ch + 1) * k * k];
        let wp = w + 2 * p;
        // Rows zero-padded left and right (so every tap is inside its row) and,
        // for stride s, split into s phases (so every tap is a contiguous run).
        ROWS.with_borrow_mut(|buf| {
            buf.resize(h * wp, 0.0);
            for (row, dst) in src.chunks_exact(w).zip(buf.chunks_exact_mut(wp)) {
                split_row(row, p, s, dst);
            }
            convolve_plane(self.simd, buf, wp, h, bases, wk, k, s, p, self.bias[ch], out, ow, oh);
        });
        if self.silu {
            // SAFETY: convolve_plane wrote every element of the plane.
            silu_inplace(self.simd, unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) });
        }
    }
}

thread_local! {
    /// The padded, phase-split copy of the plane being convolved.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

per_level! {
/// The multiply-adds of one plane; compiled for each SIMD level and picked
/// at run time. Output columns go in blocks of 16, 8 and 4 accumulated in
/// registers over all taps (one store per output), the last few one by one.
#[allow(clippy::too_many_arguments)]
fn convolve_plane(
    rows_in: &[f32],
    wp: usize,
    h: usize,
    bases: &[usize],
    wk: &[f32],
    k: usize,
    s: usize,
    p: usize,
    bias: f32,
    out: &mut [MaybeUninit<f32>],
    ow: usize,
    oh: usize,
) {
    let mut rows: Vec<(&[f32], &[f32])> = Vec::with_capacity(k);
    for oy in 0..oh {
        rows.clear();
        for ky in 0..k {
            // Rows above and below the image are zero padding: skipped.
            let iy = (oy * s + ky) as isize - p as isize;
            if iy >= 0 && iy < h as isize {
                rows.push((&wk[ky * k..(ky + 1) * k], &rows_in[iy as usize * wp..(iy as usize + 1) * wp]));
            }
        }
        let orow = &mut out[oy * ow..(oy + 1) * ow];
        let mut ox = block::<16>(orow, 0, &rows, bases, bias);
        ox = block::<8>(orow, ox, &rows, bases, bias);
        ox = block::<4>(orow, ox, &rows, bases, bias);
        for (x, o) in orow.iter_mut().enumerate().skip(ox) {
            let mut acc = bias;
            for (wrow, irow) in &rows {
                for (&b, &wv) in bases.iter().zip(wrow.iter()) {
                    acc += wv * irow[b + x];
                }
            }
            o.write(acc);
        }
    }
}
}

/// Output columns from `ox` in blocks of `W` while whole blocks fit; returns
/// where it stopped.
#[inline(always)]
fn block<const W: usize>(orow: &mut [MaybeUninit<f32>], mut ox: usize, rows: &[(&[f32], &[f32])], bases: &[usize], bias: f32) -> usize {
    while ox + W <= orow.len() {
        let mut acc = [bias; W];
        for (wrow, irow) in rows {
            for (&b, &wv) in bases.iter().zip(wrow.iter()) {
                let inp: &[f32; W] = irow[b + ox..b + ox + W].try_into().expect("W columns");
                for j in 0..W {
                    acc[j] += wv * inp[j];
                }
            }
        }
        for (o, v) in orow[ox..ox + W].iter_mut().zip(acc) {
            o.write(v);
        }
        ox += W;
    }
    ox
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The kernel equals candle's own grouped convolution (slow but trusted).
    #[test]
    fn matches_grouped_conv() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let cases = [
            (3, 1, 9, 7),
            (3, 2, 10, 13),
            (5, 1, 8, 11),
            (5, 2, 15, 6),
            (5, 2, 5, 5),
            (3, 2, 1, 1),
            (5, 2, 2, 9),
            (3, 3, 11, 10),
            (5, 1, 3, 2),
            (3, 1, 20, 37),
            (5, 2, 30, 75),
            (3, 2, 33, 64),
            (5, 1, 9, 24),
        ];
        for &(k, s, h, w) in &cases {
            let c = 6;
            let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, c, &dev)?;
            for (silu, simd) in [false, true].into_iter().flat_map(|f| Simd::ALL.into_iter().filter(|s| s.runs_here()).map(move |s| (f, s)))
            {
                let ours = DepthwiseConv2d::new(&wt, &b, s, k / 2, silu)?.at_level(simd).forward(&x)?;
                let mut theirs = x.conv2d(&wt, k / 2, s, 1, c)?.broadcast_add(&b.reshape((1, c, 1, 1))?)?;
                if silu {
                    theirs = candle_nn::ops::silu(&theirs)?;
                }
                let diff = (&ours - &theirs)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "{simd} k{k} s{s} {h}x{w} silu {silu}: {diff}");
                let (with_means, means) = DepthwiseConv2d::new(&wt, &b, s, k / 2, silu)?.at_level(simd).forward_and_means(&x)?;
                assert_eq!((with_means - &ours)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?, 0.0);
                let want = theirs.flatten_from(2)?.mean(candle_core::D::Minus1)?;
                let diff = (means - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-5, "{simd} k{k} s{s} {h}x{w} silu {silu}: means differ by {diff}");
            }
        }
        Ok(())
    }
}
