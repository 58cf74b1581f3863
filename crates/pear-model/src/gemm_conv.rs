//! Dense (groups = 1) 2-D convolution on the CPU as one GEMM per image, with
//! bias and optional SiLU fused.
//!
//! candle's conv2d lays im2col out pixel-major, multiplies, then copies the
//! result back to NCHW, and bias and activation are two more passes with two
//! more allocations: for YOLOv8n at 320x256 the GEMM itself was a sixth of
//! the time. Here the weights are the GEMM's left matrix as loaded (O x I*k*k,
//! row-major, BN folded) and im2col never exists: the image is laid out once
//! as padded phase planes (`phase_planes`), where every row of the column
//! matrix (one input channel at one tap) is a contiguous run the GEMM reads
//! where it lies, and the product, computed at the planes' width, is cut to
//! NCHW as it leaves. Bias and SiLU are applied as each tile leaves the
//! registers. 1x1 stride-1 convolutions need no planes: the input already is
//! that matrix.
//! Three more copies are folded in: a concatenated input is given as its
//! parts (one GEMM per part into the same output), a squeeze-excite gate
//! scales the weights' input columns (or, for a 1x1 kernel on a small
//! image, the input as the GEMM packs it) instead of the activations, and
//! a residual is added as each tile leaves the registers.
//!
//! The GEMM is ours (`sgemm`): the weights are packed once at load for the
//! active SIMD level, the column matrix is read straight from the image (or
//! its phase planes) a block at a time, and bias, SiLU and the residual are
//! its epilogue.

use super::cpu::cpu_f32;
use super::split_rows::{self, phase_rows, split_bases, split_row};
use crate::profile;
use crate::sgemm::vector::{self, F32x};
use crate::sgemm::{self, Columns, Epilogue, PackedWeights};
use crate::simd::Simd;
use crate::winograd::{self, Winograd};
use candle_core::Tensor;
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// Folded weights `weight[o][c][ky][kx]`, `bias[o]`.
#[derive(Debug, Clone)]
pub struct GemmConv2d {
    /// The weights as the GEMM's packed left matrix, for one SIMD level.
    packed: Arc<PackedWeights>,
    bias: Arc<Vec<f32>>,
    in_channels: usize,
    out_channels: usize,
    k: usize,
    stride: usize,
    pad: usize,
    silu: bool,
    /// The same weights for F(2x2, 3x3), for a 3x3 kernel at stride 1 and padding 1.
    winograd: Option<Arc<Winograd>>,
}

/// Convolutions with fewer multiply-adds run on one thread: waking the
/// others costs more than it saves. Measured on yolov8n (AVX-512, 2
/// threads): 2^18 beats 2^20 by 1.11x, 2^22 loses 1.10x.
const PAR_MIN_MACS: usize = 1 << 18;

/// Gated 1x1 convolutions with at most this many pixels per output channel
/// scale their input as it is packed rather than the weights.
const GATE_INPUT_MAX: usize = 4;

