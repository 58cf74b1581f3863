//! Our single-precision GEMM for the convolutions: C = A * B with the
//! convolution's bias, SiLU and residual applied as each tile of C leaves
//! the registers, at the SIMD level `Simd::active()` names.
//!
//! A is the weights, packed once at load into panels of MR output channels
//! (`PackedWeights`); B is the convolution's column matrix, which the caller
//! hands over row by row (`Columns`) and which the tile reads KC rows by NR
//! columns at a time (im2col never exists whole): when the rows lie close
//! together (a band's phase planes), where they lie, with only a call's
//! last, narrower panel copied and padded with zeros; otherwise from a
//! packed copy of each block.
//! Blocking follows the usual scheme: a KC x NR panel of B stays in L1 while
//! MR x KC panels of A stream from L2.
//! The tile (`tile.rs`) is written once over `F32x` and compiled per level.
//!
//! candle's `gemm` crate did this job before: it packs the weights again on
//! every call, has no epilogue (bias, SiLU and the residual were another pass
//! over C) and cannot be told which SIMD level to use.

mod tile;
pub(crate) mod vector;

use crate::simd::Simd;
use std::cell::RefCell;
use std::ops::Range;
use vector::F32x;

/// Rows of B per pass at most: a KC x NR panel of B is 16-48 KiB.
const KC: usize = 256;
/// Columns of B per block (rounded down to whole panels) read in place.
const NC: usize = 256;
/// Columns of B per packed block. Each of its K rows is then read as one
/// 4 KiB run, which the hardware prefetcher follows; 256-column runs
/// (1 KiB) of far-apart channel planes left the copy waiting on memory.
/// efficientnet_b3 1.02-1.04x faster, yolov8n unchanged (A/B, AVX-512).
const NC_PACKED: usize = 1024;

/// Tile shape per level: MR output channels by NV vectors of pixels.
/// AVX2: 6 x 16 (12 accumulators of 16 registers); AVX-512: 8 x 48
/// (24 of 32, and 8 divides every channel count of both networks).
const fn shape(simd: Simd) -> (usize, usize) {
    match simd {
        Simd::Portable => (4, 2),
        Simd::Avx2 => (6, 2),
        Simd::Avx512 => (8, 3),
    }
}

/// A row-major M x K matrix as panels of MR rows: panel i holds, for each
/// k, rows i*MR .. i*MR+MR, so the tile reads it in order. The last panel
/// holds the M % MR rows left, as narrower columns: a tile of that height
/// runs it, with no padding rows to multiply.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    simd: Simd,
    mr: usize,
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedWeights {
    pub fn pack(simd: Simd, a: &[f32], m: usize, k: usize) -> PackedWeights {
        assert_eq!(a.len(), m * k, "weights are M x K");
        let mr = shape(simd).0;
        let mut data = vec![0.0; m * k];
        for (i, row) in a.chunks_exact(k.max(1)).enumerate().take(m) {
            let (first, width) = (i - i % mr, mr.min(m - (i - i % mr)));
            let panel = &mut data[first * k..][..width * k];
            for (p, &v) in row.iter().enumerate() {
                panel[p * width + i % mr] = v;
            }
        }
        PackedWeights { simd, mr, m, k, data }
    }

    pub fn simd(&self) -> Simd {
        self.simd
    }

    /// Rows per panel: where `gemm_rows` may split.
    pub fn mr(&self) -> usize {
        self.mr
    }

    /// These weights with column p scaled by `g[p / per]` (a squeeze-excite
    /// gate on the input channels of a convolution with `per` taps each),
    /// into `out`, whose allocation is reused.
    pub fn scaled_into(&self, per: usize, g: &[f32], out: &mut PackedWeights) {
        assert_eq!(g.len() * per, self.k, "one gate value per input channel");
        out.simd = self.simd;
        out.mr = self.mr;
        out.m = self.m;
        out.k = self.k;
        out.data.clear();
        out.data.extend_from_slice(&self.data);
        for first in (0..self.m).step_by(self.mr) {
            let width = self.mr.min(self.m - first);
            let panel = &mut out.data[first * self.k..][..width * self.k];
            for (p, col) in panel.chunks_exact_mut(width).enumerate() {
                let s = g[p / per];
                col.iter_mut().for_each(|v| *v *= s);
            }
        }
    }
}

