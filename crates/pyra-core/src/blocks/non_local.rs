//! The non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018), embedded
//! Gaussian version, as PNEN's baseline "NLB":
//!
//! ```text
//!   y_i = Σ_j softmax_j( θ(x_i)ᵀ φ(x_j) ) · g(x_j),      z = W(y) + x
//! ```
//!
//! with `θ`, `φ`, `g` 1x1 convolutions to `inter_channels` (half the input by default) and `W` a
//! 1x1 convolution back. Every pixel attends to every pixel: the score map is `[HW, HW]` per
//! sample, which is what the pyramid non-local block shrinks.

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use super::default_conv;

#[derive(Config, Debug, PartialEq)]
pub struct NonLocalConfig {
    /// Channels of the block input.
    pub channels: usize,
    /// Channels of the embeddings (default: half of `channels`).
    #[config(default = "None")]
    pub inter_channels: Option<usize>,
}

impl NonLocalConfig {
    pub fn init(&self, device: &Device) -> NonLocal {
        let c = self.channels;
        let ci = self.inter_channels.unwrap_or((c / 2).max(1));
        NonLocal {
            theta: default_conv(c, ci, 1, device),
            phi: default_conv(c, ci, 1, device),
            g: default_conv(c, ci, 1, device),
            w: default_conv(ci, c, 1, device),
        }
    }
}

#[derive(Module, Debug)]
pub struct NonLocal {
    pub theta: Conv2d,
    pub phi: Conv2d,
    pub g: Conv2d,
    pub w: Conv2d,
}

/// `[N, C, H, W] -> [N, C, H*W]`.
pub(crate) fn flatten_spatial(x: Tensor<4>) -> Tensor<3> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w])
}

impl NonLocal {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, _, h, w] = x.dims();
        let query = flatten_spatial(conv2d(&self.theta, x.clone())).swap_dims(1, 2); // [N, HW, Ci]
        let key = flatten_spatial(conv2d(&self.phi, x.clone())); // [N, Ci, HW]
        let value = flatten_spatial(conv2d(&self.g, x.clone())).swap_dims(1, 2); // [N, HW, Ci]
        let attention = softmax(query.matmul(key), 2); // [N, HW, HW]
        let y = attention.matmul(value).swap_dims(1, 2); // [N, Ci, HW]
        let [_, ci, _] = y.dims();
        conv2d(&self.w, y.reshape([n, ci, h, w])) + x
    }
}
