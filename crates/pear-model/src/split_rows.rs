//! Image rows zero-padded and split by stride phase, so that every kernel
//! tap of a strided convolution reads a contiguous run: shared by the
//! depthwise kernel (per plane) and the dense one's column matrix.

use crate::simd::Simd;

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
/// code, 4 lanes wide, it was a tenth of b3's stride-2 depthwise layers),
/// and the dense convolution's phase planes take each phase where it goes.
pub(crate) fn stride2_phase(simd: Simd, row: &[f32], p: usize, a: usize, dst: &mut [f32]) {
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
}
