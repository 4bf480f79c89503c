//! The level of additive white Gaussian noise in an image, estimated from the image alone:
//! Chen, Zhu and Heng, "An Efficient Statistical Method for Image Noise Level Estimation"
//! (ICCV 2015), written from the paper.
//!
//! The `d x d` patches (all channels: `r = d²·C` values each) of a clean natural image lie
//! close to a low-dimensional subspace of `R^r`, so most eigenvalues of their covariance are
//! near 0; white noise of variance `σ²` adds `σ²` to every eigenvalue. Sorted ascending,
//! `λ_1 <= ... <= λ_r`, the smallest ones are then those of the noise alone, and for them the
//! mean equals the median. The estimator takes the largest `i` whose first `i` eigenvalues
//! have as many members above their mean `τ_i` as below it, and returns `σ = √τ_i`
//! (Algorithm 1 of the paper). The eigenvalues come from `nalgebra`'s symmetric
//! eigensolver; the covariance is accumulated here in `f64`.
//!
//! Patches are taken on a regular grid of at most [`MAX_PATCHES`] positions, so a
//! 12-megapixel photo costs the same as a crop (a fraction of a second). Clipped 8-bit noise
//! is handled as [`estimate_noise`] says; the tests report the error per sigma for both noise
//! protocols.

use nalgebra::{DMatrix, SymmetricEigen};

use crate::image::Image;

/// Side of the patches (the paper uses 7 or 8).
pub const PATCH: usize = 7;

/// Patches the covariance is estimated from, at most.
pub const MAX_PATCHES: usize = 40_000;

/// What the estimator found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseEstimate {
    /// Standard deviation of the noise on the 0-255 scale.
    pub sigma: f64,
    /// Patches the covariance was estimated from.
    pub patches: usize,
    /// Eigenvalues the estimate was taken over (of `PATCH² · channels`).
    pub components: usize,
}

/// Estimate the standard deviation of white Gaussian noise in `image` (0-255 scale). `None`
/// when the image is smaller than one patch or has too few patches for a covariance.
///
/// Where the image holds values clipped to exactly 0 or 255 (noise added, then stored as 8
/// bits), clipping took part of the noise away near the ends of the range, so the estimate is
/// repeated over the patches whose mean lies at least twice the first estimate away from both
/// ends: they are chosen by their content, not by their noise, so the noise in them is not
/// truncated (a choice by "no clipped value inside" would keep the patches whose noise happened
/// to be small and read several percent low).
pub fn estimate_noise(image: &Image) -> Option<NoiseEstimate> {
    let (w, h, channels) = (image.width, image.height, image.channels);
    if w < PATCH || h < PATCH {
        return None;
    }
    let (positions_x, positions_y) = (w - PATCH + 1, h - PATCH + 1);
    let step = ((positions_x * positions_y) as f64 / MAX_PATCHES as f64)
        .sqrt()
        .ceil()
        .max(1.0) as usize;
    let positions: Vec<(usize, usize)> = (0..positions_y)
        .step_by(step)
        .flat_map(|y| (0..positions_x).step_by(step).map(move |x| (x, y)))
        .collect();
    let dims = PATCH * PATCH * channels;
    let first = from_patches(image, &positions)?;
    let saturated = image
        .data
        .iter()
        .filter(|&&v| v == 0.0 || v == 255.0)
        .count();
    if saturated * 1000 < image.data.len() {
        return Some(first);
    }
    let margin = 2.0 * first.sigma;
    let away: Vec<(usize, usize)> = positions
        .iter()
        .copied()
        .filter(|&(x, y)| {
            (0..channels).all(|c| {
                let plane = image.plane(c);
                let mut sum = 0.0f64;
                for dy in 0..PATCH {
                    sum += plane[(y + dy) * w + x..][..PATCH]
                        .iter()
                        .map(|&v| v as f64)
                        .sum::<f64>();
                }
                let mean = sum / (PATCH * PATCH) as f64;
                mean >= margin && mean <= 255.0 - margin
            })
        })
        .collect();
    if away.len() <= 4 * dims {
        return Some(first);
    }
    from_patches(image, &away)
}

/// The estimator over the patches at `positions` (top-left corners).
fn from_patches(image: &Image, positions: &[(usize, usize)]) -> Option<NoiseEstimate> {
    let (w, channels) = (image.width, image.channels);
    let dims = PATCH * PATCH * channels;
    let count = positions.len();
    if count <= dims {
        return None;
    }
    // Σ x and the upper triangle of Σ x xᵀ over the patches, in f64.
    let mut sum = vec![0.0f64; dims];
    let mut products = vec![0.0f64; dims * dims];
    let mut patch = vec![0.0f64; dims];
    for &(x, y) in positions {
        let mut k = 0;
        for c in 0..channels {
            let plane = image.plane(c);
            for dy in 0..PATCH {
                for &v in &plane[(y + dy) * w + x..][..PATCH] {
                    patch[k] = v as f64;
                    k += 1;
                }
            }
        }
        for (i, &a) in patch.iter().enumerate() {
            sum[i] += a;
            let row = &mut products[i * dims..(i + 1) * dims];
            for (p, &b) in row[i..].iter_mut().zip(&patch[i..]) {
                *p += a * b;
            }
        }
    }
    let n = count as f64;
    let covariance = DMatrix::from_fn(dims, dims, |i, j| {
        let (i, j) = if i <= j { (i, j) } else { (j, i) };
        (products[i * dims + j] - sum[i] * sum[j] / n) / (n - 1.0)
    });
    let mut eigenvalues: Vec<f64> = SymmetricEigen::new(covariance)
        .eigenvalues
        .iter()
        .copied()
        .collect();
    eigenvalues.sort_by(f64::total_cmp);
    let (tau, components) = noise_variance(&eigenvalues);
    Some(NoiseEstimate {
        sigma: tau.max(0.0).sqrt(),
        patches: count,
        components,
    })
}

/// The paper's selection over ascending eigenvalues: the mean `τ` of the longest prefix with
/// as many members above `τ` as below it, and that prefix's length.
fn noise_variance(ascending: &[f64]) -> (f64, usize) {
    for length in (1..=ascending.len()).rev() {
        let prefix = &ascending[..length];
        let mean = prefix.iter().sum::<f64>() / length as f64;
        let above = prefix.iter().filter(|&&v| v > mean).count();
        let below = prefix.iter().filter(|&&v| v < mean).count();
        if above == below {
            return (mean, length);
        }
    }
    (ascending.first().copied().unwrap_or(0.0), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_stops_where_mean_and_median_agree() {
        // Four noise eigenvalues around 4 and two signal ones far above.
        let values = [3.9, 4.0, 4.0, 4.1, 50.0, 900.0];
        let (tau, length) = noise_variance(&values);
        assert_eq!(length, 4);
        assert!((tau - 4.0).abs() < 1e-12);
    }

    #[test]
    fn flat_image_with_known_noise() {
        // A constant image plus noise from a fixed generator: the estimate is the noise's.
        let (w, h) = (96, 96);
        let noisy = crate::degrade::add_gaussian_noise(
            &Image::new(w, h, 1, vec![128.0; w * h]),
            20.0,
            7,
            crate::degrade::NoiseProtocol::Float,
        );
        let estimate = estimate_noise(&noisy).unwrap();
        assert!((estimate.sigma - 20.0).abs() < 1.0, "{estimate:?}");
        assert!(estimate_noise(&Image::new(4, 4, 1, vec![0.0; 16])).is_none());
    }
}
