//! MATLAB `imresize(img, scale, 'bicubic')` on 8-bit images, bit for bit.
//!
//! Written by hand because no crate reproduces MATLAB exactly: its cubic kernel has a = -0.5
//! (not -0.75 as OpenCV/PyTorch), it antialiases when shrinking (the kernel is stretched by
//! 1/scale), out-of-range taps mirror the border (`symmetric`), the weights of each output are
//! normalised to sum 1, and — decisive for bit-exactness — it resizes one dimension at a time
//! (rows first for equal scales) and stores the intermediate image as uint8, rounding halves
//! away from zero. Weights and sums are computed in double as MATLAB does
//! (`contributions` / `imresizemex`).

use crate::image::Image;

/// A resize by one factor in both directions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resize {
    pub scale: f64,
}

/// MATLAB's `cubic` kernel (a = -0.5).
fn cubic(x: f64) -> f64 {
    let ax = x.abs();
    let ax2 = ax * ax;
    let ax3 = ax2 * ax;
    if ax <= 1.0 {
        1.5 * ax3 - 2.5 * ax2 + 1.0
    } else if ax <= 2.0 {
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    } else {
        0.0
    }
}

/// Per output sample: the input indices (0-based) and their weights.
struct Contributions {
    indices: Vec<Vec<usize>>,
    weights: Vec<Vec<f64>>,
}

/// MATLAB's `contributions(in_length, out_length, scale, @cubic, 4, true)`.
fn contributions(in_len: usize, out_len: usize, scale: f64) -> Contributions {
    let antialias = scale < 1.0;
    let kernel_width = if antialias { 4.0 / scale } else { 4.0 };
    let p = kernel_width.ceil() as i64 + 2;
    let mut all_indices = Vec::with_capacity(out_len);
    let mut all_weights = Vec::with_capacity(out_len);
    for x in 1..=out_len {
        let u = x as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
        let left = (u - kernel_width / 2.0).floor() as i64;
        let mut weights: Vec<f64> = (0..p)
            .map(|k| {
                let d = u - (left + k) as f64;
                if antialias {
                    scale * cubic(scale * d)
                } else {
                    cubic(d)
                }
            })
            .collect();
        let sum: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= sum);
        // Mirror out-of-range indices: aux = [1..in, in..1], index = aux(mod(i-1, 2*in)+1).
        let period = 2 * in_len as i64;
        let indices: Vec<usize> = (0..p)
            .map(|k| {
                let i = (left + k - 1).rem_euclid(period);
                if i < in_len as i64 {
                    i as usize
                } else {
                    (period - 1 - i) as usize
                }
            })
            .collect();
        all_indices.push(indices);
        all_weights.push(weights);
    }
    // MATLAB drops the columns (tap positions) whose weight is zero for every output.
    let keep: Vec<bool> = (0..p as usize)
        .map(|k| all_weights.iter().any(|w| w[k] != 0.0))
        .collect();
    for (idx, w) in all_indices.iter_mut().zip(all_weights.iter_mut()) {
        let mut k = 0;
        idx.retain(|_| {
            k += 1;
            keep[k - 1]
        });
        let mut k = 0;
        w.retain(|_| {
            k += 1;
            keep[k - 1]
        });
    }
    Contributions {
        indices: all_indices,
        weights: all_weights,
    }
}

/// MATLAB's output length: `ceil(in * scale)`.
pub fn output_len(in_len: usize, scale: f64) -> usize {
    (in_len as f64 * scale).ceil() as usize
}

/// Resize along rows (`vertical`) or columns, rounding the result to uint8 in double.
fn resize_dim(image: &Image, scale: f64, vertical: bool) -> Image {
    let (w, h) = (image.width, image.height);
    let in_len = if vertical { h } else { w };
    let out_len = output_len(in_len, scale);
    let c = contributions(in_len, out_len, scale);
    let (ow, oh) = if vertical { (w, out_len) } else { (out_len, h) };
    // Distance between neighbouring samples along the resized dimension, and across it.
    let (along, across, lines) = if vertical { (w, 1, w) } else { (1, w, h) };
    let (out_along, out_across) = if vertical { (ow, 1) } else { (1, ow) };
    let mut out = Image::zeros(ow, oh, image.channels);
    out.bit_depth = 8;
    for ch in 0..image.channels {
        let src = image.plane(ch);
        let dst = out.plane_mut(ch);
        for line in 0..lines {
            for o in 0..out_len {
                let mut sum = 0f64;
                for (&i, &wt) in c.indices[o].iter().zip(&c.weights[o]) {
                    sum += wt * src[line * across + i * along] as f64;
                }
                dst[line * out_across + o * out_along] = round_u8_f64(sum) as f32;
            }
        }
    }
    out
}

fn round_u8_f64(v: f64) -> u8 {
    if v.is_nan() {
        0
    } else {
        v.clamp(0.0, 255.0).round() as u8
    }
}

/// `imresize(img, scale, 'bicubic')` of an 8-bit image (values are rounded to 0..=255 first):
/// rows first, then columns, each pass stored as uint8.
pub fn imresize(image: &Image, resize: Resize) -> Image {
    let input = image.clone().quantized();
    let vertical = resize_dim(&input, resize.scale, true);
    let mut out = resize_dim(&vertical, resize.scale, false);
    out.alpha = None;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_mirror() {
        let c = contributions(10, 5, 0.5);
        for w in &c.weights {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert!(c.indices.iter().flatten().all(|&i| i < 10));
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = Image::new(12, 9, 1, vec![77.0; 108]);
        for scale in [0.5, 1.0 / 3.0, 0.25, 2.0, 3.0] {
            let out = imresize(&img, Resize { scale });
            assert_eq!(out.width, output_len(12, scale));
            assert!(out.data.iter().all(|&v| v == 77.0));
        }
    }
}
