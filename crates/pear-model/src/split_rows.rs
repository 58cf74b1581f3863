//! Image rows zero-padded and split by stride phase, so that every kernel
//! tap of a strided convolution reads a contiguous run: shared by the
//! depthwise kernel (per plane) and the dense one's column matrix.

use crate::simd::Simd;
use std::ops::Range;

/// `row` with `p` zeros each side, as its columns 0, s, 2s, ... then 1, s+1, ...
/// `dst` has `row.len() + 2p` elements. `simd`: the level the stride-2
/// split runs at (one this CPU runs).
pub(crate) fn split_row(simd: Simd, row: &[f32], p: usize, s: usize, dst: &mut [f32]) {
    if s == 1 {
        dst[..p].fill(0.0);
        dst[p..p + row.len()].copy_from_slice(row);
        dst[p + row.len()..].fill(0.0);
        return;
    }
    let (w, wp) = (row.len(), row.len() + 2 * p);
    if s == 2 {
        let (even, odd) = dst.split_at_mut(wp.div_ceil(2));
        stride2_phase(simd, row, p, 0, even);
        stride2_phase(simd, row, p, 1, odd);
        return;
    }
    // Phase q holds padded columns q, q+s, ...: zeros, then row[c - p] while
    // c - p < len, then zeros again.
    let mut i = 0;
    for q in 0..s {
        let cols = (wp - q).div_ceil(s);
        let first = (p.saturating_sub(q)).div_ceil(s).min(cols); // first column >= p
        let last = (p + w).saturating_sub(q).div_ceil(s).min(cols); // first column >= p + w
        dst[i..i + first].fill(0.0);
        for (d, j) in dst[i + first..i + last].iter_mut().zip(first..last) {
            *d = row[q + j * s - p];
        }
        dst[i + last..i + cols].fill(0.0);
        i += cols;
    }
}

/// Phase `a` of `row` zero-padded by `p` at stride 2, into all of `dst`:
/// padded columns a, a + 2, ..., that is row[a + 2j - p], zero outside the
/// row (also past the phase's last column, to `dst`'s end). The common
/// stride: vector shuffles do the gather (as pad-then-deinterleave in plain
/// code, 4 lanes wide, it was a tenth of b3's stride-2 depthwise layers).
/// The depthwise kernel's rows, long and split one at a time, keep this
/// unmasked loop: `phase_rows`' masked chunks, worked out row by row, made
/// b3's first stride-2 depthwise layer 1.2x slower (1.7x held to AVX2).
fn stride2_phase(simd: Simd, row: &[f32], p: usize, a: usize, dst: &mut [f32]) {
    let w = row.len();
    // The phase's first column inside the row, and where in the row it is.
    let j0 = p.saturating_sub(a).div_ceil(2);
    let first = a + 2 * j0 - p;
    let count = if j0 < dst.len() && first < w { (w - first).div_ceil(2).min(dst.len() - j0) } else { 0 };
    let j0 = j0.min(dst.len());
    dst[..j0].fill(0.0);
    every_second(simd, &row[first.min(w)..], &mut dst[j0..j0 + count]);
    dst[j0 + count..].fill(0.0);
}

/// `out[i] = src[2i]` for every i of `out`; `src` holds at least
/// 2 * out.len() - 1 values.
fn every_second(simd: Simd, src: &[f32], out: &mut [f32]) {
    assert!(out.is_empty() || src.len() > 2 * (out.len() - 1), "every_second reads inside src");
    crate::simd::at_level!(simd, (src: &[f32], out: &mut [f32]),
        avx512 => every_second_avx512(src, out),
        avx2 => every_second_avx2(src, out),
        portable => every_second_from(0, src, out),
    )
}

/// The plain gather, from output `from` on.
#[inline(always)]
fn every_second_from(from: usize, src: &[f32], out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate().skip(from) {
        *o = src[2 * i];
    }
}