impl GemmConv2d {
    /// `weight` has shape (O, I, k, k), `bias` (O).
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, pad: usize, silu: bool) -> candle_core::Result<Self> {
        Self::at_level(Simd::active(), weight, bias, stride, pad, silu)
    }

    /// As `new`, for a given SIMD level (one this CPU runs).
    pub fn at_level(simd: Simd, weight: &Tensor, bias: &Tensor, stride: usize, pad: usize, silu: bool) -> candle_core::Result<Self> {
        let (o, i, kh, kw) = weight.dims4()?;
        if kh != kw || stride == 0 {
            candle_core::bail!("gemm conv needs a square kernel and stride >= 1, got {:?} stride {stride}", weight.dims());
        }
        let weight = weight.flatten_all()?.to_vec1::<f32>()?;
        let winograd = (kh == 3 && stride == 1 && pad == 1 && o > 0 && i > 0).then(|| Arc::new(Winograd::new(simd, &weight, o, i)));
        Ok(GemmConv2d {
            packed: Arc::new(PackedWeights::pack(simd, &weight, o, i * kh * kw)),
            bias: Arc::new(bias.flatten_all()?.to_vec1::<f32>()?),
            in_channels: i,
            out_channels: o,
            k: kh,
            stride,
            pad,
            silu,
            winograd,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(&[x], None, None)
    }

    /// The width of a phase plane's rows for an image `w` wide: the padded
    /// row's columns of one stride phase, the most any phase has.
    fn plane_width(&self, w: usize) -> usize {
        (w + 2 * self.pad).div_ceil(self.stride)
    }

    /// Output size along a side of `n` inputs.
    fn out_size(&self, n: usize) -> usize {
        split_rows::out_size(n, self.k, self.pad, self.stride)
    }

    /// The Winograd weights, when this call runs by them: one ungated
    /// input, an output at least `WINOGRAD_MIN_WIDTH` wide.
    fn winograd_for(&self, parts: usize, gated: bool, ow: usize) -> Option<&Winograd> {
        self.winograd.as_deref().filter(|_| !gated && parts == 1 && ow >= WINOGRAD_MIN_WIDTH)
    }

    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// `act(bias + W' * concat(parts)) + residual` for NCHW inputs: `parts`
    /// are consecutive slices of the input channels (so a concatenation is
    /// never materialised), `gate` (N, I) scales input channels per image
    /// (squeeze-excite, folded into a copy of the weights), `residual` has the
    /// output's shape and is added after the activation.
    pub fn run(&self, parts: &[&Tensor], gate: Option<&Tensor>, residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (h, w) = parts.first().and_then(|p| p.dims4().ok()).map_or((0, 0), |(_, _, h, w)| (h, w));
        let name = || {
            let (k, s, i, o) = (self.k, self.stride, self.in_channels, self.out_channels);
            let winograd = self.winograd_for(parts.len(), gate.is_some(), self.out_size(w)).is_some();
            let how = [(winograd, " winograd"), (gate.is_some(), " gated"), (residual.is_some(), " +residual")];
            format!("conv {k}x{k}/{s} {i}->{o} {h}x{w}{}", how.iter().filter(|h| h.0).map(|h| h.1).collect::<String>())
        };
        let macs = || (self.out_channels * self.in_channels * self.k * self.k * self.out_size(h) * self.out_size(w)) as u64;
        profile::timed(name, macs, || self.run_unprofiled(parts, gate, residual))
    }

    fn run_unprofiled(&self, parts: &[&Tensor], gate: Option<&Tensor>, residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let Some(first) = parts.first() else { candle_core::bail!("conv needs an input") };
        let (batch, _, h, w) = first.dims4()?;
        let mut channels = Vec::with_capacity(parts.len());
        for p in parts {
            let (b, c, ph, pw) = p.dims4()?;
            if (b, ph, pw) != (batch, h, w) {
                candle_core::bail!("conv input parts disagree: {:?} vs {:?}", p.dims(), first.dims());
            }
            if c == 0 {
                candle_core::bail!("conv input part with no channels: {:?}", p.dims());
            }
            channels.push(c);
        }
        if channels.iter().sum::<usize>() != self.in_channels {
            candle_core::bail!("conv expects {} input channels, got {channels:?}", self.in_channels);
        }
        if h + 2 * self.pad < self.k || w + 2 * self.pad < self.k {
            candle_core::bail!("conv input {h}x{w} smaller than its {0}x{0} kernel", self.k);
        }
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let (n, o) = (oh * ow, self.out_channels);
        let parts: Vec<Tensor> = parts.iter().map(|p| p.contiguous()).collect::<candle_core::Result<_>>()?;
        let gate = gate.map(|g| g.flatten_all()?.to_vec1::<f32>()).transpose()?;
        if gate.as_ref().is_some_and(|g| g.len() != batch * self.in_channels) {
            candle_core::bail!("conv gate must have {batch}x{} values", self.in_channels);
        }
        let residual = residual.map(|r| r.contiguous()).transpose()?;
        if let Some(r) = &residual {
            if r.dims() != [batch, o, oh, ow] {
                candle_core::bail!("residual {:?} does not match conv output {:?}", r.dims(), [batch, o, oh, ow]);
            }
        }
        let views = parts.iter().map(cpu_f32).collect::<candle_core::Result<Vec<_>>>()?;
        let res_view = residual.as_ref().map(cpu_f32).transpose()?;
        // Not zeroed: the first GEMM of every band overwrites its columns
        // (zeroing cost 10 % of a b3 forward), and nothing reads them before.
        let mut out: Vec<f32> = Vec::with_capacity(batch * o * n);
        let mut gated = None;
        for b in 0..batch {
            let imgs: Vec<(&[f32], usize)> =
                views.iter().zip(&channels).map(|(v, &c)| (&v.slice()[b * c * h * w..(b + 1) * c * h * w], c)).collect();
            let res = res_view.as_ref().map(|r| &r.slice()[b * o * n..(b + 1) * o * n]);
            // SAFETY: image b's o*n block lies inside the allocation.
            let out = OutPtr(unsafe { out.as_mut_ptr().add(b * o * n) });
            let gate = gate.as_ref().map(|g| &g[b * self.in_channels..(b + 1) * self.in_channels]);
            // The gate scales either the weights' input columns, once per
            // image and serially, or the input's rows as the GEMM packs them,
            // in parallel, a multiply per value copied. A 1x1 kernel whose
            // image is small next to its weights takes the second way (b3's
            // last stages: 0.12-0.36 ms a layer less); a large image the
            // first (its first stages: 0.1-0.6 ms less). Wider kernels read
            // their input in place, unpacked: always the first.
            let gate_input = self.is_pointwise() && n <= GATE_INPUT_MAX * o;
            let weights: &PackedWeights = match gate {
                Some(g) if !gate_input => {
                    let gated = gated.get_or_insert_with(|| PackedWeights::pack(self.packed.simd(), &[], 0, 0));
                    self.packed.scaled_into(self.k * self.k, g, gated);
                    gated
                }
                _ => &self.packed,
            };
            // Kernels wider than 1x1 (and strided ones) read the image as
            // padded phase planes, each band laying out the rows it reads.
            let source = if self.is_pointwise() {
                Source::Parts { imgs: &imgs, gate: gate.filter(|_| gate_input) }
            } else if let Some(wg) = self.winograd_for(imgs.len(), gate.is_some(), ow) {
                Source::Winograd { wg, img: imgs[0].0, h, w }
            } else {
                Source::Planes { imgs: &imgs, h, w }
            };
            let dest = Dest { oh, ow, out, residual: res };
            let band = |oys: Range<usize>, channels: Range<usize>| self.band(weights, source, oys, channels, dest);
            // One parallel region per convolution: each thread convolves a band
            // of output rows start to end (phase planes, GEMM, bias/SiLU/residual),
            // with its own buffers. Small ones stay on this thread.
            let threads = rayon::current_num_threads();
            let bands = threads.min(oh);
            let parallel = threads > 1 && o * n * self.in_channels * self.k * self.k >= PAR_MIN_MACS;
            let mr = weights.mr();
            if parallel && o >= n && o >= 2 * mr {
                // More output channels than pixels: the weights outweigh the
                // image, and a band of rows would read all of them on every
                // thread. Each thread takes whole panels of the channels
                // instead, over the whole image: yolov8n and b3 1.02x faster
                // (their 20x16, 10x8 and 16x24 layers split so).
                let per = o.div_ceil(threads).next_multiple_of(mr);
                (0..o.div_ceil(per)).into_par_iter().for_each(|i| band(0..oh, i * per..((i + 1) * per).min(o)));
            } else if parallel && bands > 1 {
                // Winograd's bands are whole tiles: an even number of rows.
                let per = oh.div_ceil(bands).next_multiple_of(if matches!(source, Source::Winograd { .. }) { 2 } else { 1 });
                (0..oh.div_ceil(per)).into_par_iter().for_each(|i| band(i * per..((i + 1) * per).min(oh), 0..o));
            } else {
                band(0..oh, 0..o);
            }
        }
        drop(views);
        // SAFETY: every band wrote all o rows of its columns and the bands
        // cover every output row of every image.
        unsafe { out.set_len(batch * o * n) };
        Tensor::from_vec(out, (batch, o, oh, ow), first.device())
    }

    /// Plane rows `rows` of the image as phase planes, into `dst`: every
    /// input channel zero-padded by `pad` on all four sides and split into
    /// stride x stride planes, plane (a, b) holding the padded pixels
    /// (s*i + a, s*j + b). Output pixel (oy, ox) at tap (ky, kx) then reads
    /// plane (ky % s, kx % s) at row oy + ky / s, column ox + kx / s: with
    /// the output laid out at the planes' width `wq` (`wq - ow` columns of
    /// each row computed and dropped), each tap's row of the column matrix
    /// is one contiguous run of a plane. Rows past the padded image are zeros.
    fn phase_planes<'d>(&self, imgs: &[(&[f32], usize)], h: usize, w: usize, rows: Range<usize>, dst: &'d mut Vec<f32>) -> Phases<'d> {
        let (s, p, simd) = (self.stride, self.pad, self.packed.simd());
        let wp = w + 2 * p;
        let wq = self.plane_width(w);
        let plane = rows.len() * wq;
        let len = self.in_channels * s * s * plane;
        // Grown, never shrunk, and not zeroed: every value is written once below.
        if dst.len() < len {
            dst.resize(len, 0.0);
        }
        // Both networks' strides, each plane row a few vector operations.
        if s <= 2 {
            phase_rows(simd, imgs, (h, w), p, s, rows, (wq, plane), &mut dst[..len]);
            return Phases { data: &dst[..len], wq, plane };
        }
        // Any other: each padded row split once, then copied to its planes.
        // Where each column phase starts in a split row: kernel column b's base, b < s.
        let phase_at = split_bases(s, s, wp);
        let sources = imgs.iter().flat_map(|(img, c)| img[..c * h * w].chunks_exact(h * w));
        SPLIT.with_borrow_mut(|split| {
            split.resize(wp, 0.0);
            for (planes, src) in dst[..len].chunks_exact_mut(s * s * plane).zip(sources) {
                // Padded row s*i + a is row i of planes (a, 0..s): split once, written to each.
                for (li, i) in rows.clone().enumerate() {
                    for a in 0..s {
                        let y = (s * i + a).checked_sub(p).filter(|&y| y < h);
                        if let Some(y) = y {
                            split_row(simd, &src[y * w..(y + 1) * w], p, s, split);
                        }
                        for (b, &from) in phase_at.iter().enumerate() {
                            let cols = (wp - b).div_ceil(s);
                            let row = &mut planes[(a * s + b) * plane + li * wq..][..wq];
                            let (vals, zeros) = row.split_at_mut(cols);
                            match y {
                                Some(_) => vals.copy_from_slice(&split[from..from + cols]),
                                None => vals.fill(0.0),
                            }
                            zeros.fill(0.0);
                        }
                    }
                }
            }
        });
        Phases { data: &dst[..len], wq, plane }
    }

    /// Output rows `oys` of output channels `channels` of one image: the
    /// GEMM of `weights` (this convolution's, gated or not) with those rows'
    /// column matrix, bias, SiLU and the residual applied as it goes.
    fn band(&self, weights: &PackedWeights, source: Source, oys: Range<usize>, channels: Range<usize>, dest: Dest) {
        let Dest { oh, ow, out, residual } = dest;
        let n = oh * ow;
        match source {
            Source::Parts { imgs, gate } => {
                let (col0, nb) = (oys.start * ow, oys.len() * ow);
                let cols = PartColumns { imgs, first: col0, gate };
                let epi = Epilogue { bias: &self.bias, silu: self.silu, residual: residual.map(|r| r[col0..].as_ptr()) };
                // SAFETY: `out` is o x n row-major; this band writes only its
                // columns [col0, col0 + nb) of each row (bands are disjoint),
                // and the residual is read in the same layout.
                unsafe { sgemm::gemm_rows(weights, channels, &cols, nb, out.0.add(col0), n, &epi) }
            }
            Source::Winograd { wg, img, h, w } => {
                let dest = winograd::Out { out: out.0, bias: &self.bias, silu: self.silu, residual };
                wg.band(img, (h, w), oys, channels, &dest);
            }
            Source::Planes { imgs, h, w } => {
                // Rows a few at a time, so that the product at the planes'
                // width stays in L2 until it is cut to the output.
                let wq = self.plane_width(w);
                let per = (WIDE_MAX / (channels.len() * wq).max(1)).max(MIN_PIXELS.div_ceil(wq));
                for first in oys.clone().step_by(per) {
                    let oys = first..(first + per).min(oys.end);
                    self.plane_band(weights, (imgs, h, w), oys, channels.clone(), dest);
                }
            }
        }
    }

    /// As `band`, for a kernel that reads phase planes: lays out the rows
    /// `oys` read, multiplies into this thread's buffer at the planes'
    /// width, and cuts each row to the output's.
    fn plane_band(
        &self,
        weights: &PackedWeights,
        image: (&[(&[f32], usize)], usize, usize),
        oys: Range<usize>,
        channels: Range<usize>,
        dest: Dest,
    ) {
        let ((imgs, h, w), Dest { oh, ow, out, residual }) = (image, dest);
        let n = oh * ow;
        PLANES.with_borrow_mut(|planes| {
            // This band's plane rows: its output rows, the (k - 1) / s
            // rows below them that taps reach, and one more for the runs
            // of the last row, which end up to k / s values past it.
            let rows = oys.start..oys.end + (self.k - 1) / self.stride + 1;
            let cols = PlaneColumns { conv: self, ph: self.phase_planes(imgs, h, w, rows, planes) };
            let wq = cols.ph.wq;
            // The product at the planes' width, into this thread's
            // buffer; then each row's first ow pixels into the output,
            // the residual added on the way.
            let nb = oys.len() * wq;
            let epi = Epilogue { bias: &self.bias, silu: self.silu, residual: None };
            WIDE.with_borrow_mut(|wide| {
                // Grown, never shrunk; only this band's channels are written and read.
                if wide.len() < self.out_channels * nb {
                    wide.resize(self.out_channels * nb, 0.0);
                }
                // SAFETY: the buffer holds o x nb.
                unsafe { sgemm::gemm_rows(weights, channels.clone(), &cols, nb, wide.as_mut_ptr(), nb, &epi) };
                for (o, rows) in channels.clone().zip(wide[channels.start * nb..].chunks_exact(nb)) {
                    let at = o * n + oys.start * ow;
                    // SAFETY: rows oys of channel o lie in this band's part of `out`.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), oys.len() * ow) };
                    cut_rows(self.packed.simd(), (rows, wq), (dst, ow), residual.map(|r| &r[at..at + oys.len() * ow]));
                }
            })
        })
    }
}

