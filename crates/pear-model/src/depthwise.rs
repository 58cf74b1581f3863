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

use super::cpu::{cpu_f32, sum};
use super::split_rows::{self, split_bases, split_row};
use crate::profile;
use crate::sgemm::vector::{self, F32x, MAX_LANES};
use crate::simd::Simd;
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

    /// Output size along a side of `n` inputs.
    pub fn out_size(&self, n: usize) -> usize {
        split_rows::out_size(n, self.k, self.pad, self.stride)
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
        let (h, w) = x.dims4().map_or((0, 0), |(_, _, h, w)| (h, w));
        let (k, s, c) = (self.k, self.stride, self.channels);
        let name = || format!("depthwise {k}x{k}/{s} {c} {h}x{w}");
        let macs = || (c * k * k * self.out_size(h) * self.out_size(w)) as u64;
        profile::timed(name, macs, || self.run_unprofiled(x, means))
    }

    fn run_unprofiled(&self, x: &Tensor, means: bool) -> candle_core::Result<(Tensor, Vec<f32>)> {
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
                self.plane(i % c, &src[i * h * w..], h, w, &bases, o, oh, ow);
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

    /// Convolves one channel plane (the first h*w values of `src`, which
    /// may run on into the planes after it) into `out` (oh*ow), bias included.
    #[allow(clippy::too_many_arguments)] // one plane's geometry, passed flat to stay in registers
    fn plane(&self, ch: usize, src: &[f32], h: usize, w: usize, bases: &[usize], out: &mut [MaybeUninit<f32>], oh: usize, ow: usize) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        let wk = &self.weight[ch * k * k..(ch + 1) * k * k];
        let wp = w + 2 * p;
        let hp = h + 2 * p;
        let (src, after) = src.split_at(h * w);
        // Rows zero-padded on all four sides (so every tap of every output
        // lies inside the buffer, and all outputs share one list of tap
        // offsets) and, for stride s, split into s phases (so every tap is a
        // contiguous run). The buffer is reused: its padding rows and slack
        // are cleared each time.
        ROWS.with_borrow_mut(|buf| {
            buf.resize(hp * wp + MAX_LANES, 0.0);
            buf[..p * wp].fill(0.0);
            buf[(p + h) * wp..].fill(0.0);
            for (y, (row, dst)) in src.chunks_exact(w).zip(buf[p * wp..].chunks_exact_mut(wp)).enumerate() {
                // The row ROWS_AHEAD on asked for now (on into the next
                // plane): the copy then reads rows already on their way.
                let ahead = (y + ROWS_AHEAD) * w;
                let next = if ahead < h * w { &src[ahead..] } else { after.get(ahead - h * w..).unwrap_or(&[]) };
                prefetch(&next[..w.min(next.len())]);
                split_row(self.simd, row, p, s, dst);
            }
            let geometry = Plane { rows: hp, wp, bases, k, stride: s, oh, ow };
            convolve_plane(self.simd, &geometry, buf, wk, self.bias[ch], self.silu, out);
        });
    }
}

/// Rows of a plane read ahead of the one being copied. Without, the copy
/// of b3's first stride-2 depthwise layer waited on memory for half its time.
const ROWS_AHEAD: usize = 4;

/// Asks for `values`' cache lines, without waiting for them.
fn prefetch(values: &[f32]) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        // SAFETY: a prefetch of an address inside the slice; it never faults.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr() as *const i8) };
    }
}

thread_local! {
    /// The padded, phase-split copy of the plane being convolved.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The multiply-adds of one plane at a SIMD level, bias and SiLU included.
#[allow(clippy::too_many_arguments)]
fn convolve_plane(simd: Simd, geometry: &Plane, rows_in: &[f32], wk: &[f32], bias: f32, silu: bool, out: &mut [MaybeUninit<f32>]) {
    crate::simd::at_level!(simd, (geometry: &Plane, rows_in: &[f32], wk: &[f32], bias: f32, silu: bool, out: &mut [MaybeUninit<f32>]),
        avx512 => convolve_lanes::<vector::Avx512>(geometry, rows_in, wk, bias, silu, out),
        avx2 => convolve_lanes::<vector::Avx2>(geometry, rows_in, wk, bias, silu, out),
        portable => convolve_lanes::<vector::Portable>(geometry, rows_in, wk, bias, silu, out),
    )
}

/// One plane's shape: input rows (`rows` of `wp` padded, phase-split
/// values, padding rows included), where each kernel column starts in such
/// a row, and the output.
struct Plane<'a> {
    rows: usize,
    wp: usize,
    bases: &'a [usize],
    k: usize,
    stride: usize,
    oh: usize,
    ow: usize,
}

