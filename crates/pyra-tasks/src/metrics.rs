//! PSNR and SSIM as the papers' MATLAB scripts compute them (and BasicSR / scikit-image with
//! the matching options), in double precision.
//!
//! - Y channel: ITU-R BT.601 studio range, `16 + (65.481 R + 128.553 G + 24.966 B) / 255`
//!   with R, G, B on 0-255, kept in float (no rounding). Gray images are their own Y.
//! - Border shave: `shave` pixels removed from every side before scoring (SR: the scale).
//! - PSNR: `10 log10(255² / MSE)`, MSE over every pixel of every channel.
//! - SSIM (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5, K = (0.01, 0.03),
//!   L = 255, 'valid' filtering (no padding), the mean of the SSIM map; for RGB the mean of
//!   the three channels' SSIMs.

use crate::image::Image;

/// Which pixels are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricOptions {
    /// Score the BT.601 luma instead of every channel.
    pub y_channel: bool,
    /// Pixels removed from each border.
    pub shave: usize,
}

/// The luma plane of an RGB image (or the gray plane itself), on the 0-255 scale.
pub fn luma(image: &Image) -> Vec<f32> {
    luma_f64(image).into_iter().map(|v| v as f32).collect()
}

fn luma_f64(image: &Image) -> Vec<f64> {
    if image.channels == 1 {
        return image.plane(0).iter().map(|&v| v as f64).collect();
    }
    let (r, g, b) = (image.plane(0), image.plane(1), image.plane(2));
    (0..r.len())
        .map(|i| {
            16.0 + (65.481 * r[i] as f64 + 128.553 * g[i] as f64 + 24.966 * b[i] as f64) / 255.0
        })
        .collect()
}

/// The planes that are scored, shaved, as `(width, height, planes)`.
fn scored_planes(image: &Image, options: MetricOptions) -> (usize, usize, Vec<Vec<f64>>) {
    let planes: Vec<Vec<f64>> = if options.y_channel {
        vec![luma_f64(image)]
    } else {
        (0..image.channels)
            .map(|c| image.plane(c).iter().map(|&v| v as f64).collect())
            .collect()
    };
    let s = options.shave;
    let (w, h) = (image.width, image.height);
    assert!(
        w > 2 * s && h > 2 * s,
        "image {w}x{h} too small to shave {s} pixels"
    );
    let (sw, sh) = (w - 2 * s, h - 2 * s);
    let planes = planes
        .into_iter()
        .map(|p| {
            let mut out = Vec::with_capacity(sw * sh);
            for y in s..h - s {
                out.extend_from_slice(&p[y * w + s..y * w + w - s]);
            }
            out
        })
        .collect();
    (sw, sh, planes)
}

fn check_pair(a: &Image, b: &Image) -> Result<(), String> {
    if a.width != b.width || a.height != b.height {
        return Err(format!(
            "sizes differ: {}x{} vs {}x{}",
            a.width, a.height, b.width, b.height
        ));
    }
    if a.channels != b.channels {
        return Err(format!(
            "channel counts differ: {} vs {}",
            a.channels, b.channels
        ));
    }
    Ok(())
}

/// PSNR in dB between two images on the 0-255 scale (infinite when identical).
pub fn psnr(a: &Image, b: &Image, options: MetricOptions) -> Result<f64, String> {
    check_pair(a, b)?;
    let (_, _, pa) = scored_planes(a, options);
    let (_, _, pb) = scored_planes(b, options);
    let mut sum = 0f64;
    let mut count = 0usize;
    for (x, y) in pa.iter().zip(&pb) {
        for (u, v) in x.iter().zip(y) {
            sum += (u - v) * (u - v);
        }
        count += x.len();
    }
    let mse = sum / count as f64;
    Ok(if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    })
}

/// SSIM between two images on the 0-255 scale.
pub fn ssim(a: &Image, b: &Image, options: MetricOptions) -> Result<f64, String> {
    check_pair(a, b)?;
    let (w, h, pa) = scored_planes(a, options);
    let (_, _, pb) = scored_planes(b, options);
    if w < WINDOW || h < WINDOW {
        return Err(format!(
            "SSIM needs at least {WINDOW}x{WINDOW} pixels after shaving, got {w}x{h}"
        ));
    }
    let total: f64 = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| ssim_plane(x, y, w, h))
        .sum();
    Ok(total / pa.len() as f64)
}