/// 16 outputs from each two vectors (a two-source permute), while both lie in `src`.
///
/// # Safety
/// The CPU runs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn every_second_avx512(src: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let mut i = 0;
    while i + 16 <= out.len() && 2 * i + 32 <= src.len() {
        let lo = _mm512_loadu_ps(src.as_ptr().add(2 * i));
        let hi = _mm512_loadu_ps(src.as_ptr().add(2 * i + 16));
        _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_permutex2var_ps(lo, evens, hi));
        i += 16;
    }
    every_second_from(i, src, out);
}

/// 8 outputs from each two vectors (an in-lane shuffle, then the four
/// 64-bit quarters put in order), while both lie in `src`.
///
/// # Safety
/// The CPU runs AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn every_second_avx2(src: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut i = 0;
    while i + 8 <= out.len() && 2 * i + 16 <= src.len() {
        let lo = _mm256_loadu_ps(src.as_ptr().add(2 * i));
        let hi = _mm256_loadu_ps(src.as_ptr().add(2 * i + 8));
        // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6] -> [lo0 lo2 lo4 lo6 hi0 hi2 hi4 hi6]
        let mixed = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
        let ordered = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(mixed));
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_castpd_ps(ordered));
        i += 8;
    }
    every_second_from(i, src, out);
}

/// Rows `rows` of the phase planes of every channel of `imgs` (each part
/// `c` channels of `h` rows of `w`): each channel zero-padded by `p` on all
/// four sides and split at stride `s` (1 or 2) into s x s planes of `plane`
/// floats, rows `wq` wide, one channel's planes after another in `out`.
/// Plane (a, b) row li holds padded row s * (rows.start + li) + a, columns
/// b, b + s, ...; zeros past the image and to each row's end.
/// Every row is the same few vector operations, their masks worked out
/// once per call: a call per row, and tails and padding element by
/// element, made this a tenth of yolov8n.
#[allow(clippy::too_many_arguments)]
pub(crate) fn phase_rows(
    simd: Simd,
    imgs: &[(&[f32], usize)],
    (h, w): (usize, usize),
    p: usize,
    s: usize,
    rows: Range<usize>,
    (wq, plane): (usize, usize),
    out: &mut [f32],
) {
    assert!(s == 1 || s == 2, "phase_rows splits at stride 1 or 2");
    assert!(imgs.iter().all(|&(img, c)| img.len() >= c * h * w), "every part holds its channels");
    let channels: usize = imgs.iter().map(|&(_, c)| c).sum();
    assert!(out.len() >= channels * s * s * plane && plane >= rows.len() * wq, "the planes hold every row");
    let geometry = Geometry { h, w, p, s, rows, wq, plane };
    crate::simd::at_level!(simd, (imgs: &[(&[f32], usize)], geometry: Geometry, out: &mut [f32]),
        avx512 => phase_rows_avx512(imgs, geometry, out),
        avx2 => phase_rows_avx2(imgs, geometry, out),
        portable => each_row(imgs, &geometry, out, |row, b, dst| phase_row_portable(row, geometry.p, geometry.s, b, dst)),
    )
}

/// What `phase_rows` lays out: see there.
#[derive(Clone)]
struct Geometry {
    h: usize,
    w: usize,
    p: usize,
    s: usize,
    rows: Range<usize>,
    wq: usize,
    plane: usize,
}

/// Calls `phase_row(row, b, dst)` for every plane row: `row` the image
/// row it splits (empty for padding rows), `b` the column phase.
#[inline(always)]
fn each_row(imgs: &[(&[f32], usize)], g: &Geometry, out: &mut [f32], mut phase_row: impl FnMut(&[f32], usize, &mut [f32])) {
    let (h, w, s) = (g.h, g.w, g.s);
    let sources = imgs.iter().flat_map(|&(img, c)| img[..c * h * w].chunks_exact(h * w));
    for (src, planes) in sources.zip(out.chunks_exact_mut(s * s * g.plane)) {
        for (li, i) in g.rows.clone().enumerate() {
            for a in 0..s {
                let row = (s * i + a).checked_sub(g.p).filter(|&y| y < h).map_or(&[][..], |y| &src[y * w..(y + 1) * w]);
                for b in 0..s {
                    phase_row(row, b, &mut planes[(a * s + b) * g.plane + li * g.wq..][..g.wq]);
                }
            }
        }
    }
}

