//! Which SIMD level our kernels run at: the best this CPU has, or a lower one
//! named by `PEAR_SIMD` (`avx512`, `avx2`, `portable`), so that the AVX2 path
//! can be measured and tested on an AVX-512 machine and the portable one on
//! any.
//!
//! The level is read once per process. Every kernel (the GEMM, the depthwise
//! convolution, SiLU) asks `Simd::active()` and runs the code compiled for
//! that level: one binary for every x86-64 detection host.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Simd {
    /// Plain Rust, whatever the compiler's baseline target gives (SSE2 on x86-64).
    Portable,
    /// AVX2 with FMA: 8 floats per register, 16 registers.
    Avx2,
    /// AVX-512F: 16 floats per register, 32 registers.
    Avx512,
}

/// `PEAR_SIMD` did not name a level this CPU runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimdError {
    #[error("PEAR_SIMD={0:?} is not a SIMD level: use avx512, avx2 or portable")]
    Unknown(String),
    #[error("PEAR_SIMD={wanted} asks for more than this CPU has (its best is {best})")]
    Unsupported { wanted: Simd, best: Simd },
}

impl Simd {
    pub const ALL: [Simd; 3] = [Simd::Portable, Simd::Avx2, Simd::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    /// The best level this CPU has (probed once: every kernel call asks).
    pub fn detected() -> Simd {
        static DETECTED: OnceLock<Simd> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Simd::Avx512;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Simd::Avx2;
                }
            }
            Simd::Portable
        })
    }

    /// Whether this CPU can run code built for `self`.
    pub fn runs_here(self) -> bool {
        self <= Simd::detected()
    }

    /// The level `PEAR_SIMD` asks for (the detected one when it is unset or empty).
    pub fn from_env() -> Result<Simd, SimdError> {
        match std::env::var("PEAR_SIMD") {
            Ok(v) if !v.trim().is_empty() => Simd::parse(&v),
            _ => Ok(Simd::detected()),
        }
    }

    /// A level by name, refused when this CPU lacks it.
    pub fn parse(v: &str) -> Result<Simd, SimdError> {
        let wanted = match v.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx-512" | "avx512f" => Simd::Avx512,
            "avx2" => Simd::Avx2,
            "portable" | "none" | "scalar" => Simd::Portable,
            _ => return Err(SimdError::Unknown(v.to_string())),
        };
        if !wanted.runs_here() {
            return Err(SimdError::Unsupported { wanted, best: Simd::detected() });
        }
        Ok(wanted)
    }

    /// The level every kernel runs at in this process. A bad `PEAR_SIMD` is
    /// logged and ignored here; the server refuses to start on one before it
    /// gets this far (`from_env`).
    pub fn active() -> Simd {
        static ACTIVE: OnceLock<Simd> = OnceLock::new();
        *ACTIVE.get_or_init(|| match Simd::from_env() {
            Ok(s) => s,
            Err(e) => {
                log::error!("{e}; running at {}", Simd::detected());
                Simd::detected()
            }
        })
    }
}

impl std::fmt::Display for Simd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs one of three expressions over the named arguments, each inside a
/// function compiled for its level (`#[target_feature]`), so that the
/// `#[inline(always)]` code it calls is vectorised with that level's
/// instructions: `avx512 => ..`, `avx2 => ..`, `portable => ..` (also taken
/// where a level does not run here). The expressions may call unsafe code:
/// the caller answers for their safety as it would at the call.
macro_rules! at_level {
    ($level:expr, ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?,
     avx512 => $avx512:expr, avx2 => $avx2:expr, portable => $portable:expr $(,)?) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { $avx512 }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $avx2 }
        #[allow(clippy::too_many_arguments)]
        unsafe fn portable($($arg: $ty),*) $(-> $ret)? { $portable }
        let level: $crate::simd::Simd = $level;
        // SAFETY: a level's code runs only where the CPU has that level
        // (runs_here); the expressions' own conditions are the caller's.
        #[allow(unused_unsafe)]
        match level {
            #[cfg(target_arch = "x86_64")]
            $crate::simd::Simd::Avx512 if level.runs_here() => unsafe { avx512($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            $crate::simd::Simd::Avx2 if level.runs_here() => unsafe { avx2($($arg),*) },
            _ => unsafe { portable($($arg),*) },
        }
    }};
}
pub(crate) use at_level;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_levels_above_the_cpu_are_refused() {
        for s in Simd::ALL {
            if s.runs_here() {
                assert_eq!(Simd::parse(s.name()), Ok(s));
            } else {
                assert!(matches!(Simd::parse(s.name()), Err(SimdError::Unsupported { .. })));
            }
        }
        assert_eq!(Simd::parse(" AVX2 ").ok().map(|s| s <= Simd::Avx2), Simd::Avx2.runs_here().then_some(true));
        assert!(matches!(Simd::parse("sse9"), Err(SimdError::Unknown(_))));
        assert!(Simd::Portable.runs_here());
    }
}
