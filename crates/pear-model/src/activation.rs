//! The scalar SiLU the kernels' vector code mirrors (for the tails the
//! vector loops leave), and an `exp` the compiler can vectorise (DFL's
//! softmax).
//!
//! libm's `expf` is a call per element: in efficientnet_b3 at 512x740 it was
//! 15 % of the forward pass. This is Cephes' single-precision exp (range
//! reduction by ln 2, degree-5 minimax polynomial), written without branches
//! so each loop compiles to SIMD; it stays within 2 ulp of `f32::exp` over
//! the whole range (unit test below), far below the 1e-3 parity limits.

pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so `x - n ln2` keeps its low bits.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
pub(crate) const ROUND: f32 = 12_582_912.0;

/// e^x for finite x; saturates below -87.3 (to ~1e-38) and above 88.3.
#[inline(always)]
// max/min, not clamp: a NaN input saturates instead of passing through;
// the polynomial's constants are the reference implementation's digits.
#[allow(clippy::manual_clamp, clippy::excessive_precision)]
pub fn exp(x: f32) -> f32 {
    let x = x.max(-87.3).min(88.3);
    // t holds round(x log2 e) in its low mantissa bits; reading it from the
    // bits avoids a float-to-int cast, which would not vectorise.
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits());
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(ni.wrapping_add(127) << 23)
}

/// ln 2 as one constant: SiLU's reduction, one fused multiply-add. Its
/// rounding error (2e-9) times |n| <= 127 stays under 2 ulp at the ends of
/// the range and under half an ulp for |x| < 20.
pub(crate) const LN2: f32 = std::f32::consts::LN_2;
/// The range of -x whose e^-x SiLU computes (beyond it 2^n leaves the
/// exponent's range; the result is x or 0 there anyway).
pub(crate) const EXP_ARG_MIN: f32 = -87.3;
pub(crate) const EXP_ARG_MAX: f32 = 88.3;
/// e^r on [-ln2/2, ln2/2] as a degree-6 polynomial, constant term first:
/// within 7.3e-8 (0.6 ulp) of e^r, fitted by `tools/fit_exp_poly.py`.
#[allow(clippy::excessive_precision)]
pub(crate) const EXP_POLY: [f32; 7] = [1.0, 1.0, 0.499_999_91, 0.166_664_2, 0.041_668_233, 0.008_374_899, 0.001_383_674_2];

/// x * sigmoid(x) for one value (the tails the vector loops leave): the
/// steps of `vector::silu_all`, with a division for the reciprocal.
#[inline(always)]
#[allow(clippy::manual_clamp)] // max/min: NaN clamps (x keeps it in the product)
pub fn silu(x: f32) -> f32 {
    let xc = x.max(-EXP_ARG_MAX).min(-EXP_ARG_MIN);
    let t = xc * -LOG2E + ROUND;
    let n = t - ROUND;
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits());
    let r = n * -LN2 - xc;
    let mut p = EXP_POLY[6];
    for &c in EXP_POLY[..6].iter().rev() {
        p = p * r + c;
    }
    x / (p * f32::from_bits(ni.wrapping_add(127) << 23) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sgemm::vector::{self, F32x};
    use crate::simd::Simd;

    /// x * sigmoid(x), in place, at the given SIMD level, the way the kernels
    /// apply it as they store: groups of vectors side by side
    /// (`vector::silu_each`), single vectors, then the scalar tail.
    fn silu_inplace(simd: Simd, v: &mut [f32]) {
        crate::simd::at_level!(simd, (v: &mut [f32]),
            avx512 => silu_lanes::<vector::Avx512>(v),
            avx2 => silu_lanes::<vector::Avx2>(v),
            portable => silu_lanes::<vector::Portable>(v),
        )
    }

    /// # Safety
    /// The CPU runs `V`'s level.
    #[inline(always)]
    unsafe fn silu_lanes<V: F32x>(v: &mut [f32]) {
        let (l, g) = (V::LANES, vector::SILU_GROUP);
        let mut groups = v.chunks_exact_mut(l * g);
        for c in &mut groups {
            let mut x: [V; vector::SILU_GROUP] = std::array::from_fn(|i| V::load(c.as_ptr().add(i * l)));
            vector::silu_each(&mut x);
            for (i, x) in x.into_iter().enumerate() {
                x.store(c.as_mut_ptr().add(i * l));
            }
        }
        let mut chunks = groups.into_remainder().chunks_exact_mut(l);
        for c in &mut chunks {
            vector::silu(V::load(c.as_ptr())).store(c.as_mut_ptr());
        }
        for x in chunks.into_remainder() {
            *x = silu(*x);
        }
    }

    #[test]
    fn exp_within_two_ulp_of_libm() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.000_37;
        }
        assert!(worst < 2.5e-7, "max relative error {worst:e}");
    }

    #[test]
    fn silu_edges_at_every_level() {
        let want = [0.0, 0.731_058_6, -0.268_941_4, 30.0, -2.808_3e-12, 100.0, 0.0, f32::NAN];
        for simd in Simd::ALL.into_iter().filter(|s| s.runs_here()) {
            // 8 values, then lengths with two full vectors at any level and a
            // tail, and longer ones that also fill groups of vectors.
            for len in [8, 16, 19, 64, 75, 141] {
                let xs = [0.0, 1.0, -1.0, 30.0, -30.0, 100.0, -100.0, f32::NAN];
                let mut v: Vec<f32> = (0..len).map(|i| xs[i % 8]).collect();
                silu_inplace(simd, &mut v);
                for (i, a) in v.iter().enumerate() {
                    let b = want[i % 8];
                    assert!((a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-6 * b.abs().max(1e-6), "{simd} {v:?}");
                }
            }
        }
    }

    /// The vector SiLU against x / (1 + e^-x) in f64 over the range that matters.
    #[test]
    fn vector_silu_is_close_to_exact() {
        let xs: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.0123).collect();
        for simd in Simd::ALL.into_iter().filter(|s| s.runs_here()) {
            let mut v = xs.clone();
            silu_inplace(simd, &mut v);
            for (&x, &y) in xs.iter().zip(&v) {
                let exact = x as f64 / (1.0 + (-x as f64).exp());
                assert!((y as f64 - exact).abs() <= 1e-6 * exact.abs().max(1e-3), "{simd} silu({x}) = {y}, not {exact}");
            }
        }
    }
}
