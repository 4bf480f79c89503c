//! The tensor backend: burn 0.22 selects it at run time through the `Device` value. Pyra's
//! code takes a `Device` everywhere and never names a backend; this module picks the default.
//!
//! - CPU: burn's pure-Rust Flex backend (always compiled).
//! - GPU: burn's CUDA backend, compiled in with the `cuda` cargo feature and used by default
//!   when present (no nvcc needed at build time).
//!
//! `BURN_DEVICE`, burn's own environment variable, still overrides the choice.

use burn::tensor::Device;

/// The device Pyra runs on by default: CUDA when compiled in, else Flex.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Device::flex()
    }
}

/// Whether [`default_device`] is the CPU (no GPU backend compiled in).
pub fn default_is_cpu() -> bool {
    !cfg!(feature = "cuda")
}

/// The CPU device (Flex), whatever else is compiled in.
pub fn cpu() -> Device {
    Device::flex()
}

/// `device` with automatic differentiation enabled (for training and gradient checks).
pub fn with_autodiff(device: Device) -> Device {
    device.autodiff()
}
