//! Fixed-size tiles with overlap and smooth blending.
//!
//! Every tile has the same size (the last one along an axis is moved back inside the image),
//! so tiles see the same amount of context. Each tile's output is weighted by a window that is
//! zero over the first 3/8 of the overlap at its inner edges (where the tile's own zero padding
//! makes its output differ from the whole image's), rises with a raised cosine over the next
//! quarter, and is one elsewhere; image borders are not tapered. Outputs are summed with their
//! weights and normalised: no seams, and memory bounded by one tile.

use pyra_core::burn::tensor::{Tensor, TensorData};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileOptions {
    /// Tile side in input pixels.
    pub tile: usize,
    /// Overlap between neighbouring tiles in input pixels.
    pub overlap: usize,
    /// Tiles per forward (a batch: small tiles spend less on per-call overhead), at least 1.
    pub batch: usize,
}

/// Start offsets of tiles of `tile` pixels covering `len` with at least `overlap` overlap.
pub fn tile_starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let stride = (tile - overlap).max(1);
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&s| s + tile < len)
        .collect();
    starts.push(len - tile);
    starts
}

/// Blending weight along one axis of a tile of `len` output pixels.
fn axis_weights(len: usize, overlap: usize, taper_start: bool, taper_end: bool) -> Vec<f32> {
    let zero = overlap * 3 / 8;
    let ramp = (overlap / 4).max(1);
    let w = |d: usize| -> f32 {
        if d < zero {
            0.0
        } else if d >= zero + ramp {
            1.0
        } else {
            let t = (d - zero) as f32 + 0.5;
            0.5 - 0.5 * (std::f32::consts::PI * t / ramp as f32).cos()
        }
    };
    (0..len)
        .map(|i| {
            let a = if taper_start { w(i) } else { 1.0 };
            let b = if taper_end { w(len - 1 - i) } else { 1.0 };
            a.min(b)
        })
        .collect()
}

/// Run `network` tile by tile over `x` ([1, C, H, W]); `scale` is output/input size.
pub fn forward_tiled(
    x: Tensor<4>,
    scale: usize,
    options: TileOptions,
    network: &dyn Fn(Tensor<4>) -> Tensor<4>,
) -> Tensor<4> {
    forward_tiled_with_progress(x, scale, options, network, &|_, _| {})
}

/// [`forward_tiled`], calling `progress(done, total)` after each tile.
pub fn forward_tiled_with_progress(
    x: Tensor<4>,
    scale: usize,
    options: TileOptions,
    network: &dyn Fn(Tensor<4>) -> Tensor<4>,
    progress: &dyn Fn(usize, usize),
) -> Tensor<4> {
    let [n, _, h, w] = x.dims();
    assert!(
        options.overlap * 2 < options.tile,
        "the overlap ({}) must be less than half the tile ({})",
        options.overlap,
        options.tile
    );
    if h <= options.tile && w <= options.tile {
        return network(x);
    }
    let device = x.device();
    let (th, tw) = (options.tile.min(h), options.tile.min(w));
    let ys = tile_starts(h, th, options.overlap);
    let xs = tile_starts(w, tw, options.overlap);
    let (oh, ow) = (h * scale, w * scale);
    let mut sum: Vec<f32> = Vec::new();
    let mut weight = vec![0f32; oh * ow];
    let mut channels = 0;
    let total = ys.len() * xs.len();
    let corners: Vec<(usize, usize)> = ys
        .iter()
        .flat_map(|&y0| xs.iter().map(move |&x0| (y0, x0)))
        .collect();
    let mut done = 0;
    for group in corners.chunks(options.batch.max(1)) {
        let tiles: Vec<Tensor<4>> = group
            .iter()
            .map(|&(y0, x0)| x.clone().narrow(2, y0, th).narrow(3, x0, tw))
            .collect();
        let outputs = network(Tensor::cat(tiles, 0));
        for (k, &(y0, x0)) in group.iter().enumerate() {
            let out = outputs.clone().narrow(0, k * n, n);
            done += 1;
            progress(done, total);
            let [_, c, toh, tow] = out.dims();
            if sum.is_empty() {
                channels = c;
                sum = vec![0f32; n * c * oh * ow];
            }
            let values = out
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 output");
            let wy = axis_weights(toh, options.overlap * scale, y0 > 0, y0 + th < h);
            let wx = axis_weights(tow, options.overlap * scale, x0 > 0, x0 + tw < w);
            let (oy, ox) = (y0 * scale, x0 * scale);
            for b in 0..n {
                for ch in 0..c {
                    for i in 0..toh {
                        for j in 0..tow {
                            let wt = wy[i] * wx[j];
                            if wt == 0.0 {
                                continue;
                            }
                            let v = values[((b * c + ch) * toh + i) * tow + j];
                            sum[((b * c + ch) * oh + oy + i) * ow + ox + j] += wt * v;
                        }
                    }
                }
            }
            for i in 0..toh {
                for j in 0..tow {
                    weight[(oy + i) * ow + ox + j] += wy[i] * wx[j];
                }
            }
        }
    }
    for b in 0..n {
        for ch in 0..channels {
            let plane = &mut sum[(b * channels + ch) * oh * ow..(b * channels + ch + 1) * oh * ow];
            for (v, wt) in plane.iter_mut().zip(&weight) {
                *v /= *wt;
            }
        }
    }
    Tensor::from_data(TensorData::new(sum, [n, channels, oh, ow]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyra_core::backend;
    use pyra_core::burn::tensor::Distribution;

    #[test]
    fn tiles_cover_and_have_equal_size() {
        assert_eq!(tile_starts(100, 100, 10), vec![0]);
        assert_eq!(tile_starts(250, 100, 20), vec![0, 80, 150]);
        for len in [101, 177, 333] {
            let starts = tile_starts(len, 64, 16);
            assert_eq!(*starts.last().unwrap() + 64, len);
            for pair in starts.windows(2) {
                assert!(pair[1] - pair[0] <= 64 - 16);
            }
        }
    }

    #[test]
    fn pointwise_network_is_exact_and_weights_cover_everything() {
        let device = backend::cpu();
        let x = Tensor::<4>::random([1, 3, 150, 131], Distribution::Uniform(0.0, 1.0), &device);
        for scale in [1usize, 2] {
            let net = |t: Tensor<4>| {
                let [n, c, h, w] = t.dims();
                t.add_scalar(1.0)
                    .reshape([n, c, h, 1, w, 1])
                    .expand([n, c, h, scale, w, scale])
                    .reshape([n, c, h * scale, w * scale])
            };
            let whole = net(x.clone());
            let tiled = forward_tiled(
                x.clone(),
                scale,
                TileOptions {
                    tile: 48,
                    overlap: 16,
                    batch: 3,
                },
                &net,
            );
            let diff = (tiled - whole).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "scale {scale}: {diff}");
        }
    }
}