/// `src`'s rows, `wq` apart, cut to their first `ow` values and written
/// one after another into all of `dst`, plus `residual` (laid out as
/// `dst`) if given. In whole vectors and one masked one a row: a memcpy
/// call per row of 10-80 values was 4 % of yolov8n's samples under perf
/// (this: yolov8n 0.2-0.9 % faster).
fn cut_rows(simd: Simd, (src, wq): (&[f32], usize), (dst, ow): (&mut [f32], usize), residual: Option<&[f32]>) {
    let rows = dst.len() / ow.max(1);
    assert!(ow > 0 && ow <= wq && rows * ow == dst.len() && src.len() >= rows * wq, "cut_rows: whole rows of src into dst");
    assert!(residual.is_none_or(|r| r.len() == dst.len()), "the residual is laid out as the output");
    crate::simd::at_level!(simd, (src: &[f32], wq: usize, dst: &mut [f32], ow: usize, residual: Option<&[f32]>),
        avx512 => cut_rows_with::<vector::Avx512>(src, wq, dst, ow, residual),
        avx2 => cut_rows_with::<vector::Avx2>(src, wq, dst, ow, residual),
        portable => cut_rows_with::<vector::Portable>(src, wq, dst, ow, residual),
    )
}

/// `cut_rows` at `V`'s level.
///
/// # Safety
/// The CPU runs `V`'s level; the slices are as `cut_rows` checks.
#[inline(always)]
unsafe fn cut_rows_with<V: F32x>(src: &[f32], wq: usize, dst: &mut [f32], ow: usize, residual: Option<&[f32]>) {
    let l = V::LANES;
    for (i, row) in src.chunks_exact(wq).take(dst.len() / ow).enumerate() {
        for j in (0..ow).step_by(l) {
            let (lanes, at) = ((ow - j).min(l), i * ow + j);
            let load = |p: *const f32| if lanes == l { V::load(p) } else { V::load_part(p, lanes) };
            let mut v = load(row.as_ptr().add(j));
            if let Some(r) = residual {
                v = v.add(load(r.as_ptr().add(at)));
            }
            match lanes == l {
                true => v.store(dst.as_mut_ptr().add(at)),
                false => v.store_part(dst.as_mut_ptr().add(at), lanes),
            }
        }
    }
}