/// B as its K rows, each borrowed from wherever B lives (the convolutions
/// lay their image out so that each row is one run of it).
pub trait Columns {
    /// Every row in order, each its first `n` columns, appended to `out`.
    fn rows<'s>(&'s self, n: usize, out: &mut Vec<&'s [f32]>);

    /// Whether the rows lie close together (one band's phase planes), so
    /// that reading them in place beats a packed copy. Rows far apart
    /// (whole-image channel planes of a 1x1 kernel) are packed: read in
    /// place they made b3 slower.
    fn compact(&self) -> bool {
        false
    }

    /// A factor per row that B's rows are to be multiplied by (a
    /// squeeze-excite gate on a 1x1 convolution's input channels), applied
    /// as B is packed. Rows with factors are always packed.
    fn scale(&self) -> Option<&[f32]> {
        None
    }
}

/// A plain row-major K x N matrix as B (tests and benches; the
/// convolutions hand over their column matrix instead).
pub struct RowMajor<'a> {
    pub data: &'a [f32],
    pub cols: usize,
}

impl Columns for RowMajor<'_> {
    fn rows<'s>(&'s self, n: usize, out: &mut Vec<&'s [f32]>) {
        out.extend(self.data.chunks_exact(self.cols.max(1)).map(|r| &r[..n]));
    }
}

/// A row-major B whose rows lie close enough together to be read in place
/// (the convolutions' own buffers of a band's rows).
pub struct Compact<'a>(pub RowMajor<'a>);

impl Columns for Compact<'_> {
    fn rows<'s>(&'s self, n: usize, out: &mut Vec<&'s [f32]>) {
        self.0.rows(n, out)
    }
    fn compact(&self) -> bool {
        true
    }
}

/// What happens to each finished element of C: `+ bias[row]`, then SiLU,
/// then `+ residual` (an M x N matrix laid out as C).
pub struct Epilogue<'a> {
    pub bias: &'a [f32],
    pub silu: bool,
    pub residual: Option<*const f32>,
}

