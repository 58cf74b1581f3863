//! Dense (groups = 1) 2-D convolution on the CPU as one GEMM per image, with
//! bias and optional SiLU fused.
//!
//! candle's conv2d lays im2col out pixel-major, multiplies, then copies the
//! result back to NCHW, and bias and activation are two more passes with two
//! more allocations: for YOLOv8n at 320x256 the GEMM itself was a sixth of
//! the time. Here the weights are the GEMM's left matrix as loaded (O x I*k*k,
//! row-major, BN folded), im2col writes channel-major rows (I*k*k x OH*OW)
//! into a buffer each worker thread keeps, the product lands in NCHW
//! directly, and bias and SiLU follow in one pass while it is hot.
//! 1x1 stride-1 convolutions skip im2col: the input already is that matrix.
//! Three more copies are folded in: a concatenated input is given as its
//! parts (one GEMM per part into the same output), a squeeze-excite gate
//! scales the weights' input columns instead of the activations, and a
//! residual is added in the output pass.

use super::activation::silu_inplace;
use super::cpu::cpu_f32;
use candle_core::Tensor;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;
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

/// Convolutions with fewer multiply-adds run on one thread: waking the
/// others costs more than it saves.
const PAR_MIN_MACS: usize = 1 << 20;

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
        self.run(&[x], None, None)
    }

    fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.pad - self.k) / self.stride + 1
    }

    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Writes the column matrix of output rows `oys` of one image into
    /// `cols`: (c*k*k) x (rows * ow), channel-major.
    fn im2col(&self, src: &[f32], h: usize, w: usize, oys: Range<usize>, ow: usize, cols: &mut [f32]) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        let n = oys.len() * ow;
        let fill = |r: usize, row: &mut [f32]| {
            let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            let plane = &src[c * h * w..(c + 1) * h * w];
            // ox range whose input column ox*s + kx - p lies inside the row.
            let lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) }.min(ow);
            let hi = if w + p > kx { ((w + p - kx - 1) / s + 1).min(ow) } else { 0 }.max(lo);
            for (i, oy) in oys.clone().enumerate() {
                let out = &mut row[i * ow..(i + 1) * ow];
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
        cols.chunks_mut(n).enumerate().for_each(|(r, row)| fill(r, row));
    }

    /// `act(bias + W' * concat(parts)) + residual` for NCHW inputs: `parts`
    /// are consecutive slices of the input channels (so a concatenation is
    /// never materialised), `gate` (N, I) scales input channels per image
    /// (squeeze-excite, folded into a copy of the weights), `residual` has the
    /// output's shape and is added after the activation.
    pub fn run(&self, parts: &[&Tensor], gate: Option<&Tensor>, residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
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
        let mut scaled = Vec::new();
        for b in 0..batch {
            let weight: &[f32] = match &gate {
                Some(g) => {
                    self.scale_weight(&g[b * self.in_channels..(b + 1) * self.in_channels], &mut scaled);
                    &scaled
                }
                None => &self.weight,
            };
            let imgs: Vec<(&[f32], usize)> =
                views.iter().zip(&channels).map(|(v, &c)| (&v.slice()[b * c * h * w..(b + 1) * c * h * w], c)).collect();
            let res = res_view.as_ref().map(|r| &r.slice()[b * o * n..(b + 1) * o * n]);
            // SAFETY: image b's o*n block lies inside the allocation.
            let out = OutPtr(unsafe { out.as_mut_ptr().add(b * o * n) });
            let band = |oys: Range<usize>| self.band(weight, &imgs, h, w, oys, oh, ow, out, res);
            // One parallel region per convolution: each thread convolves a band
            // of output rows start to end (im2col, GEMM, bias/SiLU/residual),
            // with its own columns buffer. Small ones stay on this thread.
            let threads = rayon::current_num_threads();
            let bands = threads.min(oh);
            if threads > 1 && bands > 1 && o * n * self.in_channels * self.k * self.k >= PAR_MIN_MACS {
                let per = oh.div_ceil(bands);
                (0..oh.div_ceil(per)).into_par_iter().for_each(|i| band(i * per..((i + 1) * per).min(oh)));
            } else {
                band(0..oh);
            }
        }
        drop(views);
        // SAFETY: every band wrote all o rows of its columns and the bands
        // cover every output row of every image.
        unsafe { out.set_len(batch * o * n) };
        Tensor::from_vec(out, (batch, o, oh, ow), first.device())
    }

    /// The weights with input channel c scaled by `g[c]`.
    fn scale_weight(&self, g: &[f32], out: &mut Vec<f32>) {
        let per = self.k * self.k;
        out.clear();
        out.extend_from_slice(&self.weight);
        for row in out.chunks_mut(self.in_channels * per) {
            for (taps, &gc) in row.chunks_mut(per).zip(g) {
                taps.iter_mut().for_each(|v| *v *= gc);
            }
        }
    }

    /// Output rows `oys` (all channels) of one image: for each input part,
    /// its column matrix times its weight columns, accumulated; then bias,
    /// SiLU (if any) and the residual over the band while it is in cache.
    #[allow(clippy::too_many_arguments)]
    fn band(
        &self,
        weight: &[f32],
        imgs: &[(&[f32], usize)],
        h: usize,
        w: usize,
        oys: Range<usize>,
        oh: usize,
        ow: usize,
        out: OutPtr,
        residual: Option<&[f32]>,
    ) {
        let per = self.k * self.k;
        let (o, row, n) = (self.out_channels, self.in_channels * per, oh * ow);
        let (col0, nb) = (oys.start * ow, oys.len() * ow);
        let mut c_off = 0;
        for &(img, c) in imgs {
            let kk = c * per;
            let gemm_into = |cols: *const f32, cols_rs: usize| {
                debug_assert!(weight.len() == o * row && c_off + c <= self.in_channels);
                // SAFETY: `out` is o x n row-major and this band writes only its
                // columns [col0, col0 + nb) (bands are disjoint); the weight
                // block (o x kk at column c_off*per of an o x row matrix) and
                // the kk x nb column block (row stride cols_rs) are in bounds.
                unsafe {
                    gemm::gemm(
                        o,
                        nb,
                        kk,
                        out.0.add(col0),
                        1,
                        n as isize,
                        c_off > 0, // the first part writes without reading
                        weight.as_ptr().add(c_off * per),
                        1,
                        row as isize,
                        cols,
                        1,
                        cols_rs as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            };
            if self.is_pointwise() {
                gemm_into(img[col0..].as_ptr(), n); // the input is its own column matrix
            } else {
                COLUMNS.with_borrow_mut(|cols| {
                    cols.resize(kk * nb, 0.0);
                    self.im2col(img, h, w, oys.clone(), ow, &mut cols[..kk * nb]);
                    gemm_into(cols.as_ptr(), nb);
                });
            }
            c_off += c;
        }
        for r in 0..o {
            // SAFETY: row r's band columns, written by this band alone.
            let seg = unsafe { std::slice::from_raw_parts_mut(out.0.add(r * n + col0), nb) };
            let bias = self.bias[r];
            seg.iter_mut().for_each(|v| *v += bias);
            if self.silu {
                silu_inplace(seg);
            }
            if let Some(res) = residual {
                seg.iter_mut().zip(&res[r * n + col0..r * n + col0 + nb]).for_each(|(d, x)| *d += x);
            }
        }
    }
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

    /// Parts, gate and residual equal concatenating, scaling and adding first.
    #[test]
    fn parts_gate_residual_match_the_plain_ops() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (k, s, silu) in [(1, 1, true), (3, 1, false), (3, 2, true)] {
            let (b, h, w, o) = (2, 41, 37, 32); // k 3: enough work for parallel bands
            let a = Tensor::randn(0f32, 1.0, (b, 3, h, w), &dev)?;
            let c = Tensor::randn(0f32, 1.0, (b, 4, h, w), &dev)?;
            let x = Tensor::cat(&[&a, &c], 1)?;
            let wt = Tensor::randn(0f32, 0.5, (o, 7, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, o, &dev)?;
            let gate = Tensor::rand(0f32, 1.0, (b, 7), &dev)?;
            let conv = GemmConv2d::new(&wt, &bias, s, k / 2, silu)?;
            let plain = conv.forward(&x.broadcast_mul(&gate.reshape((b, 7, 1, 1))?)?)?;
            let residual = Tensor::randn(0f32, 1.0, plain.dims(), &dev)?;
            let want = (&plain + &residual)?;
            let got = conv.run(&[&a, &c], Some(&gate), Some(&residual))?;
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "k{k} s{s}: {diff}");
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