/// Narrowest output on which 3x3 stride-1 kernels run by Winograd:
/// narrower, its products have too few tiles a row to fill the GEMM's panels.
const WINOGRAD_MIN_WIDTH: usize = 16;

/// Floats of a band's product at the planes' width: 512 KiB, in L2 with the planes.
const WIDE_MAX: usize = 128 << 10;
/// Pixels a band's GEMM computes at least, however many channels.
const MIN_PIXELS: usize = 512;

thread_local! {
    /// A band's phase planes, reused by every convolution on this thread.
    static PLANES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// One split image row, while the planes are laid out.
    static SPLIT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A band's product at the phase planes' width, before its rows are cut to the output's.
    static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Some plane rows of an image as `GemmConv2d::phase_planes` lays them
/// out: per input channel, stride x stride planes of `plane` values, rows
/// `wq` wide.
struct Phases<'a> {
    data: &'a [f32],
    wq: usize,
    plane: usize,
}

/// The image a convolution reads: its parts as given (1x1 kernels, whose
/// column matrix the image already is) with the gate on its channels, or
/// all channels to be laid out as phase planes, band by band.
#[derive(Clone, Copy)]
enum Source<'a> {
    Parts {
        imgs: &'a [(&'a [f32], usize)],
        gate: Option<&'a [f32]>,
    },
    Planes {
        imgs: &'a [(&'a [f32], usize)],
        h: usize,
        w: usize,
    },
    /// A 3x3 stride-1 kernel's image, by Winograd's F(2x2, 3x3).
    Winograd {
        wg: &'a Winograd,
        img: &'a [f32],
        h: usize,
        w: usize,
    },
}

