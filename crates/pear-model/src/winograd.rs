//! 3x3 stride-1 convolutions by Winograd's F(2x2, 3x3): each 2x2 block of
//! output pixels comes from a 4x4 block ("tile") of padded input in 16
//! multiply-adds per channel pair instead of 36.
//!
//! The weights are transformed once at load (U = G g G^T, 4x4 per channel
//! pair) and packed as 16 O x C matrices, one per point of the 4x4 tile.
//! Per band of tile rows, the input's tiles are transformed (V = B^T d B,
//! adds only, read from the image's stride-2 phase planes, where one
//! tile's column of a 4x4 block is a vector across neighbouring tiles), the
//! 16 products M = U V run on our sgemm, and each 4x4 block of M becomes its
//! 2x2 output pixels (Y = A^T M A), with bias, SiLU and the residual added
//! on the way out. yolov8n spends half its multiply-adds in such
//! convolutions.

use crate::sgemm::vector::{self, F32x, MAX_LANES};
use crate::sgemm::{self, Compact, Epilogue, PackedWeights, RowMajor};
use crate::simd::Simd;
use crate::split_rows::phase_rows;
use std::cell::RefCell;
use std::ops::Range;

/// A 3x3 convolution's weights transformed for F(2x2, 3x3).
#[derive(Debug)]
pub(crate) struct Winograd {
    simd: Simd,
    /// U at point xi (= 4i + j of the 4x4 tile) as an O x C matrix.
    u: Vec<PackedWeights>,
    /// The products' bias: none (the convolution's is added after A^T M A).
    zeros: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
}

/// Where a band's output goes: the image's O x H*W output, its bias, its
/// SiLU, and the residual added after it (laid out as the output).
pub(crate) struct Out<'a> {
    pub out: *mut f32,
    pub bias: &'a [f32],
    pub silu: bool,
    pub residual: Option<&'a [f32]>,
}

/// Floats of a step's transformed input and product together (1 MiB):
/// tile rows are taken a few at a time so that both stay in L2.
const STEP_MAX: usize = 256 << 10;

