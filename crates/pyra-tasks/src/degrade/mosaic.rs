//! Bayer mosaicking with the GRBG pattern PANet's demosaicing network is trained on: G at
//! (0,0) and (1,1), R at (0,1), B at (1,0) of every 2x2 cell. The result keeps three channels,
//! each holding its own samples and zeros elsewhere.

use crate::image::Image;

/// Which channel is sampled at `(y, x)` under GRBG: 0 = R, 1 = G, 2 = B.
pub fn grbg_channel(y: usize, x: usize) -> usize {
    match (y % 2, x % 2) {
        (0, 0) | (1, 1) => 1,
        (0, 1) => 0,
        _ => 2,
    }
}

/// The GRBG mosaic of an RGB image.
///
/// # Panics
/// If the image is not RGB.
pub fn mosaic_grbg(image: &Image) -> Image {
    assert_eq!(image.channels, 3, "mosaicking needs an RGB image");
    let mut out = Image::zeros(image.width, image.height, 3);
    out.bit_depth = image.bit_depth;
    for y in 0..image.height {
        for x in 0..image.width {
            let c = grbg_channel(y, x);
            let i = (c * image.height + y) * image.width + x;
            out.data[i] = image.data[i];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_grbg() {
        let img = Image::new(2, 2, 3, (1..=12).map(|v| v as f32).collect());
        let m = mosaic_grbg(&img);
        // R plane keeps (0,1); G plane keeps (0,0) and (1,1); B plane keeps (1,0).
        assert_eq!(m.plane(0), &[0.0, 2.0, 0.0, 0.0]);
        assert_eq!(m.plane(1), &[5.0, 0.0, 0.0, 8.0]);
        assert_eq!(m.plane(2), &[0.0, 0.0, 11.0, 0.0]);
    }
}