/// A band's column matrix for a 1x1 stride-1 kernel: row r is input channel
/// r (counted across the parts) from the band's first pixel `first` on,
/// times `gate[r]` when gated.
struct PartColumns<'a> {
    imgs: &'a [(&'a [f32], usize)],
    first: usize,
    gate: Option<&'a [f32]>,
}

impl Columns for PartColumns<'_> {
    fn scale(&self) -> Option<&[f32]> {
        self.gate
    }
    fn rows<'s>(&'s self, n: usize, out: &mut Vec<&'s [f32]>) {
        for &(img, ch) in self.imgs {
            let plane = img.len() / ch;
            out.extend(img.chunks_exact(plane).map(|c| &c[self.first..self.first + n]));
        }
    }
}

/// A band's column matrix from its phase planes: row r is input channel
/// r / (k*k) at tap (r / k % k, r % k), sampled at every pixel of the
/// band's output rows at the planes' width.
struct PlaneColumns<'a> {
    conv: &'a GemmConv2d,
    ph: Phases<'a>,
}

impl Columns for PlaneColumns<'_> {
    fn compact(&self) -> bool {
        true
    }
    fn rows<'s>(&'s self, n: usize, out: &mut Vec<&'s [f32]>) {
        let (k, s, ph) = (self.conv.k, self.conv.stride, &self.ph);
        // Tap (ky, kx) of a channel reads plane (ky % s, kx % s) from row
        // ky / s, column kx / s on.
        for planes in ph.data.chunks_exact(s * s * ph.plane) {
            for ky in 0..k {
                for kx in 0..k {
                    let at = ((ky % s) * s + kx % s) * ph.plane + (ky / s) * ph.wq + kx / s;
                    out.push(&planes[at..at + n]);
                }
            }
        }
    }
}

