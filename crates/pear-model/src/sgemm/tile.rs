//! The GEMM's inner tile: MR rows of C by NV vectors of columns, summed in
//! registers over one KC block, then merged into C with the epilogue.

use super::vector::{self, F32x};
use super::Epilogue;
use crate::activation;

/// Where a tile lands in C: its first row and column, and how many of its
/// MR x NR elements are inside C (fewer at the right and bottom edges).
pub(super) struct At {
    pub c: *mut f32,
    pub ldc: usize,
    pub row: usize,
    pub col: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Where the tile reads its kc x NR panel of B.
pub(super) trait Panel: Copy {
    /// The `LANES` floats at column `col` (of the panel's NR) of row `p`.
    ///
    /// # Safety
    /// `p` < kc and `col + LANES` <= NR.
    unsafe fn load<V: F32x>(self, p: usize, col: usize) -> V;
}

/// A panel packed row after row, `nr` floats a row.
#[derive(Clone, Copy)]
pub(super) struct Packed {
    pub data: *const f32,
    pub nr: usize,
}

impl Panel for Packed {
    #[inline(always)]
    unsafe fn load<V: F32x>(self, p: usize, col: usize) -> V {
        V::load(self.data.add(p * self.nr + col))
    }
}

/// A panel read where B lies: row p is `rows[p]`, from column `first` on.
#[derive(Clone, Copy)]
pub(super) struct InPlace<'r> {
    pub rows: *const &'r [f32],
    pub first: usize,
}

impl Panel for InPlace<'_> {
    #[inline(always)]
    unsafe fn load<V: F32x>(self, p: usize, col: usize) -> V {
        V::load((*self.rows.add(p)).as_ptr().add(self.first + col))
    }
}

/// Asks for the cache line at `p` without waiting for it; never faults.
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `acc = A panel (kc x MR) * B panel (kc x NR)`, then C = acc (+ C if
/// `accumulate`), then the epilogue when this was the last KC block.
/// `next_a` (unless null): the A panel the next tile row reads, fetched a
/// line at a time as this one runs.
///
/// # Safety
/// `a` holds kc*MR floats and `b` kc rows of NR; the `At` region is inside C.
#[inline(always)]
pub(super) unsafe fn tile<V: F32x, B: Panel, const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: B,
    at: &At,
    accumulate: bool,
    epi: Option<&Epilogue>,
    next_a: *const f32,
) {
    let (l, nr) = (V::LANES, NV * V::LANES);
    let mut acc = [[V::splat(0.0); NV]; MR];
    for p in 0..kc {
        if !next_a.is_null() {
            prefetch(next_a.wrapping_add(p * MR));
        }
        let bv: [V; NV] = std::array::from_fn(|j| b.load::<V>(p, j * l));
        for (i, row) in acc.iter_mut().enumerate() {
            let av = V::splat(*a.add(p * MR + i));
            for (acc, &bv) in row.iter_mut().zip(&bv) {
                *acc = av.mul_add(bv, *acc);
            }
        }
    }
    if at.rows == MR && at.cols == nr {
        // Row by row, each sum finished where it is (C added, bias, SiLU
        // across the row's vectors side by side, the residual) and stored
        // once. Storing the tile first and finishing it from L1, as before,
        // cost every vector a second store and a load: yolov8n 1.07x and
        // b3 1.09x faster so at AVX-512, 1.00-1.02x at AVX2 (A/B in
        // process, outputs identical).
        for (i, row) in acc.iter().enumerate() {
            let off = (at.row + i) * at.ldc + at.col;
            let cp = at.c.add(off);
            let mut v: [V; NV] = std::array::from_fn(|j| if accumulate { row[j].add(V::load(cp.add(j * l))) } else { row[j] });
            if let Some(e) = epi {
                let b = V::splat(e.bias[at.row + i]);
                v = v.map(|x| x.add(b));
                if e.silu {
                    v = vector::silu_all(v);
                }
                if let Some(r) = e.residual {
                    v = std::array::from_fn(|j| v[j].add(V::load(r.add(off + j * l))));
                }
            }
            for (j, v) in v.into_iter().enumerate() {
                v.store(cp.add(j * l));
            }
        }
        return;
    }
    // An edge: the whole tile into a buffer (indexing the sums by the
    // edge's size would keep them in memory in the loop above too), then
    // only what lies inside C, whole vectors, then the rest of each row as
    // one masked vector (element by element, a 128x1152 product 88 wide
    // took longer than one 96 wide).
    debug_assert!(MR * nr <= EDGE);
    let mut buf = [0f32; EDGE];
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            v.store(buf.as_mut_ptr().add(i * nr + j * l));
        }
    }
    for i in 0..at.rows {
        let off = (at.row + i) * at.ldc + at.col;
        for j in (0..at.cols).step_by(l) {
            let (cp, lanes) = (at.c.add(off + j), l.min(at.cols - j));
            let load = |p: *const f32| if lanes == l { V::load(p) } else { V::load_part(p, lanes) };
            let mut v = V::load(buf.as_ptr().add(i * nr + j));
            if accumulate {
                v = v.add(load(cp));
            }
            if let Some(e) = epi {
                v = finish_vector(v, e, at.row + i, e.residual.map(|r| load(r.add(off + j))));
            }
            match lanes == l {
                true => v.store(cp),
                false => v.store_part(cp, lanes),
            }
        }
    }
}

/// Largest tile of any level (8 x 48 for AVX-512), for edge tiles.
const EDGE: usize = 8 * 48;

/// The epilogue of one vector of row `row`, whose residual (if the
/// epilogue has one) is `residual`.
#[inline(always)]
unsafe fn finish_vector<V: F32x>(v: V, e: &Epilogue, row: usize, residual: Option<V>) -> V {
    let mut v = v.add(V::splat(e.bias[row]));
    if e.silu {
        [v] = vector::silu_all([v]);
    }
    if let Some(r) = residual {
        v = v.add(r);
    }
    v
}

/// The epilogue of one element of row `row` at offset `off` in C.
#[inline(always)]
unsafe fn finish(mut v: f32, e: &Epilogue, row: usize, off: usize) -> f32 {
    v += e.bias[row];
    if e.silu {
        v = activation::silu(v);
    }
    if let Some(r) = e.residual {
        v += *r.add(off);
    }
    v
}

/// C = epilogue(0), for K = 0.
///
/// # Safety
/// As `sgemm::gemm`.
pub(super) unsafe fn epilogue_only(rows: std::ops::Range<usize>, n: usize, c: *mut f32, ldc: usize, epi: &Epilogue) {
    for i in rows {
        for j in 0..n {
            *c.add(i * ldc + j) = finish(0.0, epi, i, i * ldc + j);
        }
    }
}
