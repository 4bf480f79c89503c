//! Bicubic resizing of feature maps as two matrix products, `Y = R_h · X · R_wᵀ`.
//!
//! burn's own bicubic maps coordinates by the size ratio with `align_corners = true`, which is
//! neither of the two behaviours the official PANet call `F.interpolate(x, scale_factor=s,
//! mode='bicubic')` has had, and it has no backward on every backend. Here the 1-D
//! interpolation weights are computed once per (size, scale) exactly as PyTorch's CPU kernel does
//! (float32 coordinates, Keys kernel A = -0.75, `align_corners = False`, no antialias, taps
//! clamped to the border), put into a dense matrix, and applied with two matmuls: exact in both
//! modes, on any backend, and differentiable through matmul's backward.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// How the pyramid maps output pixels to input coordinates (see the fixtures README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Interp {
    /// PyTorch 1.1, what the PANet authors trained with: coordinate scale = in / out
    /// (`recompute_scale_factor=True`). The default for official weights.
    #[default]
    Legacy,
    /// torch >= 1.6 running the same call: coordinate scale = float32(1 / s).
    Modern,
}

impl std::str::FromStr for Interp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "legacy" => Ok(Self::Legacy),
            "modern" => Ok(Self::Modern),
            other => Err(format!(
                "unknown interpolation `{other}` (use legacy or modern)"
            )),
        }
    }
}

/// Output length of resizing `len` by `scale`: `floor(len * scale)` in double precision, as
/// PyTorch computes it.
pub fn scaled_len(len: usize, scale: f64) -> usize {
    (len as f64 * scale).floor() as usize
}

/// Keys cubic convolution kernel, the two branches PyTorch calls `cubic_convolution1/2`.
fn cubic_coefficients(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// The `[out, in]` matrix of 1-D bicubic interpolation from `len_in` samples by `scale`.
pub fn bicubic_matrix(len_in: usize, scale: f64, interp: Interp) -> (usize, Vec<f32>) {
    let len_out = scaled_len(len_in, scale);
    let coordinate_scale: f32 = match interp {
        Interp::Modern => (1.0 / scale) as f32,
        Interp::Legacy => len_in as f32 / len_out as f32,
    };
    let mut matrix = vec![0f32; len_out * len_in];
    for dst in 0..len_out {
        let real = coordinate_scale * (dst as f32 + 0.5) - 0.5;
        let floor = (real.floor() as i64).min(len_in as i64 - 1);
        let t = (real - floor as f32).clamp(0.0, 1.0);
        for (tap, weight) in cubic_coefficients(t).into_iter().enumerate() {
            let src = (floor - 1 + tap as i64).clamp(0, len_in as i64 - 1) as usize;
            matrix[dst * len_in + src] += weight;
        }
    }
    (len_out, matrix)
}

/// Resize `[N, C, H, W]` by `scale` in both directions.
pub fn resize(x: Tensor<4>, scale: f64, interp: Interp) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let (h_out, rows) = bicubic_matrix(h, scale, interp);
    let (w_out, cols) = bicubic_matrix(w, scale, interp);
    let rows_t = transposed(&rows, h_out, h, &device); // [H, H']
    let cols_t = transposed(&cols, w_out, w, &device); // [W, W']
                                                       // Width first: [N*C*H, W] · [W, W'].
    let x = x.reshape([n * c * h, w]).matmul(cols_t);
    // Then height, with H moved last: [N*C*W', H] · [H, H'].
    let x = x
        .reshape([n, c, h, w_out])
        .swap_dims(2, 3)
        .reshape([n * c * w_out, h])
        .matmul(rows_t);
    x.reshape([n, c, w_out, h_out]).swap_dims(2, 3)
}

fn transposed(matrix: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    let mut t = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = matrix[r * cols + c];
        }
    }
    Tensor::from_data(TensorData::new(t, [cols, rows]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one() {
        for interp in [Interp::Legacy, Interp::Modern] {
            for len in [10, 17, 23] {
                for scale in [0.9, 0.8, 0.7, 0.6] {
                    let (out, m) = bicubic_matrix(len, scale, interp);
                    for r in 0..out {
                        let s: f32 = m[r * len..(r + 1) * len].iter().sum();
                        assert!((s - 1.0).abs() < 1e-6, "row {r} sums to {s}");
                    }
                }
            }
        }
    }

    #[test]
    fn sizes_follow_floor_of_double_product() {
        // The fixtures README's table: 24 x 20 at 0.7 gives 16 x 14; 17 x 23 at 0.6 gives 10 x 13.
        assert_eq!(scaled_len(24, 0.7), 16);
        assert_eq!(scaled_len(20, 0.7), 14);
        assert_eq!(scaled_len(17, 0.6), 10);
        assert_eq!(scaled_len(23, 0.6), 13);
    }

    #[test]
    fn modes_differ_only_in_coordinate_scale() {
        // 20 -> 18 at 0.9: modern uses 1/0.9 = 1.1111112, legacy 20/18 = 1.1111112 too, but
        // 17 -> 15 differs (17/15 = 1.1333).
        let (_, legacy) = bicubic_matrix(17, 0.9, Interp::Legacy);
        let (_, modern) = bicubic_matrix(17, 0.9, Interp::Modern);
        assert!(legacy
            .iter()
            .zip(&modern)
            .any(|(a, b)| (a - b).abs() > 1e-3));
    }
}