/// One vector of a plane row: it starts at column `base` of the image row
/// (which may be negative); `lo` and `hi` are the lanes of the one or two
/// windows it gathers from that lie inside the row, `store` those of the
/// vector inside the plane row; `full` when every lane it reads and
/// stores lies inside the rows (most of them: they need no masks). The same
/// for every row of a convolution.
#[derive(Clone, Copy)]
struct Chunk<M> {
    base: isize,
    lo: M,
    hi: M,
    store: M,
    full: bool,
}

/// The chunks of a plane row of column phase `b`, `lanes` outputs each;
/// `mask(from, to)` makes a mask of lanes from..to.
fn chunks<M>(g: &Geometry, b: usize, lanes: usize, mask: impl Fn(usize, usize) -> M) -> impl Iterator<Item = Chunk<M>> {
    let (w, p, s, wq) = (g.w as isize, g.p as isize, g.s, g.wq);
    // The lanes of the window from column `base` that lie inside the row.
    let inside = move |base: isize| {
        let clip = |v: isize| v.clamp(0, lanes as isize) as usize;
        let (from, to) = (clip(-base), clip(w - base));
        (from, to.max(from))
    };
    (0..wq).step_by(lanes).map(move |j| {
        let base = (s * j + b) as isize - p;
        let ((lo_from, lo_to), (hi_from, hi_to)) = (inside(base), inside(base + lanes as isize));
        let full = (lo_from, lo_to) == (0, lanes) && (s == 1 || (hi_from, hi_to) == (0, lanes)) && j + lanes <= wq;
        Chunk { base, lo: mask(lo_from, lo_to), hi: mask(hi_from, hi_to), store: mask(0, lanes.min(wq - j)), full }
    })
}

/// `phase_rows` 16 outputs at a time: masked loads of the row's windows
/// (lanes outside the row load as zero and are not read), at stride 2 a
/// two-source permute of two windows, a masked store.
///
/// # Safety
/// The CPU runs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn phase_rows_avx512(imgs: &[(&[f32], usize)], g: Geometry, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let bits = |from: usize, to: usize| ((1u32 << to) - (1u32 << from)) as u16;
    let plans: Vec<Vec<Chunk<u16>>> = (0..g.s).map(|b| chunks(&g, b, 16, bits).collect()).collect();
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    each_row(imgs, &g, out, |row, b, dst| {
        let (src, dst) = (row.as_ptr(), dst.as_mut_ptr());
        for (j, c) in plans[b].iter().enumerate() {
            // A padding row reads nothing: zeros.
            let (lo, hi) = if row.is_empty() { (0, 0) } else { (c.lo, c.hi) };
            // Only the masks' lanes, all inside the row, are read.
            let mut v = _mm512_maskz_loadu_ps(lo, src.wrapping_offset(c.base));
            if g.s == 2 {
                v = _mm512_permutex2var_ps(v, evens, _mm512_maskz_loadu_ps(hi, src.wrapping_offset(c.base + 16)));
            }
            _mm512_mask_storeu_ps(dst.add(16 * j), c.store, v);
        }
    });
}