const WINDOW: usize = 11;
const SIGMA: f64 = 1.5;

/// The normalised 1-D Gaussian (MATLAB `fspecial('gaussian', 11, 1.5)` is its outer product).
fn gaussian_1d() -> [f64; WINDOW] {
    let mut g = [0f64; WINDOW];
    let r = (WINDOW / 2) as f64;
    for (i, v) in g.iter_mut().enumerate() {
        let x = i as f64 - r;
        *v = (-(x * x) / (2.0 * SIGMA * SIGMA)).exp();
    }
    let sum: f64 = g.iter().sum();
    g.iter_mut().for_each(|v| *v /= sum);
    g
}

/// 'valid' separable Gaussian filtering of a `w x h` plane.
fn filter_valid(p: &[f64], w: usize, h: usize, g: &[f64; WINDOW]) -> Vec<f64> {
    let (ow, oh) = (w - WINDOW + 1, h - WINDOW + 1);
    let mut rows = vec![0f64; ow * h];
    for y in 0..h {
        for x in 0..ow {
            let mut s = 0.0;
            for (k, gk) in g.iter().enumerate() {
                s += gk * p[y * w + x + k];
            }
            rows[y * ow + x] = s;
        }
    }
    let mut out = vec![0f64; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            let mut s = 0.0;
            for (k, gk) in g.iter().enumerate() {
                s += gk * rows[(y + k) * ow + x];
            }
            out[y * ow + x] = s;
        }
    }
    out
}

fn ssim_plane(a: &[f64], b: &[f64], w: usize, h: usize) -> f64 {
    let g = gaussian_1d();
    let c1 = (0.01f64 * 255.0).powi(2);
    let c2 = (0.03f64 * 255.0).powi(2);
    let aa: Vec<f64> = a.iter().map(|v| v * v).collect();
    let bb: Vec<f64> = b.iter().map(|v| v * v).collect();
    let ab: Vec<f64> = a.iter().zip(b).map(|(x, y)| x * y).collect();
    let mu_a = filter_valid(a, w, h, &g);
    let mu_b = filter_valid(b, w, h, &g);
    let s_aa = filter_valid(&aa, w, h, &g);
    let s_bb = filter_valid(&bb, w, h, &g);
    let s_ab = filter_valid(&ab, w, h, &g);
    let mut total = 0f64;
    for i in 0..mu_a.len() {
        let (ma, mb) = (mu_a[i], mu_b[i]);
        let var_a = s_aa[i] - ma * ma;
        let var_b = s_bb[i] - mb * mb;
        let cov = s_ab[i] - ma * mb;
        total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
            / ((ma * ma + mb * mb + c1) * (var_a + var_b + c2));
    }
    total / mu_a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_score_perfectly() {
        let img = Image::new(16, 16, 3, (0..768).map(|v| (v % 251) as f32).collect());
        let o = MetricOptions {
            y_channel: false,
            shave: 0,
        };
        assert!(psnr(&img, &img, o).unwrap().is_infinite());
        assert!((ssim(&img, &img, o).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_a_known_error() {
        // Every pixel off by 5: MSE 25, PSNR = 10 log10(255²/25) = 34.1514 dB.
        let a = Image::new(4, 4, 1, vec![100.0; 16]);
        let b = Image::new(4, 4, 1, vec![105.0; 16]);
        let p = psnr(
            &a,
            &b,
            MetricOptions {
                y_channel: false,
                shave: 0,
            },
        )
        .unwrap();
        assert!((p - 34.151_403_521_958_55).abs() < 1e-9);
    }

    #[test]
    fn luma_of_white_and_black() {
        let img = Image::new(2, 1, 3, vec![255.0, 0.0, 255.0, 0.0, 255.0, 0.0]);
        let y = luma(&img);
        assert!((y[0] - 235.0).abs() < 1e-4 && (y[1] - 16.0).abs() < 1e-4);
    }
}