thread_local! {
    /// A step's stride-2 phase planes of the padded input.
    static PLANES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A step's transformed tiles: 16 C x T matrices, rows `ld` apart.
    static TILES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A step's products: 16 O x T matrices, rows `ld` apart.
    static PRODUCTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Winograd {
    /// From `weight[o][c][ky][kx]` (O x C x 3 x 3, row-major).
    pub fn new(simd: Simd, weight: &[f32], o: usize, c: usize) -> Winograd {
        assert_eq!(weight.len(), o * c * 9, "3x3 weights are O x C x 9");
        let mut u = vec![vec![0f32; o * c]; 16];
        for (pair, g) in weight.chunks_exact(9).enumerate() {
            // G g, G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1], then (G g) G^T.
            let gg: [[f32; 3]; 4] = [
                [g[0], g[1], g[2]],
                std::array::from_fn(|x| 0.5 * (g[x] + g[3 + x] + g[6 + x])),
                std::array::from_fn(|x| 0.5 * (g[x] - g[3 + x] + g[6 + x])),
                [g[6], g[7], g[8]],
            ];
            for (i, [a0, a1, a2]) in gg.into_iter().enumerate() {
                for (j, v) in [a0, 0.5 * (a0 + a1 + a2), 0.5 * (a0 - a1 + a2), a2].into_iter().enumerate() {
                    u[i * 4 + j][pair] = v;
                }
            }
        }
        Winograd {
            simd,
            u: u.iter().map(|m| PackedWeights::pack(simd, m, o, c)).collect(),
            zeros: vec![0.0; o],
            in_channels: c,
            out_channels: o,
        }
    }

    /// Rows `oys` (starting on an even row) of output channels `channels`
    /// for the image `img` (C x H x W; the output is H x W), into `dest`.
    pub fn band(&self, img: &[f32], (h, w): (usize, usize), oys: Range<usize>, channels: Range<usize>, dest: &Out) {
        assert!(
            oys.start.is_multiple_of(2) && oys.end <= h && img.len() >= self.in_channels * h * w,
            "a band of whole tiles inside the image"
        );
        assert!(channels.end <= self.out_channels && dest.bias.len() >= self.out_channels, "one bias per output channel");
        assert!(dest.residual.is_none_or(|r| r.len() >= self.out_channels * h * w), "the residual is laid out as the output");
        let tw = w.div_ceil(2);
        let tys = oys.start / 2..oys.end.div_ceil(2);
        let per = (STEP_MAX / (16 * (self.in_channels + channels.len()) * tw).max(1)).max(1);
        for first in tys.clone().step_by(per) {
            self.step(img, (h, w), first..(first + per).min(tys.end), oys.end, channels.clone(), dest);
        }
    }

    /// Tile rows `tys` of the band, output rows below `row_end` only.
    fn step(&self, img: &[f32], (h, w): (usize, usize), tys: Range<usize>, row_end: usize, channels: Range<usize>, dest: &Out) {
        let (c, o, simd) = (self.in_channels, self.out_channels, self.simd);
        let (tw, nt) = (w.div_ceil(2), tys.len());
        let t = nt * tw;
        let ld = t + MAX_LANES;
        PLANES.with_borrow_mut(|planes| {
            // Tile row ty reads padded rows 2ty .. 2ty + 3: phase rows ty and ty + 1.
            let (rows, wq) = (tys.start..tys.end + 1, tw + 1);
            let plane = rows.len() * wq;
            let len = c * 4 * plane;
            // Grown, never shrunk; the vector of slack is read, never used.
            if planes.len() < len + MAX_LANES {
                planes.resize(len + MAX_LANES, 0.0);
            }
            phase_rows(simd, &[(img, c)], (h, w), 1, 2, rows, (wq, plane), &mut planes[..len]);
            TILES.with_borrow_mut(|tiles| {
                if tiles.len() < 16 * c * ld {
                    tiles.resize(16 * c * ld, 0.0);
                }
                transform_input(simd, &planes[..len + MAX_LANES], (wq, plane), (c, nt, tw), (&mut tiles[..16 * c * ld], ld));
                PRODUCTS.with_borrow_mut(|products| {
                    if products.len() < 16 * o * ld {
                        products.resize(16 * o * ld, 0.0);
                    }
                    let epi = Epilogue { bias: &self.zeros, silu: false, residual: None };
                    // Whole vectors of tiles, into the rows' slack: a last panel of
                    // part of a vector (40 tiles at AVX-512 on 16x20 maps) was
                    // copied and zero-padded before every product. The extra
                    // columns' products are never read. YOLOv8n 1.019x at
                    // AVX-512, 0.997x held to AVX2 (A/B in process, 200 pairs).
                    let n = t.next_multiple_of(MAX_LANES);
                    for (xi, u) in self.u.iter().enumerate() {
                        let b = Compact(RowMajor { data: &tiles[xi * c * ld..(xi + 1) * c * ld], cols: ld });
                        // SAFETY: the buffer holds 16 matrices of O rows of `ld`
                        // floats; this call writes rows `channels` of matrix xi.
                        unsafe { sgemm::gemm_rows(u, channels.clone(), &b, n, products.as_mut_ptr().add(xi * o * ld), ld, &epi) };
                    }
                    let geometry = Tiles { o, ld, tys: tys.clone(), tw, ow: w, n: h * w, row_end };
                    transform_output(simd, &products[..16 * o * ld], &geometry, channels, dest);
                })
            })
        })
    }
}

/// V = B^T d B for every tile of `nt` rows of `tw` and every channel, from
/// the channels' stride-2 phase planes (rows `wq` wide, `plane` apart;
/// vector loads may run up to a vector past the last plane), into 16 C x
/// (nt*tw) matrices with rows `ld` apart (`ld` at least a vector past
/// nt*tw: whole vectors are stored, the last of a tile row spilling into
/// the next one's place before it is written).
fn transform_input(
    simd: Simd,
    planes: &[f32],
    (wq, plane): (usize, usize),
    (c, nt, tw): (usize, usize, usize),
    (tiles, ld): (&mut [f32], usize),
) {
    assert!(wq == tw + 1 && plane >= (nt + 1) * wq && planes.len() >= c * 4 * plane + MAX_LANES, "planes hold every tile");
    assert!(ld >= nt * tw + MAX_LANES && tiles.len() >= 16 * c * ld, "16 matrices of C rows");
    crate::simd::at_level!(simd, (planes: &[f32], wq: usize, plane: usize, c: usize, nt: usize, tw: usize, tiles: &mut [f32], ld: usize),
        avx512 => input_with::<vector::Avx512>(planes, (wq, plane), (c, nt, tw), (tiles, ld)),
        avx2 => input_with::<vector::Avx2>(planes, (wq, plane), (c, nt, tw), (tiles, ld)),
        portable => input_with::<vector::Portable>(planes, (wq, plane), (c, nt, tw), (tiles, ld)),
    )
}

/// `transform_input` at `V`'s level.
///
/// # Safety
/// The CPU runs `V`'s level; the slices are as `transform_input` checks.
#[inline(always)]
unsafe fn input_with<V: F32x>(
    planes: &[f32],
    (wq, plane): (usize, usize),
    (c, nt, tw): (usize, usize, usize),
    (tiles, ld): (&mut [f32], usize),
) {
    use std::array::from_fn;
    let (src, dst) = (planes.as_ptr(), tiles.as_mut_ptr());
    for ch in 0..c {
        let base = src.add(ch * 4 * plane);
        for lt in 0..nt {
            for tx in (0..tw).step_by(V::LANES) {
                // d[r][q], padded pixel (2ty + r, 2tx + q): plane (r % 2, q % 2),
                // row lt + r / 2, column tx + q / 2; a vector across tiles.
                let d: [[V; 4]; 4] =
                    from_fn(|r| from_fn(|q| V::load(base.add(((r % 2) * 2 + q % 2) * plane + (lt + r / 2) * wq + tx + q / 2))));
                let t: [[V; 4]; 4] = from_fn(|r| {
                    let [d0, d1, d2, d3] = d[r];
                    [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)]
                });
                let at = ch * ld + lt * tw + tx;
                let [t0, t1, t2, t3] = t;
                for j in 0..4 {
                    let col = [t0[j].sub(t2[j]), t1[j].add(t2[j]), t2[j].sub(t1[j]), t1[j].sub(t3[j])];
                    for (i, v) in col.into_iter().enumerate() {
                        v.store(dst.add((i * 4 + j) * c * ld + at));
                    }
                }
            }
        }
    }
}