/// `phase_rows_avx512` for AVX2, 8 outputs at a time (an in-lane shuffle
/// and a permute of 64-bit quarters in place of the two-source permute).
/// Only the edge chunks are masked: AMD's masked AVX2 stores are
/// microcoded, and with a masked load and store on every chunk this was a
/// tenth of yolov8n held to AVX2.
///
/// # Safety
/// The CPU runs AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn phase_rows_avx2(imgs: &[(&[f32], usize)], g: Geometry, out: &mut [f32]) {
    use std::arch::x86_64::*;
    // Lanes from..to of 8 as AVX2 masks them: all bits set.
    let lanes = |from: usize, to: usize| -> [i32; 8] { std::array::from_fn(|l| if (from..to).contains(&l) { -1 } else { 0 }) };
    let plans: Vec<Vec<Chunk<[i32; 8]>>> = (0..g.s).map(|b| chunks(&g, b, 8, lanes).collect()).collect();
    let mask = |m: &[i32; 8]| _mm256_loadu_si256(m.as_ptr().cast());
    let stride2 = g.s == 2;
    each_row(imgs, &g, out, |row, b, dst| {
        let (src, dst) = (row.as_ptr(), dst.as_mut_ptr());
        for (j, c) in plans[b].iter().enumerate() {
            // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6] -> [lo0 lo2 lo4 lo6 hi0 hi2 hi4 hi6]
            let even = |lo: __m256, hi: __m256| {
                let mixed = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(mixed)))
            };
            let at = dst.add(8 * j);
            if c.full {
                let v = match (row.is_empty(), stride2) {
                    (true, _) => _mm256_setzero_ps(),
                    // The chunk's lanes all lie inside the row.
                    (false, false) => _mm256_loadu_ps(src.offset(c.base)),
                    (false, true) => even(_mm256_loadu_ps(src.offset(c.base)), _mm256_loadu_ps(src.offset(c.base + 8))),
                };
                _mm256_storeu_ps(at, v);
                continue;
            }
            let (lo, hi) = if row.is_empty() { (_mm256_setzero_si256(), _mm256_setzero_si256()) } else { (mask(&c.lo), mask(&c.hi)) };
            // Only the masks' lanes, all inside the row, are read.
            let mut v = _mm256_maskload_ps(src.wrapping_offset(c.base), lo);
            if stride2 {
                v = even(v, _mm256_maskload_ps(src.wrapping_offset(c.base + 8), hi));
            }
            _mm256_maskstore_ps(at, mask(&c.store), v);
        }
    });
}

/// `dst[j] = row[s*j + b - p]` where that lies in `row`, else zero, for
/// every j of `dst` (s = 1 or 2), element by element.
fn phase_row_portable(row: &[f32], p: usize, s: usize, b: usize, dst: &mut [f32]) {
    for (j, d) in dst.iter_mut().enumerate() {
        *d = (s * j + b).checked_sub(p).and_then(|c| row.get(c)).copied().unwrap_or(0.0);
    }
}

/// Output size along a side of `n` inputs for a k-wide kernel, padding
/// `p`, stride `s` (1 for an input narrower than the kernel, which the
/// convolutions refuse: only the profile's record sees it).
pub(crate) fn out_size(n: usize, k: usize, p: usize, s: usize) -> usize {
    (n + 2 * p).saturating_sub(k) / s + 1
}

