//! The diagonal box sum of a pixel-pair map, in tensor ops (so it differentiates and runs on
//! every backend): for `x` indexed by a query pixel `(y, x)` and a key pixel `(ky, kx)`,
//!
//! ```text
//!   out[n, y, x, ky, kx] = Σ_{|oy|, |ox| <= r} x[n, y+oy, x+ox, ky+oy, kx+ox]   (zero outside)
//! ```
//!
//! It turns pixel-by-pixel products into `(2r+1)²`-block products: with
//! `x = f(q)ᵀ g(l)` it is the block matching of pyramid attention, and applied to the
//! attention weights it is the pasting (see `streaming_attention` for the identity). Computed
//! separably: `2r+1` shifted adds along the column pair, then `2r+1` along the row pair.

use burn::tensor::Tensor;

/// The diagonal box sum of radius `radius` of `x`: `[N, H, W, h, w]` to the same shape.
pub fn diagonal_box_sum(x: Tensor<5>, radius: usize) -> Tensor<5> {
    if radius == 0 {
        return x;
    }
    let [n, height, width, h, w] = x.dims();
    let r = radius;
    let padded = Tensor::<5>::zeros(
        [n, height + 2 * r, width + 2 * r, h + 2 * r, w + 2 * r],
        &x.device(),
    )
    .slice_assign([0..n, r..r + height, r..r + width, r..r + h, r..r + w], x);
    // Along the column pair (x, kx): [N, H+2r, W, h+2r, w].
    let columns = (0..=2 * r)
        .map(|d| {
            padded.clone().slice([
                0..n,
                0..height + 2 * r,
                d..d + width,
                0..h + 2 * r,
                d..d + w,
            ])
        })
        .reduce(|a, b| a + b)
        .expect("at least one offset");
    // Along the row pair (y, ky): [N, H, W, h, w].
    (0..=2 * r)
        .map(|d| {
            columns
                .clone()
                .slice([0..n, d..d + height, 0..width, d..d + h, 0..w])
        })
        .reduce(|a, b| a + b)
        .expect("at least one offset")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn equals_the_direct_sum() {
        let device = burn::tensor::Device::flex();
        let (n, hh, ww, h, w) = (2, 4, 5, 3, 6);
        let x = Tensor::<5>::random([n, hh, ww, h, w], Distribution::Normal(0.0, 1.0), &device);
        let values = x.clone().into_data().try_into_vec::<f32>().unwrap();
        let at = |b: usize, y: isize, xx: isize, ky: isize, kx: isize| -> f32 {
            if y < 0 || xx < 0 || ky < 0 || kx < 0 {
                return 0.0;
            }
            let (y, xx, ky, kx) = (y as usize, xx as usize, ky as usize, kx as usize);
            if y >= hh || xx >= ww || ky >= h || kx >= w {
                return 0.0;
            }
            values[(((b * hh + y) * ww + xx) * h + ky) * w + kx]
        };
        for r in [1usize, 2] {
            let mut expected = Vec::new();
            for b in 0..n {
                for y in 0..hh as isize {
                    for xx in 0..ww as isize {
                        for ky in 0..h as isize {
                            for kx in 0..w as isize {
                                let mut s = 0.0;
                                for oy in -(r as isize)..=r as isize {
                                    for ox in -(r as isize)..=r as isize {
                                        s += at(b, y + oy, xx + ox, ky + oy, kx + ox);
                                    }
                                }
                                expected.push(s);
                            }
                        }
                    }
                }
            }
            let got = diagonal_box_sum(x.clone(), r);
            let expected =
                Tensor::<5>::from_data(TensorData::new(expected, [n, hh, ww, h, w]), &device);
            let d = (got - expected).abs().max().into_scalar::<f32>();
            assert!(d < 1e-5, "radius {r}: {d}");
        }
    }
}
