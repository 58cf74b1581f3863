//! One SIMD register of f32 lanes, per level, and the vector SiLU built on
//! it. The GEMM's tile and the activations are written once,
//! generic over `F32x`; each level's instantiation runs inside a function
//! compiled for that level (`simd::at_level`), where these
//! `#[inline(always)]` wrappers become single instructions.

use crate::activation::{EXP_ARG_MAX, EXP_ARG_MIN, EXP_POLY, LN2, LOG2E, ROUND};

/// The widest vector of any level (AVX-512), in floats: the slack kept
/// after buffers that whole vectors are loaded from or stored to past
/// their last value.
pub(crate) const MAX_LANES: usize = 16;

pub(crate) trait F32x: Copy {
    const LANES: usize;
    /// # Safety
    /// For every method: the CPU has this level (checked by the caller), and
    /// pointers are valid for `LANES` floats.
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// The first `n` (< LANES) floats at `p`, zeros in the other lanes;
    /// only those `n` need be valid.
    unsafe fn load_part(p: *const f32, n: usize) -> Self;
    /// The first `n` (< LANES) lanes to `p`; only those `n` need be valid.
    unsafe fn store_part(self, p: *mut f32, n: usize);
    /// `self * b + c`, fused.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    /// The larger; `b` where `self` is NaN.
    unsafe fn max(self, b: Self) -> Self;
    /// The smaller; `b` where `self` is NaN.
    unsafe fn min(self, b: Self) -> Self;
    /// `c - self * b`, fused.
    unsafe fn neg_mul_add(self, b: Self, c: Self) -> Self;
    /// `self * b - c`, fused.
    unsafe fn mul_sub(self, b: Self, c: Self) -> Self;
    /// The hardware's estimate of 1 / self (12 bits on AVX2, 14 on AVX-512;
    /// exact in the portable code): `silu_all` refines it.
    unsafe fn recip_estimate(self) -> Self;
    /// 2^n, where `t = n + ROUND` holds the integer n in its low mantissa bits.
    unsafe fn pow2_of_rounded(t: Self) -> Self;
    /// The lanes of `self` and `b` interleaved, `self`'s first: lanes
    /// a0 b0 a1 b1 ... of the first half, then those of the second.
    unsafe fn zip(self, b: Self) -> (Self, Self);
}

/// x * sigmoid(x) = x / (1 + e^-x) for N vectors at once, each step done
/// for all N before the next. One vector's SiLU is a chain of 15 dependent
/// operations; run one after another, the chains left the FP units waiting
/// on latency (about 30 cycles a vector inside the GEMM's epilogue), while
/// N side by side keep them busy. The steps are those of `activation::silu`.
#[inline(always)]
pub(crate) unsafe fn silu_all<V: F32x, const N: usize>(x: [V; N]) -> [V; N] {
    use std::array::from_fn;
    // e^-x for -x in [-87.3, 88.3]: beyond it 2^n leaves the exponent's range.
    let (lo, hi) = (V::splat(-EXP_ARG_MAX), V::splat(-EXP_ARG_MIN));
    let xc: [V; N] = from_fn(|i| x[i].max(lo).min(hi));
    // -x = n ln2 + r: t holds n = round(-x log2 e) in its low mantissa bits.
    let t: [V; N] = from_fn(|i| xc[i].mul_add(V::splat(-LOG2E), V::splat(ROUND)));
    let n: [V; N] = from_fn(|i| t[i].sub(V::splat(ROUND)));
    let r: [V; N] = from_fn(|i| n[i].mul_sub(V::splat(-LN2), xc[i]));
    let mut p: [V; N] = [V::splat(EXP_POLY[6]); N];
    for &c in EXP_POLY[..6].iter().rev() {
        p = from_fn(|i| p[i].mul_add(r[i], V::splat(c)));
    }
    // 1 + e^-x, then x times its reciprocal: the estimate refined by one
    // Newton step, the step's two factors multiplied into x side by side.
    let d: [V; N] = from_fn(|i| p[i].mul_add(V::pow2_of_rounded(t[i]), V::splat(1.0)));
    let e: [V; N] = from_fn(|i| d[i].recip_estimate());
    let xe: [V; N] = from_fn(|i| x[i].mul(e[i]));
    let step: [V; N] = from_fn(|i| d[i].neg_mul_add(e[i], V::splat(2.0)));
    from_fn(|i| xe[i].mul(step[i]))
}

/// Vectors SiLU'd side by side.
pub(crate) const SILU_GROUP: usize = 4;

/// x * sigmoid(x) for one vector.
#[inline(always)]
pub(crate) unsafe fn silu<V: F32x>(x: V) -> V {
    silu_all([x])[0]
}