/// A step's products and the output they become: O rows `ld` apart per
/// point, tile rows `tys` of `tw` tiles; output rows `ow` wide, `n` pixels
/// a channel, rows from `row_end` on not written.
struct Tiles {
    o: usize,
    ld: usize,
    tys: Range<usize>,
    tw: usize,
    ow: usize,
    n: usize,
    row_end: usize,
}

/// Y = A^T M A for every tile of output channels `channels`, plus bias,
/// SiLU and the residual, into the output rows the tiles cover.
fn transform_output(simd: Simd, products: &[f32], g: &Tiles, channels: Range<usize>, dest: &Out) {
    assert!(products.len() >= 16 * g.o * g.ld && g.ld >= g.tys.len() * g.tw + MAX_LANES && channels.end <= g.o, "16 matrices of O rows");
    assert!(g.ow.div_ceil(2) == g.tw && g.row_end <= g.n / g.ow.max(1) && 2 * g.tys.start < g.row_end.max(1), "tiles inside the output");
    crate::simd::at_level!(simd, (products: &[f32], g: &Tiles, channels: Range<usize>, dest: &Out),
        avx512 => output_with::<vector::Avx512>(products, g, channels, dest),
        avx2 => output_with::<vector::Avx2>(products, g, channels, dest),
        portable => output_with::<vector::Portable>(products, g, channels, dest),
    )
}