thread_local! {
    /// The last, partial panel of B, reused by every call on this thread.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// C (M x N, row stride `ldc`) = epilogue(A * B), for B of K x N.
///
/// # Safety
/// `c` is valid for writes of M rows of N floats at stride `ldc`, and the
/// residual, if any, for reads in the same layout; nothing else touches
/// those elements during the call.
pub unsafe fn gemm(a: &PackedWeights, b: &dyn Columns, n: usize, c: *mut f32, ldc: usize, epi: &Epilogue) {
    gemm_rows(a, 0..a.m, b, n, c, ldc, epi)
}

/// As `gemm`, for rows `rows` of C only (`c`, the bias and the residual
/// still address the whole of C): threads that split a product by output
/// channels each read only their part of A. `rows` starts and ends on a
/// panel boundary (a multiple of `a.mr()`) or at M.
///
/// # Safety
/// As `gemm`, for rows `rows` of C.
pub unsafe fn gemm_rows(a: &PackedWeights, rows: Range<usize>, b: &dyn Columns, n: usize, c: *mut f32, ldc: usize, epi: &Epilogue) {
    assert!(epi.bias.len() >= a.m, "one bias per output row");
    let on_panel = |r: usize| r.is_multiple_of(a.mr) || r == a.m;
    assert!(rows.start <= rows.end && rows.end <= a.m && on_panel(rows.start) && on_panel(rows.end), "rows start and end on panels");
    if rows.is_empty() || n == 0 {
        return;
    }
    if a.k == 0 {
        // An empty sum: only the epilogue remains. Not a shape our networks
        // have, but a defined one.
        tile::epilogue_only(rows, n, c, ldc, epi);
        return;
    }
    PACKED.with_borrow_mut(|packed| {
        crate::simd::at_level!(a.simd,
            (a: &PackedWeights, rows: Range<usize>, b: &dyn Columns, n: usize, c: *mut f32, ldc: usize, epi: &Epilogue, packed: &mut Vec<f32>),
            avx512 => drive::<vector::Avx512, 8, 3, 48>(a, rows, b, n, c, ldc, epi, packed),
            avx2 => drive::<vector::Avx2, 6, 2, 16>(a, rows, b, n, c, ldc, epi, packed),
            portable => drive::<vector::Portable, 4, 2, 8>(a, rows, b, n, c, ldc, epi, packed),
        )
    })
}

/// The blocked loops around the tile, for one level's vector type and tile
/// shape (which `shape` and the weights' packing agree on). The tile reads
/// a compact B's whole panels where they lie, any other B from a packed
/// copy. Measured on an AVX-512 host: in place, yolov8n is 1.1-1.2x faster
/// at AVX-512, 1.07x held to AVX2 and 1.04x portable; every B in place
/// made b3 1.08-1.18x slower at AVX2 (its 1x1 sources, now packed).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn drive<V: F32x, const MR: usize, const NV: usize, const NR: usize>(
    a: &PackedWeights,
    rows_c: Range<usize>,
    b: &dyn Columns,
    n: usize,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
    packed: &mut Vec<f32>,
) {
    debug_assert!(a.mr == MR && NR == NV * V::LANES);
    let k = a.k;
    // Whole panels of NR columns per block: a block that ended inside a
    // panel would compute its zero padding and run the scalar edge tile at
    // every block (NC = 256 is five panels and a third at AVX-512's 48).
    let nc = (if b.compact() { NC } else { NC_PACKED } / NR).max(1) * NR;
    // Every row found once per call. In place, the whole panels of each
    // block are read where B lies (no copy: each packed panel would be
    // read only by the M / MR row panels), and the last panel of a call,
    // narrower than NR, too when it is whole vectors; what is not read in
    // place is packed, with zeros past B's end, so no load leaves B.
    let mut rows: Vec<&[f32]> = Vec::with_capacity(k);
    b.rows(n, &mut rows);
    assert!(rows.len() == k && rows.iter().all(|r| r.len() == n), "B is K rows of N columns");
    let scale = b.scale();
    assert!(scale.is_none_or(|s| s.len() == k), "one factor per row of B");
    let read_in_place = b.compact() && scale.is_none();
    // K in equal blocks of at most KC rows: a last block of a few rows
    // (816 = 3 x 256 + 48 in b3) would reload and store C for little work.
    let kc = k.div_ceil(k.div_ceil(KC));
    for jc in (0..n).step_by(nc) {
        let ncur = nc.min(n - jc);
        let whole = ncur / NR;
        let (tail_at, tail) = (jc + whole * NR, ncur % NR);
        let packed_from = if read_in_place { tail_at } else { jc };
        for pc in (0..k).step_by(kc) {
            let kcur = kc.min(k - pc);
            let in_place = tile::InPlace { rows: rows[pc..].as_ptr(), first: 0 };
            let packed = (!read_in_place || tail % V::LANES != 0)
                .then(|| pack_b::<NR>(&rows[pc..pc + kcur], scale.map(|s| &s[pc..pc + kcur]), packed_from..jc + ncur, packed).as_ptr());
            // The packed panel that holds column `col`.
            let panel = |data: *const f32, col: usize| tile::Packed { data: data.add((col - packed_from) / NR * kcur * NR), nr: NR };
            let (accumulate, last) = (pc > 0, pc + kcur == k);
            let epi = last.then_some(epi);
            // Row panels outside, column panels inside: each row of C is
            // written left to right, and the block of B (in L2) is read
            // once per row panel, its A panel staying in L1.
            for ir in rows_c.clone().step_by(MR) {
                let rows_here = MR.min(rows_c.end - ir);
                // The A panel the next tile row reads (the next row panel's,
                // else the first one's in the next KC block), asked for
                // while the first tile of this row runs: from L3 (a network's
                // weights are 13-50 MB), every panel's first lines otherwise
                // stalled the tile. yolov8n 1.03x faster at both levels, b3
                // unchanged (A/B in process, 100 and 30 pairs).
                let next = match ir + MR {
                    next if next < rows_c.end => Some((next, pc)),
                    _ if pc + kcur < k => Some((rows_c.start, pc + kcur)),
                    _ => None,
                };
                let next_a = match next {
                    Some((row, pc)) => a.data.as_ptr().add(row * k + pc * MR.min(rows_c.end - row)),
                    None => std::ptr::null(),
                };
                let mut step = Step { kc: kcur, a: a.data.as_ptr().add(ir * k + pc * rows_here), accumulate, epi, next_a };
                for jp in 0..whole {
                    let col = jc + jp * NR;
                    let at = tile::At { c, ldc, row: ir, col, rows: rows_here, cols: NR };
                    if jp == 1 {
                        step.next_a = std::ptr::null();
                    }
                    match packed {
                        Some(data) if !read_in_place => run_tile::<V, _, MR, NV>(&step, panel(data, col), &at),
                        _ => run_tile::<V, _, MR, NV>(&step, tile::InPlace { first: col, ..in_place }, &at),
                    }
                }
                if tail > 0 {
                    let at = tile::At { c, ldc, row: ir, col: tail_at, rows: rows_here, cols: tail };
                    match packed {
                        Some(data) => tail_tile::<V, _, MR, NV>(&step, panel(data, tail_at), &at),
                        None => tail_tile::<V, _, MR, NV>(&step, tile::InPlace { first: tail_at, ..in_place }, &at),
                    }
                }
            }
        }
    }
}

