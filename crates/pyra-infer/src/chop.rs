//! The official `forward_chop` (PANet/EDSR `model/__init__.py`): split the input into four
//! overlapping quadrants (each half plus `shave` pixels), recurse while a quadrant has at least
//! `min_size` pixels, run the network on each, and keep from each result the quadrant it owns.
//! Coordinates of the outputs are the input's times the SR scale.

use pyra_core::burn::tensor::Tensor;

/// The official chop settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChopOptions {
    /// Overlap added to each half, in input pixels (official: 10).
    pub shave: usize,
    /// A quadrant with fewer input pixels than this is run directly (official: 6800 for the
    /// restoration networks, 6400 for super-resolution).
    pub min_size: usize,
}

impl ChopOptions {
    /// The official settings for a network of SR factor `scale` (1 for restoration).
    pub fn official(scale: usize) -> Self {
        Self {
            shave: 10,
            min_size: if scale > 1 { 6400 } else { 6800 },
        }
    }
}

/// Run `network` on `x` ([N, C, H, W]) by official recursive quadrants; `scale` is the
/// network's output/input size ratio.
pub fn forward_chop(
    x: Tensor<4>,
    scale: usize,
    options: ChopOptions,
    network: &dyn Fn(Tensor<4>) -> Tensor<4>,
) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let (h_half, w_half) = (h / 2, w / 2);
    let (h_size, w_size) = (h_half + options.shave, w_half + options.shave);
    // A quadrant larger than the image would be a slice out of range; the official code then
    // takes what exists, i.e. the whole extent.
    let (h_size, w_size) = (h_size.min(h), w_size.min(w));
    let quadrants = [
        crop(&x, 0, h_size, 0, w_size),
        crop(&x, 0, h_size, w - w_size, w_size),
        crop(&x, h - h_size, h_size, 0, w_size),
        crop(&x, h - h_size, h_size, w - w_size, w_size),
    ];
    let outputs: Vec<Tensor<4>> = if w_size * h_size < options.min_size {
        quadrants.into_iter().map(network).collect()
    } else {
        quadrants
            .into_iter()
            .map(|q| forward_chop(q, scale, options, network))
            .collect()
    };
    let (h, w) = (scale * h, scale * w);
    let (h_half, w_half) = (scale * h_half, scale * w_half);
    let (h_size, w_size) = (scale * h_size, scale * w_size);
    let [a, b, c, d]: [Tensor<4>; 4] = outputs.try_into().expect("four quadrants");
    let top = Tensor::cat(
        vec![
            crop(&a, 0, h_half, 0, w_half),
            crop(&b, 0, h_half, w_size - w + w_half, w - w_half),
        ],
        3,
    );
    let bottom = Tensor::cat(
        vec![
            crop(&c, h_size - h + h_half, h - h_half, 0, w_half),
            crop(
                &d,
                h_size - h + h_half,
                h - h_half,
                w_size - w + w_half,
                w - w_half,
            ),
        ],
        3,
    );
    Tensor::cat(vec![top, bottom], 2)
}

/// Rows `y..y+height`, columns `x..x+width` of an NCHW tensor.
fn crop(t: &Tensor<4>, y: usize, height: usize, x: usize, width: usize) -> Tensor<4> {
    t.clone().narrow(2, y, height).narrow(3, x, width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyra_core::backend;
    use pyra_core::burn::tensor::Distribution;

    #[test]
    fn pointwise_network_is_reassembled_exactly() {
        // A network that acts per pixel gives the same result chopped or whole, at any scale.
        let device = backend::cpu();
        let x = Tensor::<4>::random([1, 2, 203, 157], Distribution::Uniform(0.0, 1.0), &device);
        for scale in [1usize, 2, 3] {
            let net = |t: Tensor<4>| {
                let [n, c, h, w] = t.dims();
                t.mul_scalar(2.0)
                    .reshape([n, c, h, 1, w, 1])
                    .expand([n, c, h, scale, w, scale])
                    .reshape([n, c, h * scale, w * scale])
            };
            let whole = net(x.clone());
            let chopped = forward_chop(x.clone(), scale, ChopOptions::official(scale), &net);
            assert_eq!(chopped.dims(), whole.dims());
            let diff = (chopped - whole).abs().max().into_scalar::<f32>();
            assert_eq!(diff, 0.0, "scale {scale}");
        }
    }
}