/// Output vectors accumulated side by side: eight independent FMA chains
/// keep both FMA units busy through their latency (four left half of it
/// idle), within AVX2's sixteen registers.
const CHAINS: usize = 8;

/// One output vector: where its taps start in the input rows, and where it goes.
#[derive(Clone, Copy)]
struct Spot {
    input: *const f32,
    output: *mut f32,
}

/// The plane's output vectors in groups of [`CHAINS`], taken across rows so
/// that narrow planes (24 or 47 wide, two to six vectors a row) fill every
/// chain too; each group accumulates all k*k taps in registers and is stored
/// once, SiLU applied on the way out. A row whose width is not a multiple of
/// the vector ends with a vector that overlaps the one before it (the shared
/// columns get the same values twice), so only planes narrower than one
/// vector store partially.
///
/// # Safety
/// The CPU runs `V`'s level.
#[inline(always)]
unsafe fn convolve_lanes<V: F32x>(g: &Plane, rows_in: &[f32], wk: &[f32], bias: f32, silu: bool, out: &mut [MaybeUninit<f32>]) {
    let (k, l) = (g.k, V::LANES);
    assert!(l <= MAX_LANES && g.oh > 0 && g.ow > 0 && wk.len() >= k * k && out.len() >= g.oh * g.ow && g.bases.len() >= k);
    // Every tap of every output row lies inside the padded rows, and every
    // vector load (at most `l` values from a tap's first column) inside the
    // buffer with its slack.
    assert!((g.oh - 1) * g.stride + k <= g.rows && rows_in.len() >= g.rows * g.wp + l);
    assert!(g.bases[..k].iter().all(|&b| b + g.ow <= g.wp));
    let taps: Vec<(usize, f32)> = (0..k * k).map(|t| ((t / k) * g.wp + g.bases[t % k], wk[t])).collect();
    let mut spots = [Spot { input: rows_in.as_ptr(), output: std::ptr::null_mut() }; CHAINS];
    // Lanes of each vector stored: all, but for a plane narrower than one.
    let keep = l.min(g.ow);
    let mut n = 0;
    let base = out.as_mut_ptr() as *mut f32;
    for oy in 0..g.oh {
        let input = rows_in[oy * g.stride * g.wp..].as_ptr();
        let output = base.add(oy * g.ow);
        let mut ox = 0;
        loop {
            // The last vector of a row ends at the row's end.
            let at = if ox + l > g.ow { g.ow.saturating_sub(l) } else { ox };
            spots[n] = Spot { input: input.add(at), output: output.add(at) };
            n += 1;
            if n == CHAINS {
                accumulate::<V, CHAINS>(&spots, &taps, bias, silu, keep);
                n = 0;
            }
            ox = at + l;
            if ox >= g.ow {
                break;
            }
        }
    }
    let mut rest = &spots[..n];
    if rest.len() >= CHAINS / 2 {
        accumulate::<V, { CHAINS / 2 }>(rest, &taps, bias, silu, keep);
        rest = &rest[CHAINS / 2..];
    }
    for spot in rest {
        accumulate::<V, 1>(std::slice::from_ref(spot), &taps, bias, silu, keep);
    }
}

/// `N` output vectors over all taps, the first `keep` lanes of each stored.
///
/// # Safety
/// The CPU runs `V`'s level; every spot's input is valid for a vector at
/// each tap offset and its output for `keep` values.
#[inline(always)]
unsafe fn accumulate<V: F32x, const N: usize>(spots: &[Spot], taps: &[(usize, f32)], bias: f32, silu: bool, keep: usize) {
    let mut acc = [V::splat(bias); N];
    for &(offset, weight) in taps {
        let wv = V::splat(weight);
        for (a, spot) in acc.iter_mut().zip(spots) {
            *a = V::load(spot.input.add(offset)).mul_add(wv, *a);
        }
    }
    if silu {
        vector::silu_each(&mut acc);
    }
    for (a, spot) in acc.into_iter().zip(spots) {
        if keep == V::LANES {
            a.store(spot.output);
        } else {
            let mut last = [0f32; MAX_LANES];
            a.store(last.as_mut_ptr());
            std::ptr::copy_nonoverlapping(last.as_ptr(), spot.output, keep);
        }
    }
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
            (5, 1, 16, 24),
            (5, 2, 47, 32),
            (3, 1, 4, 17),
            (3, 2, 7, 7),
            (5, 1, 7, 14),
            (3, 1, 13, 33),
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