/// One row panel's work on one KC block: its A panel (`kc` x MR floats),
/// whether C already holds the sums of earlier blocks, and the epilogue
/// when this is the last block.
struct Step<'e> {
    kc: usize,
    a: *const f32,
    accumulate: bool,
    epi: Option<&'e Epilogue<'e>>,
    /// The next row panel's A (null: none to fetch), asked for while this one runs.
    next_a: *const f32,
}

/// A last panel narrower than NR: a tile only as wide as its vectors.
#[inline(always)]
unsafe fn tail_tile<V: F32x, B: tile::Panel, const MR: usize, const NV: usize>(step: &Step, b: B, at: &tile::At) {
    match at.cols.div_ceil(V::LANES) {
        1 => run_tile::<V, _, MR, 1>(step, b, at),
        2 if NV > 2 => run_tile::<V, _, MR, 2>(step, b, at),
        _ => run_tile::<V, _, MR, NV>(step, b, at),
    }
}

/// The tile for `at.rows` rows: MR, or the fewer left in the last row panel.
#[inline(always)]
unsafe fn run_tile<V: F32x, B: tile::Panel, const MR: usize, const NV: usize>(step: &Step, b: B, at: &tile::At) {
    let Step { kc, a, accumulate, epi, next_a } = *step;
    match at.rows {
        rows if rows == MR => tile::tile::<V, B, MR, NV>(kc, a, b, at, accumulate, epi, next_a),
        1 => tile::tile::<V, B, 1, NV>(kc, a, b, at, accumulate, epi, next_a),
        2 => tile::tile::<V, B, 2, NV>(kc, a, b, at, accumulate, epi, next_a),
        3 => tile::tile::<V, B, 3, NV>(kc, a, b, at, accumulate, epi, next_a),
        4 => tile::tile::<V, B, 4, NV>(kc, a, b, at, accumulate, epi, next_a),
        5 => tile::tile::<V, B, 5, NV>(kc, a, b, at, accumulate, epi, next_a),
        6 => tile::tile::<V, B, 6, NV>(kc, a, b, at, accumulate, epi, next_a),
        _ => tile::tile::<V, B, 7, NV>(kc, a, b, at, accumulate, epi, next_a),
    }
}