/// Where bands write: the output (o x oh*ow per image) and the residual
/// added to it, in the same layout.
#[derive(Clone, Copy)]
struct Dest<'a> {
    oh: usize,
    ow: usize,
    out: OutPtr,
    residual: Option<&'a [f32]>,
}

/// The output buffer, shared by bands that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: bands write disjoint columns of the buffer and the caller waits for
// all of them before touching it again.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn levels() -> impl Iterator<Item = Simd> {
        Simd::ALL.into_iter().filter(|s| s.runs_here())
    }

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
            // Wider than one NC block of columns, K over one KC block, M not a tile multiple.
            (1, 40, 13, 3, 1, 1, 40, 31, true),
            (1, 24, 20, 3, 2, 1, 67, 70, false),
            // Parallel bands whose plane rows overlap by more than one row, and stride 3.
            (1, 8, 16, 5, 2, 2, 50, 45, true),
            (1, 12, 16, 3, 3, 1, 61, 40, false),
            // More channels than pixels: split by channels, into uneven parts.
            (1, 64, 100, 3, 1, 1, 6, 5, true),
            (2, 96, 100, 1, 1, 0, 7, 9, false),
            (1, 32, 72, 3, 2, 1, 9, 11, true),
            // Bands cut into several runs of rows whose product stays in L2.
            (1, 4, 64, 3, 2, 1, 90, 200, true),
            (1, 3, 96, 5, 1, 2, 30, 120, false),
        ];
        // On one thread, and on three (parallel bands; parts of 40, 40 and 20 channels).
        let pools = [1, 3].map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap());
        let runs = pools.iter().flat_map(|pool| levels().flat_map(move |l| cases.map(|c| (pool, l, c))));
        for (pool, simd, (b, i, o, k, s, p, h, w, silu)) in runs {
            let x = Tensor::randn(0f32, 1.0, (b, i, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 0.5, (o, i, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, o, &dev)?;
            let conv = GemmConv2d::at_level(simd, &wt, &bias, s, p, silu)?;
            let ours = pool.install(|| conv.forward(&x))?;
            let mut theirs = x.conv2d(&wt, p, s, 1, 1)?.broadcast_add(&bias.reshape((1, o, 1, 1))?)?;
            if silu {
                theirs = candle_nn::ops::silu(&theirs)?;
            }
            assert_eq!(ours.dims(), theirs.dims(), "{simd} b{b} i{i} o{o} k{k} s{s} p{p} {h}x{w}");
            let diff = (ours - theirs)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let threads = pool.current_num_threads();
            assert!(diff < 1e-4, "{threads} threads {simd} b{b} i{i} o{o} k{k} s{s} p{p} {h}x{w}: max diff {diff}");
        }
        Ok(())
    }

    /// Parts, gate and residual equal concatenating, scaling and adding first.
    #[test]
    fn parts_gate_residual_match_the_plain_ops() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let shapes = [(1, 1, true), (3, 1, false), (3, 2, true)];
        // k 3: enough work for parallel bands of rows, and in 6x7 for parts of the channels.
        let sizes = [(41, 37, 32), (6, 7, 128)];
        let runs = levels().flat_map(|l| shapes.iter().flat_map(move |&c| sizes.map(|z| (l, c, z))));
        for (simd, (k, s, silu), (h, w, o)) in runs {
            let b = 2;
            let a = Tensor::randn(0f32, 1.0, (b, 3, h, w), &dev)?;
            let c = Tensor::randn(0f32, 1.0, (b, 4, h, w), &dev)?;
            let x = Tensor::cat(&[&a, &c], 1)?;
            let wt = Tensor::randn(0f32, 0.5, (o, 7, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, o, &dev)?;
            let gate = Tensor::rand(0f32, 1.0, (b, 7), &dev)?;
            let conv = GemmConv2d::at_level(simd, &wt, &bias, s, k / 2, silu)?;
            let plain = conv.forward(&x.broadcast_mul(&gate.reshape((b, 7, 1, 1))?)?)?;
            let residual = Tensor::randn(0f32, 1.0, plain.dims(), &dev)?;
            let want = (&plain + &residual)?;
            let got = pool.install(|| conv.run(&[&a, &c], Some(&gate), Some(&residual)))?;
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{simd} k{k} s{s} {h}x{w} o{o}: {diff}");
            assert!(conv.run(&[&a], None, None).is_err(), "missing channels are an error");
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