/// Per kernel column kx of a k-wide kernel at stride s, where output column
/// 0 reads in a split row of padded width `wp`: padded column s*ox + kx is
/// phase kx % s, index ox + kx / s.
pub(crate) fn split_bases(k: usize, s: usize, wp: usize) -> Vec<usize> {
    (0..k).map(|kx| (0..kx % s).map(|q| (wp - q).div_ceil(s)).sum::<usize>() + kx / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tap's run equals sampling the zero-padded row at stride s.
    #[test]
    fn runs_are_strided_samples_of_the_padded_row() {
        for (w, p, s, k) in
            [(7, 1, 2, 3), (8, 2, 2, 5), (9, 1, 1, 3), (10, 1, 3, 3), (1, 1, 2, 3), (5, 0, 2, 1), (6, 1, 2, 3), (9, 2, 2, 5), (4, 0, 2, 2)]
                .into_iter()
                // Rows long enough for whole vectors of both levels, and their tails.
                .chain([(370, 1, 2, 3), (185, 2, 2, 5), (93, 1, 2, 3), (47, 2, 2, 5), (64, 1, 2, 3), (33, 0, 2, 2), (48, 2, 2, 5)])
        {
            let row: Vec<f32> = (1..=w).map(|v| v as f32).collect();
            let wp = w + 2 * p;
            let padded: Vec<f32> = (0..wp).map(|c| if c >= p && c < p + w { row[c - p] } else { 0.0 }).collect();
            for simd in Simd::ALL.into_iter().filter(|l| l.runs_here()) {
                let mut dst = vec![f32::NAN; wp];
                split_row(simd, &row, p, s, &mut dst);
                let ow = (wp - k) / s + 1;
                for (kx, b) in split_bases(k, s, wp).into_iter().enumerate() {
                    for ox in 0..ow {
                        assert_eq!(dst[b + ox], padded[ox * s + kx], "{simd} w{w} p{p} s{s} k{k} kx{kx} ox{ox}");
                    }
                }
                assert!(dst.iter().all(|v| !v.is_nan()), "{simd} w{w} p{p} s{s}: every value written");
            }
        }
    }

    /// Every plane row equals sampling the zero-padded image at its phase,
    /// at every level: strides 1 and 2, paddings 0-2, rows shorter than a
    /// vector and longer than several, bands starting inside the image and
    /// running past it, two parts.
    #[test]
    fn phase_rows_sample_the_padded_image() {
        for (h, w, p, s) in
            [(5, 7, 1, 2), (16, 20, 1, 2), (9, 37, 2, 2), (4, 3, 0, 2), (6, 70, 1, 1), (3, 16, 2, 1), (7, 1, 1, 2), (12, 33, 0, 1)]
        {
            let parts = [(2, 0.0), (1, 1000.0)];
            let imgs: Vec<Vec<f32>> = parts.iter().map(|&(c, at)| (0..c * h * w).map(|v| at + 1.0 + v as f32).collect()).collect();
            let views: Vec<(&[f32], usize)> = imgs.iter().zip(&parts).map(|(img, &(c, _))| (&img[..], c)).collect();
            let padded = |img: &[f32], y: usize, x: usize| {
                let inside = y >= p && y < h + p && x >= p && x < w + p;
                if inside {
                    img[(y - p) * w + x - p]
                } else {
                    0.0
                }
            };
            let wq = (w + 2 * p).div_ceil(s) + 3;
            let last = (h + 2 * p).div_ceil(s) + 2;
            for rows in [0..last, 1..last.min(3), last - 1..last] {
                let plane = rows.len() * wq + 5;
                for simd in Simd::ALL.into_iter().filter(|l| l.runs_here()) {
                    let mut out = vec![f32::NAN; 3 * s * s * plane];
                    phase_rows(simd, &views, (h, w), p, s, rows.clone(), (wq, plane), &mut out);
                    let channels = imgs.iter().zip(&parts).flat_map(|(img, &(c, _))| img.chunks_exact(h * w).take(c));
                    for (ch, (img, planes)) in channels.zip(out.chunks_exact(s * s * plane)).enumerate() {
                        for (li, i) in rows.clone().enumerate() {
                            for (a, b, j) in (0..s).flat_map(|a| (0..s).flat_map(move |b| (0..wq).map(move |j| (a, b, j)))) {
                                let got = planes[(a * s + b) * plane + li * wq + j];
                                let want = padded(img, s * i + a, s * j + b);
                                assert_eq!(
                                    got, want,
                                    "{simd} {h}x{w} p{p} s{s} rows {rows:?} channel {ch} plane ({a},{b}) row {i} col {j}"
                                );
                            }
                        }
                        assert!(planes.iter().skip(s * s * plane - 5).all(|v| v.is_nan()), "{simd}: wrote past the last plane's rows");
                    }
                }
            }
        }
    }
}
