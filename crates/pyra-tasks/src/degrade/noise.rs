//! Additive white Gaussian noise at `sigma` (0-255 scale), seeded.
//!
//! The noise comes from a ChaCha8 generator seeded with `seed` alone, so an image gets the same
//! noise whatever folder it sits in (the DnCNN test protocol re-seeds before every image too).
//! Values are drawn in row-major order, channel after channel.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::image::Image;

/// How the noisy image is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseProtocol {
    /// PANet: the noisy image is clipped to 0-255 and rounded to 8 bits (the official inputs
    /// are pre-made PNG files), so the network sees what a camera file would hold.
    Clip8,
    /// DnCNN / KAIR: float noise added to `pixel / 255`, no clipping, no rounding.
    Float,
}

/// `image + N(0, sigma²)` under `protocol`.
pub fn add_gaussian_noise(image: &Image, sigma: f64, seed: u64, protocol: NoiseProtocol) -> Image {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f64, sigma.max(0.0)).expect("finite sigma");
    let mut out = image.clone();
    for v in &mut out.data {
        let noisy = *v as f64 + normal.sample(&mut rng);
        *v = noisy as f32;
    }
    match protocol {
        NoiseProtocol::Clip8 => out.quantized(),
        NoiseProtocol::Float => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_of_the_right_strength() {
        let clean = Image::new(64, 64, 1, vec![128.0; 4096]);
        let a = add_gaussian_noise(&clean, 25.0, 7, NoiseProtocol::Float);
        let b = add_gaussian_noise(&clean, 25.0, 7, NoiseProtocol::Float);
        assert_eq!(a, b);
        let var = a
            .data
            .iter()
            .map(|v| (*v as f64 - 128.0).powi(2))
            .sum::<f64>()
            / 4096.0;
        assert!((var.sqrt() - 25.0).abs() < 1.0, "std {}", var.sqrt());
        let clipped = add_gaussian_noise(&clean, 200.0, 1, NoiseProtocol::Clip8);
        assert!(clipped
            .data
            .iter()
            .all(|v| (0.0..=255.0).contains(v) && v.fract() == 0.0));
    }
}
