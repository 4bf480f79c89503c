//! `common.Upsampler`: for scale 2^k, k times (3x3 conv to 4 * C, PixelShuffle(2)); for scale 3,
//! one 3x3 conv to 9 * C and PixelShuffle(3). No activation (the official `act=False`).
//! A `nn.Sequential`, so it is a `Vec` here and the conv indices (0, 2, ...) are the keys.

use crate::ops::fused_conv::conv2d;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{PixelShuffle, PixelShuffleConfig};
use burn::tensor::{Device, Tensor};

use super::default_conv;

// Layers live once per model and burn's Module derive takes variants by value: boxing the
// large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum UpsamplerLayer {
    Conv(Conv2d),
    PixelShuffle(PixelShuffle),
}

/// The upsampler's layers, in order.
pub type Upsampler = Vec<UpsamplerLayer>;

/// Whether [`upsampler`] supports `scale`.
pub fn supported_scale(scale: usize) -> bool {
    scale == 3 || (scale >= 2 && scale.is_power_of_two())
}

/// Build the official upsampler for `scale` (2, 3, 4, 8, ...).
///
/// # Panics
/// If the scale is not 3 or a power of two (check with [`supported_scale`] first).
pub fn upsampler(scale: usize, n_feats: usize, device: &Device) -> Upsampler {
    assert!(
        supported_scale(scale),
        "unsupported upsampling scale {scale}"
    );
    let mut layers = Vec::new();
    if scale == 3 {
        layers.push(UpsamplerLayer::Conv(default_conv(
            n_feats,
            9 * n_feats,
            3,
            device,
        )));
        layers.push(UpsamplerLayer::PixelShuffle(
            PixelShuffleConfig::new(3).init(),
        ));
    } else {
        for _ in 0..scale.trailing_zeros() {
            layers.push(UpsamplerLayer::Conv(default_conv(
                n_feats,
                4 * n_feats,
                3,
                device,
            )));
            layers.push(UpsamplerLayer::PixelShuffle(
                PixelShuffleConfig::new(2).init(),
            ));
        }
    }
    layers
}

/// Run the upsampler.
pub fn upsample(layers: &Upsampler, mut x: Tensor<4>) -> Tensor<4> {
    for layer in layers {
        x = match layer {
            UpsamplerLayer::Conv(conv) => conv2d(conv, x),
            UpsamplerLayer::PixelShuffle(shuffle) => shuffle.forward(x),
        };
    }
    x
}
