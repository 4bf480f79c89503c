//! Which vector instruction set Pyra's own kernels use, chosen at run time from the CPU.
//!
//! The binary is built for the baseline x86-64 target (SSE2), so it runs on any x86-64 CPU.
//! Hot loops of the hand-written kernels are compiled three times, under
//! `#[target_feature(enable = "avx512f,...")]`, `#[target_feature(enable = "avx2,fma")]` and
//! plain, and [`isa`] picks one from `is_x86_feature_detected!` once per process. The GEMMs go to
//! the `gemm` crate, which does the same on its own (its `x86-v4` feature compiles its AVX-512
//! microkernels, and `gemm_common::gemm` picks them only where `is_x86_feature_detected!
//! ("avx512f")` says so).
//!
//! `PYRA_ISA=avx2` (or `baseline`) caps the choice, for comparisons and tests; a level the CPU
//! lacks is never chosen. [`force`] does the same from code (the dispatch test).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// An instruction set level of Pyra's own kernels, ordered from the least to the most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Whatever the build target has (SSE2 on x86-64, NEON on aarch64).
    Baseline = 1,
    /// AVX2 + FMA: 8 floats a vector.
    Avx2 = 2,
    /// AVX-512 F/BW/DQ/VL: 16 floats a vector.
    Avx512 = 3,
}

impl Isa {
    /// Its name as `PYRA_ISA` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Single-precision FLOP per cycle and core of one such core with two FMA units
    /// (2 units x lanes x 2): what the peak figures are computed from.
    pub fn flop_per_cycle(self) -> f64 {
        match self {
            Isa::Baseline => 16.0,
            Isa::Avx2 => 32.0,
            Isa::Avx512 => 64.0,
        }
    }

    fn parse(text: &str) -> Option<Isa> {
        match text.trim().to_ascii_lowercase().as_str() {
            "baseline" | "scalar" | "sse2" => Some(Isa::Baseline),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx-512" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

/// The most capable level this CPU supports.
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    })
}

/// 0: no override; otherwise an `Isa` discriminant.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// Caps the level of every later kernel call in this process (`None` lifts the cap). A level
/// the CPU lacks is never used: the cap is a ceiling, not a request.
pub fn force(cap: Option<Isa>) {
    FORCED.store(cap.map_or(0, |isa| isa as u8), Ordering::SeqCst);
}

fn from_env() -> Option<Isa> {
    static ENV: OnceLock<Option<Isa>> = OnceLock::new();
    *ENV.get_or_init(|| std::env::var("PYRA_ISA").ok().and_then(|v| Isa::parse(&v)))
}

/// The level the kernels use now: the CPU's, capped by [`force`] or else by `PYRA_ISA`.
pub fn isa() -> Isa {
    let cap = match FORCED.load(Ordering::Relaxed) {
        1 => Some(Isa::Baseline),
        2 => Some(Isa::Avx2),
        3 => Some(Isa::Avx512),
        _ => from_env(),
    };
    match cap {
        Some(cap) => detected().min(cap),
        None => detected(),
    }
}

/// Compiles `$body` (a block using only its arguments) once per instruction-set level and
/// calls the copy [`isa`] picks. Used for the element-wise loops of the kernels, which the
/// compiler vectorises at the width each copy allows.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_isa {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
            match $crate::ops::isa::isa() {
                // SAFETY: `isa()` never returns a level the CPU lacks.
                #[cfg(target_arch = "x86_64")]
                $crate::ops::isa::Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::ops::isa::Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => generic($($arg),*),
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert_eq!(Isa::parse("sse9"), None);
    }
}