/// `transform_output` at `V`'s level.
///
/// # Safety
/// The CPU runs `V`'s level; the slices are as `transform_output` checks,
/// and `dest.out` (and the residual) hold O x n floats.
#[inline(always)]
unsafe fn output_with<V: F32x>(products: &[f32], g: &Tiles, channels: Range<usize>, dest: &Out) {
    use std::array::from_fn;
    let l = V::LANES;
    let stride = g.o * g.ld;
    for oc in channels {
        let bias = V::splat(dest.bias[oc]);
        let m = products.as_ptr().add(oc * g.ld);
        for (lt, ty) in g.tys.clone().enumerate() {
            for tx in (0..g.tw).step_by(l) {
                let at = lt * g.tw + tx;
                let mv: [[V; 4]; 4] = from_fn(|i| from_fn(|j| V::load(m.add((i * 4 + j) * stride + at))));
                // M A, then A^T (M A): A^T = [1 1 1 0; 0 1 -1 -1].
                let s: [[V; 2]; 4] = from_fn(|i| {
                    let [m0, m1, m2, m3] = mv[i];
                    [m0.add(m1).add(m2), m1.sub(m2).sub(m3)]
                });
                let y: [[V; 2]; 2] = [from_fn(|b| s[0][b].add(s[1][b]).add(s[2][b])), from_fn(|b| s[1][b].sub(s[2][b]).sub(s[3][b]))];
                // Each output row's pixels in order: tile columns interleaved.
                let (a0, a1) = y[0][0].add(bias).zip(y[0][1].add(bias));
                let (b0, b1) = y[1][0].add(bias).zip(y[1][1].add(bias));
                let mut px = [a0, a1, b0, b1];
                if dest.silu {
                    px = vector::silu_all(px);
                }
                for (q, mut v) in px.into_iter().enumerate() {
                    let (row, col) = (2 * ty + q / 2, 2 * tx + (q % 2) * l);
                    if row >= g.row_end || col >= g.ow {
                        continue;
                    }
                    let lanes = (g.ow - col).min(l);
                    let off = oc * g.n + row * g.ow + col;
                    if let Some(r) = dest.residual {
                        let r = r.as_ptr().add(off);
                        v = v.add(if lanes == l { V::load(r) } else { V::load_part(r, lanes) });
                    }
                    match lanes == l {
                        true => v.store(dest.out.add(off)),
                        false => v.store_part(dest.out.add(off), lanes),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Equal to candle's 3x3 conv2d (padding 1) plus bias, SiLU and a
    /// residual, at every level, on odd and even sizes, with the output
    /// computed as one band or as bands of rows and parts of the channels.
    #[test]
    fn matches_candle_conv2d() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // (in, out, h, w)
        let cases = [(1, 1, 1, 1), (7, 9, 5, 3), (16, 24, 17, 33), (40, 13, 40, 31), (8, 20, 2, 45), (3, 70, 9, 70)];
        for simd in Simd::ALL.into_iter().filter(|s| s.runs_here()) {
            for (c, o, h, w) in cases {
                let x = Tensor::randn(0f32, 1.0, (1, c, h, w), &dev)?;
                let wt = Tensor::randn(0f32, 0.5, (o, c, 3, 3), &dev)?;
                let bias = Tensor::randn(0f32, 1.0, o, &dev)?;
                let residual = Tensor::randn(0f32, 1.0, (1, o, h, w), &dev)?;
                let conv = x.conv2d(&wt, 1, 1, 1, 1)?.broadcast_add(&bias.reshape((1, o, 1, 1))?)?;
                let wg = Winograd::new(simd, &wt.flatten_all()?.to_vec1()?, o, c);
                let (img, b, r) = (x.flatten_all()?.to_vec1::<f32>()?, bias.to_vec1::<f32>()?, residual.flatten_all()?.to_vec1::<f32>()?);
                for (silu, with_residual, split) in [(false, false, false), (true, false, true), (true, true, false), (false, true, true)] {
                    let mut want = if silu { candle_nn::ops::silu(&conv)? } else { conv.clone() };
                    if with_residual {
                        want = (want + &residual)?;
                    }
                    let mut out = vec![f32::NAN; o * h * w];
                    let dest = Out { out: out.as_mut_ptr(), bias: &b, silu, residual: with_residual.then_some(&r[..]) };
                    if split {
                        // Rows in two bands (the first ends on an even row), channels in
                        // two parts (split on a panel of the packed weights).
                        let (mid, half) = ((h / 2).next_multiple_of(2).min(h), (o / 2).next_multiple_of(wg.u[0].mr()).min(o));
                        for (rows, chans) in [(0..mid, 0..half), (mid..h, 0..half), (0..mid, half..o), (mid..h, half..o)] {
                            if !rows.is_empty() && !chans.is_empty() {
                                wg.band(&img, (h, w), rows, chans, &dest);
                            }
                        }
                    } else {
                        wg.band(&img, (h, w), 0..h, 0..o, &dest);
                    }
                    let want = want.flatten_all()?.to_vec1::<f32>()?;
                    let worst = out.iter().zip(&want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0f32, f32::max);
                    assert!(out.iter().all(|v| v.is_finite()), "{simd} {c}->{o} {h}x{w}: not every output written");
                    assert!(worst < 1e-4, "{simd} {c}->{o} {h}x{w} silu {silu} residual {with_residual} split {split}: {worst}");
                }
            }
        }
        Ok(())
    }
}
