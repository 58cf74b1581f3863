//! One SIMD register of f32 lanes, per level, and the vector exp and SiLU
//! built on it. The GEMM's tile and the activations are written once,
//! generic over `F32x`; each level's instantiation runs inside a function
//! compiled for that level (`simd::at_level`), where these
//! `#[inline(always)]` wrappers become single instructions.

use crate::activation::{LN2_HI, LN2_LO, LOG2E, ROUND};

pub(crate) trait F32x: Copy {
    const LANES: usize;
    /// # Safety
    /// For every method: the CPU has this level (checked by the caller), and
    /// pointers are valid for `LANES` floats.
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `self * b + c`, fused.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    /// The larger; `b` where `self` is NaN.
    unsafe fn max(self, b: Self) -> Self;
    /// The smaller; `b` where `self` is NaN.
    unsafe fn min(self, b: Self) -> Self;
    /// 1 / self from the hardware estimate and one Newton step: no division.
    unsafe fn recip(self) -> Self;
    /// 2^n, where `t = n + ROUND` holds the integer n in its low mantissa bits.
    unsafe fn pow2_of_rounded(t: Self) -> Self;
}

/// e^x, lane by lane: the same Cephes polynomial as `activation::exp`.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub(crate) unsafe fn exp<V: F32x>(x: V) -> V {
    let x = x.max(V::splat(-87.3)).min(V::splat(88.3));
    let t = x.mul_add(V::splat(LOG2E), V::splat(ROUND));
    let n = t.sub(V::splat(ROUND));
    let r = n.mul_add(V::splat(-LN2_HI), x);
    let r = n.mul_add(V::splat(-LN2_LO), r);
    let mut p = V::splat(1.987_569_1e-4);
    p = p.mul_add(r, V::splat(1.398_199_9e-3));
    p = p.mul_add(r, V::splat(8.333_452e-3));
    p = p.mul_add(r, V::splat(4.166_579_6e-2));
    p = p.mul_add(r, V::splat(1.666_666_5e-1));
    p = p.mul_add(r, V::splat(5.000_000_1e-1));
    let y = p.mul(r).mul_add(r, r).add(V::splat(1.0));
    y.mul(V::pow2_of_rounded(t))
}

/// x * sigmoid(x) = x / (1 + e^-x), with the reciprocal's estimate.
#[inline(always)]
pub(crate) unsafe fn silu<V: F32x>(x: V) -> V {
    let zero = V::splat(0.0);
    x.mul(exp(zero.sub(x)).add(V::splat(1.0)).recip())
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
    unsafe fn recip(self) -> Self {
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
        unsafe fn recip(self) -> Self {
            let r = _mm256_rcp_ps(self.0); // 12 bits; one Newton step makes ~23
            Avx2(_mm256_mul_ps(r, _mm256_fnmadd_ps(self.0, r, _mm256_set1_ps(2.0))))
        }
        #[inline(always)]
        unsafe fn pow2_of_rounded(t: Self) -> Self {
            let bias = _mm256_set1_epi32(127i32.wrapping_sub(ROUND.to_bits() as i32));
            Avx2(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_castps_si256(t.0), bias))))
        }
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
        unsafe fn recip(self) -> Self {
            let r = _mm512_rcp14_ps(self.0); // 14 bits; one Newton step makes ~24
            Avx512(_mm512_mul_ps(r, _mm512_fnmadd_ps(self.0, r, _mm512_set1_ps(2.0))))
        }
        #[inline(always)]
        unsafe fn pow2_of_rounded(t: Self) -> Self {
            let bias = _mm512_set1_epi32(127i32.wrapping_sub(ROUND.to_bits() as i32));
            Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_castps_si512(t.0), bias))))
        }
    }
}
