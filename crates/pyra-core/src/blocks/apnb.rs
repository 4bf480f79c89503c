//! The asymmetric pyramid non-local block (APNB, Zhu et al., "Asymmetric Non-local Neural
//! Networks for Semantic Segmentation", ICCV 2019), PNEN's second baseline: keys and values are
//! average-pooled to 1x1, 3x3, 6x6 and 8x8 grids (110 positions in all) before the non-local
//! operation, so the score map is `[HW, 110]`.
//!
//! ```text
//!   y_i = Σ_j softmax_j( θ(x_i)ᵀ P(φ(x))_j ) · P(g(x))_j,     z = W(y) + x
//! ```
//!
//! `θ`, `φ`, `g` are 1x1 convolutions to `inter_channels` (half the input by default), `P`
//! the pyramid pooling, `W` a 1x1 convolution back. The ICCV block fuses `W(y)` with `x` by
//! concatenation and another convolution; PNEN compares the blocks as residual modules, and the
//! residual form is used here so that all three baselines have the same interface.

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::softmax;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};

use super::default_conv;
use super::non_local::flatten_spatial;

#[derive(Config, Debug, PartialEq)]
pub struct ApnbConfig {
    pub channels: usize,
    #[config(default = "None")]
    pub inter_channels: Option<usize>,
    /// Output grid sides of the pyramid pooling.
    #[config(default = "vec![1, 3, 6, 8]")]
    pub pool_sizes: Vec<usize>,
}

impl ApnbConfig {
    pub fn init(&self, device: &Device) -> Apnb {
        let c = self.channels;
        let ci = self.inter_channels.unwrap_or((c / 2).max(1));
        Apnb {
            theta: default_conv(c, ci, 1, device),
            phi: default_conv(c, ci, 1, device),
            g: default_conv(c, ci, 1, device),
            w: default_conv(ci, c, 1, device),
            pool_sizes: self.pool_sizes.clone(),
        }
    }
}

#[derive(Module, Debug)]
pub struct Apnb {
    pub theta: Conv2d,
    pub phi: Conv2d,
    pub g: Conv2d,
    pub w: Conv2d,
    pub pool_sizes: Vec<usize>,
}

impl Apnb {
    /// `[N, C, H, W] -> [N, C, Σ s²]`: the pooled grids, flattened and concatenated.
    fn pyramid_pool(&self, x: Tensor<4>) -> Tensor<3> {
        let pooled = self
            .pool_sizes
            .iter()
            .map(|&s| flatten_spatial(adaptive_avg_pool2d(x.clone(), [s, s])))
            .collect();
        Tensor::cat(pooled, 2)
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, _, h, w] = x.dims();
        let query = flatten_spatial(conv2d(&self.theta, x.clone())).swap_dims(1, 2); // [N, HW, Ci]
        let key = self.pyramid_pool(conv2d(&self.phi, x.clone())); // [N, Ci, P]
        let value = self
            .pyramid_pool(conv2d(&self.g, x.clone()))
            .swap_dims(1, 2); // [N, P, Ci]
        let y = softmax(query.matmul(key), 2).matmul(value).swap_dims(1, 2);
        let [_, ci, _] = y.dims();
        conv2d(&self.w, y.reshape([n, ci, h, w])) + x
    }
}