/// SiLU on every vector of `v`, [`SILU_GROUP`] at a time: more side by side
/// would spill AVX2's sixteen registers.
#[inline(always)]
pub(crate) unsafe fn silu_each<V: F32x>(v: &mut [V]) {
    let mut groups = v.chunks_exact_mut(SILU_GROUP);
    for g in &mut groups {
        let x: [V; SILU_GROUP] = std::array::from_fn(|i| g[i]);
        g.copy_from_slice(&silu_all(x));
    }
    for x in groups.into_remainder() {
        *x = silu(*x);
    }
}

/// Four lanes in plain Rust: what the compiler makes of it at the baseline target.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 4]);

impl Portable {
    #[inline(always)]
    fn map2(self, b: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Portable(std::array::from_fn(|i| f(self.0[i], b.0[i])))
    }
}

impl F32x for Portable {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(p.cast::<[f32; 4]>().read_unaligned())
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        p.cast::<[f32; 4]>().write_unaligned(self.0)
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> Self {
        Portable(std::array::from_fn(|i| if i < n { *p.add(i) } else { 0.0 }))
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut f32, n: usize) {
        self.0.iter().take(n).enumerate().for_each(|(i, &v)| *p.add(i) = v)
    }
    #[inline(always)]
    unsafe fn zip(self, b: Self) -> (Self, Self) {
        let (a, b) = (self.0, b.0);
        (Portable([a[0], b[0], a[1], b[1]]), Portable([a[2], b[2], a[3], b[3]]))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self.map2(b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        self.map2(b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self.map2(b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        self.map2(b, |x, y| if x > y { x } else { y })
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        self.map2(b, |x, y| if x < y { x } else { y })
    }
    #[inline(always)]
    unsafe fn neg_mul_add(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| c.0[i] - self.0[i] * b.0[i]))
    }
    #[inline(always)]
    unsafe fn mul_sub(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] * b.0[i] - c.0[i]))
    }
    #[inline(always)]
    unsafe fn recip_estimate(self) -> Self {
        Portable(self.0.map(|x| 1.0 / x))
    }
    #[inline(always)]
    unsafe fn pow2_of_rounded(t: Self) -> Self {
        let bias = 127u32.wrapping_sub(ROUND.to_bits());
        Portable(t.0.map(|t| f32::from_bits(t.to_bits().wrapping_add(bias) << 23)))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{F32x, ROUND};
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    impl F32x for Avx2 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx2(_mm256_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, n: usize) -> Self {
            Avx2(_mm256_maskload_ps(p, first_lanes(n)))
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f32, n: usize) {
            _mm256_maskstore_ps(p, first_lanes(n), self.0)
        }
        #[inline(always)]
        unsafe fn zip(self, b: Self) -> (Self, Self) {
            // Per 128-bit half: a0 b0 a1 b1 | a4 b4 a5 b5 and a2 b2 a3 b3 | a6 b6 a7 b7.
            let (lo, hi) = (_mm256_unpacklo_ps(self.0, b.0), _mm256_unpackhi_ps(self.0, b.0));
            (Avx2(_mm256_permute2f128_ps::<0x20>(lo, hi)), Avx2(_mm256_permute2f128_ps::<0x31>(lo, hi)))
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Avx2(_mm256_add_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            Avx2(_mm256_sub_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Avx2(_mm256_mul_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            Avx2(_mm256_max_ps(self.0, b.0)) // maxps returns its second operand on NaN
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            Avx2(_mm256_min_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn neg_mul_add(self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fnmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn mul_sub(self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fmsub_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn recip_estimate(self) -> Self {
            Avx2(_mm256_rcp_ps(self.0))
        }
        #[inline(always)]
        unsafe fn pow2_of_rounded(t: Self) -> Self {
            let bias = _mm256_set1_epi32(127i32.wrapping_sub(ROUND.to_bits() as i32));
            Avx2(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_castps_si256(t.0), bias))))
        }
    }

    /// A mask of the first `n` of 8 lanes (their sign bits set), for
    /// AVX2's masked loads and stores, which touch no memory elsewhere.
    #[inline(always)]
    unsafe fn first_lanes(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl F32x for Avx512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx512(_mm512_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, n: usize) -> Self {
            Avx512(_mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p))
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f32, n: usize) {
            _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, self.0)
        }
        #[inline(always)]
        unsafe fn zip(self, b: Self) -> (Self, Self) {
            // Index i < 16 picks self's lane i, 16 + i b's.
            let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            (Avx512(_mm512_permutex2var_ps(self.0, lo, b.0)), Avx512(_mm512_permutex2var_ps(self.0, hi, b.0)))
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Avx512(_mm512_add_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            Avx512(_mm512_sub_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Avx512(_mm512_mul_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            Avx512(_mm512_max_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            Avx512(_mm512_min_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn neg_mul_add(self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fnmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn mul_sub(self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fmsub_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn recip_estimate(self) -> Self {
            Avx512(_mm512_rcp14_ps(self.0))
        }
        #[inline(always)]
        unsafe fn pow2_of_rounded(t: Self) -> Self {
            let bias = _mm512_set1_epi32(127i32.wrapping_sub(ROUND.to_bits() as i32));
            Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_castps_si512(t.0), bias))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Simd;

    /// `n` floats of `src` loaded partly, plus one; stored whole into
    /// `whole` and partly into `part`, at `simd`'s level.
    fn round_trip(simd: Simd, src: &[f32], n: usize, whole: &mut [f32], part: &mut [f32]) {
        crate::simd::at_level!(simd, (src: &[f32], n: usize, whole: &mut [f32], part: &mut [f32]),
            avx512 => lanes::<Avx512>(src, n, whole, part),
            avx2 => lanes::<Avx2>(src, n, whole, part),
            portable => lanes::<Portable>(src, n, whole, part),
        )
    }

    /// # Safety
    /// The CPU runs `V`'s level; `src` and `part` hold at least `n`
    /// floats, `whole` LANES.
    #[inline(always)]
    unsafe fn lanes<V: F32x>(src: &[f32], n: usize, whole: &mut [f32], part: &mut [f32]) {
        let v = V::load_part(src.as_ptr(), n).add(V::splat(1.0));
        v.store(whole.as_mut_ptr());
        v.store_part(part.as_mut_ptr(), n);
    }

    /// Floats in one vector at `simd`'s level.
    fn lanes_at(simd: Simd) -> usize {
        match simd {
            Simd::Avx512 => 16,
            Simd::Avx2 => 8,
            Simd::Portable => 4,
        }
    }

    /// Partial loads fill the other lanes with zeros and partial stores
    /// write only their lanes, at every level and every width.
    #[test]
    fn partial_loads_and_stores_touch_only_their_lanes() {
        for simd in Simd::ALL.into_iter().filter(|s| s.runs_here()) {
            let lanes = lanes_at(simd);
            for n in 0..lanes {
                let src: Vec<f32> = (0..n).map(|i| i as f32 * 2.0).collect();
                let (mut whole, mut part) = (vec![f32::NAN; lanes], vec![f32::NAN; lanes]);
                round_trip(simd, &src, n, &mut whole, &mut part);
                for i in 0..lanes {
                    let loaded = src.get(i).map_or(1.0, |v| v + 1.0);
                    assert_eq!(whole[i], loaded, "{simd} n {n} lane {i}: not zero past n");
                    match i < n {
                        true => assert_eq!(part[i], loaded, "{simd} n {n} lane {i}"),
                        false => assert!(part[i].is_nan(), "{simd} n {n}: lane {i} written"),
                    }
                }
            }
        }
    }

    /// `zip` of a and b at `simd`'s level, as 2 x LANES floats.
    fn zipped(simd: Simd, a: &[f32], b: &[f32], out: &mut [f32]) {
        crate::simd::at_level!(simd, (a: &[f32], b: &[f32], out: &mut [f32]),
            avx512 => zip_with::<Avx512>(a, b, out),
            avx2 => zip_with::<Avx2>(a, b, out),
            portable => zip_with::<Portable>(a, b, out),
        )
    }

    /// # Safety
    /// The CPU runs `V`'s level; `a` and `b` hold LANES floats, `out` twice that.
    #[inline(always)]
    unsafe fn zip_with<V: F32x>(a: &[f32], b: &[f32], out: &mut [f32]) {
        let (lo, hi) = V::load(a.as_ptr()).zip(V::load(b.as_ptr()));
        lo.store(out.as_mut_ptr());
        hi.store(out.as_mut_ptr().add(V::LANES));
    }

    /// `zip` interleaves its two vectors lane by lane, at every level.
    #[test]
    fn zip_interleaves() {
        for simd in Simd::ALL.into_iter().filter(|s| s.runs_here()) {
            let lanes = lanes_at(simd);
            let a: Vec<f32> = (0..lanes).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..lanes).map(|i| -(i as f32) - 100.0).collect();
            let mut out = vec![f32::NAN; 2 * lanes];
            zipped(simd, &a, &b, &mut out);
            let want: Vec<f32> = (0..2 * lanes).map(|i| if i % 2 == 0 { a[i / 2] } else { b[i / 2] }).collect();
            assert_eq!(out, want, "{simd}");
        }
    }
}