/// Columns `cols` of the rows `rows` of B, each times its factor in
/// `scale` if given, as panels of NR columns: panel j holds, row after
/// row, columns j*NR .. j*NR+NR (zero past the end).
/// The panels start on a cache line: the tile's vector loads never split one.
#[inline(always)]
fn pack_b<'p, const NR: usize>(rows: &[&[f32]], scale: Option<&[f32]>, cols: Range<usize>, packed: &'p mut Vec<f32>) -> &'p [f32] {
    let (kc, nc) = (rows.len(), cols.len());
    let len = nc.div_ceil(NR) * kc * NR;
    // Grown, never shrunk: a shrink would make the next, larger block
    // zero its tail again, and every element used is written below anyway.
    if packed.len() < len + 16 {
        packed.resize(len + 16, 0.0);
    }
    let at = packed.as_ptr().align_offset(64).min(16);
    let packed = &mut packed[at..at + len];
    for (rr, row) in rows.iter().enumerate() {
        let row = &row[cols.clone()];
        let factor = scale.map(|s| s[rr]);
        let put = |dst: &mut [f32], src: &[f32]| match factor {
            Some(f) => dst.iter_mut().zip(src).for_each(|(d, v)| *d = v * f),
            None => dst.copy_from_slice(src),
        };
        let mut chunks = row.chunks_exact(NR);
        for (j, chunk) in (&mut chunks).enumerate() {
            put(&mut packed[(j * kc + rr) * NR..][..NR], chunk);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let dst = &mut packed[((nc / NR) * kc + rr) * NR..][..NR];
            put(&mut dst[..rest.len()], rest);
            dst[rest.len()..].fill(0.0);
        }
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Equal to candle's matmul (then bias, SiLU, residual as candle ops) at
    /// every level this CPU runs, on shapes that hit every edge: M and N
    /// not multiples of the tile, K across several KC blocks, N across NC.
    #[test]
    fn matches_candle_matmul_at_every_level() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (6, 16, 9),
            (8, 48, 27),
            (13, 100, 300),
            (16, 1100, 64),
            (9, 80, 20),
            (10, 40, 300),
            (37, 77, 513),
            (130, 50, 40),
            (24, 2100, 5),
        ];
        for simd in Simd::ALL.into_iter().filter(|s| s.runs_here()) {
            for &(m, n, k) in &shapes {
                for (silu, residual) in [(false, false), (true, false), (true, true), (false, true)] {
                    let a = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
                    let b = Tensor::randn(0f32, 1.0, (k, n), &dev)?;
                    let bias = Tensor::randn(0f32, 1.0, m, &dev)?;
                    let res = Tensor::randn(0f32, 1.0, (m, n), &dev)?;
                    let mut want = a.matmul(&b)?.broadcast_add(&bias.reshape((m, 1))?)?;
                    if silu {
                        want = candle_nn::ops::silu(&want)?;
                    }
                    if residual {
                        want = (want + &res)?;
                    }
                    let packed = PackedWeights::pack(simd, &a.flatten_all()?.to_vec1()?, m, k);
                    let bv = b.flatten_all()?.to_vec1::<f32>()?;
                    let rv = res.flatten_all()?.to_vec1::<f32>()?;
                    let bias = bias.to_vec1::<f32>()?;
                    // C inside a wider buffer: ldc > n, and the margin must stay untouched.
                    let ldc = n + 3;
                    let rpad: Vec<f32> = (0..m * ldc).map(|i| if i % ldc < n { rv[i / ldc * n + i % ldc] } else { 0.0 }).collect();
                    let epi = Epilogue { bias: &bias, silu, residual: residual.then_some(rpad.as_ptr()) };
                    let want = want.flatten_all()?.to_vec1::<f32>()?;
                    // B packed, and read where it lies.
                    let (plain, compact) = (RowMajor { data: &bv, cols: n }, Compact(RowMajor { data: &bv, cols: n }));
                    // Whole, and as two calls for the rows either side of a panel boundary.
                    let half = (m / 2).next_multiple_of(packed.mr()).min(m);
                    for (b, split) in [&plain as &dyn Columns, &compact].into_iter().flat_map(|b| [(b, false), (b, true)]) {
                        let mut c = vec![f32::NAN; m * ldc];
                        // SAFETY: c and rpad are m x ldc.
                        unsafe {
                            if split {
                                gemm_rows(&packed, half..m, b, n, c.as_mut_ptr(), ldc, &epi);
                                gemm_rows(&packed, 0..half, b, n, c.as_mut_ptr(), ldc, &epi);
                            } else {
                                gemm(&packed, b, n, c.as_mut_ptr(), ldc, &epi);
                            }
                        }
                        let got: Vec<f32> = c.chunks(ldc).flat_map(|r| r[..n].to_vec()).collect();
                        assert!(c.chunks(ldc).all(|r| r[n..].iter().all(|v| v.is_nan())), "{simd} {m}x{n}x{k}: wrote past N");
                        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0f32, f32::max);
                        assert!(worst < 1e-4, "{simd} {m}x{n}x{k} silu {silu} residual {residual} split {split}: {worst}");
                    }
                }
            }
        }
        Ok(())
    }

    /// B's rows scaled as they are packed give exactly the product with
    /// B scaled beforehand, at every level, also where B would otherwise
    /// be read in place.
    #[test]
    fn scaled_rows_equal_a_prescaled_b() {
        for simd in Simd::ALL.into_iter().filter(|s| s.runs_here()) {
            for (m, n, k) in [(7, 50, 9), (16, 1100, 300), (3, 5, 1)] {
                let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5).collect();
                let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 13) as f32 * 0.1 - 0.6).collect();
                let s: Vec<f32> = (0..k).map(|r| 0.25 + r as f32 * 0.01).collect();
                let pre: Vec<f32> = b.iter().enumerate().map(|(i, v)| v * s[i / n]).collect();
                let packed = PackedWeights::pack(simd, &a, m, k);
                let bias = vec![0.5; m];
                let epi = Epilogue { bias: &bias, silu: true, residual: None };
                let product = |cols: &dyn Columns| {
                    let mut c = vec![f32::NAN; m * n];
                    // SAFETY: c is m x n.
                    unsafe { gemm(&packed, cols, n, c.as_mut_ptr(), n, &epi) };
                    c
                };
                let want = product(&RowMajor { data: &pre, cols: n });
                assert!(want.iter().all(|v| v.is_finite()));
                for compact in [false, true] {
                    let got = product(&Scaled { b: RowMajor { data: &b, cols: n }, s: &s, compact });
                    assert_eq!(got, want, "{simd} {m}x{n}x{k} compact {compact}");
                }
            }
        }
    }

    /// A row-major B with a factor per row.
    struct Scaled<'a> {
        b: RowMajor<'a>,
        s: &'a [f32],
        compact: bool,
    }

    impl Columns for Scaled<'_> {
        fn rows<'s>(&'s self, n: usize, out: &mut Vec<&'s [f32]>) {
            self.b.rows(n, out)
        }
        fn compact(&self) -> bool {
            self.compact
        }
        fn scale(&self) -> Option<&[f32]> {
            Some(self.s)
        }
    }

    #[test]
    fn scaled_weights_scale_columns() {
        let (m, k) = (7, 6);
        let a: Vec<f32> = (0..m * k).map(|v| v as f32).collect();
        let g = [2.0, 0.5, -1.0];
        let want: Vec<f32> = a.iter().enumerate().map(|(i, v)| v * g[(i % k) / 2]).collect();
        for simd in Simd::ALL {
            let mut out = PackedWeights::pack(simd, &[], 0, 0);
            PackedWeights::pack(simd, &a, m, k).scaled_into(2, &g, &mut out);
            assert_eq!(out.data, PackedWeights::pack(simd, &want, m, k).data, "{simd}");
        }
    }
}
