//! The pyramid non-local block (PNEN, Zhu, Fang, Ma): a full-resolution query attends to
//! keys and values at several coarser scales, one non-local operation per scale.
//!
//! ```text
//!   q     = Q(x)                                  1x1 conv, m channels, full resolution
//!   k_s   = K_s(x),  v_s = V_s(x)                 conv with kernel = stride = 2^s, s = 1..S
//!                                                 (m and n channels)
//!   y_s,i = Σ_j softmax_j( q_iᵀ k_s,j ) · v_s,j   one non-local operation per scale
//!   z     = F( concat_s y_s ) + x                 1x1 conv back to the input channels
//! ```
//!
//! Paper settings: m = 64, n = 32, S = 3 (strides 2, 4, 8). The score map of scale `s` is
//! `[HW, HW / 4^s]`, so the three scales together hold about a third of one `[HW, HW/4]` map
//! instead of the non-local block's `[HW, HW]`.
//!
//! What the paper leaves open, and the choice made here:
//! - sizes that are not multiples of `2^s`: the input is padded on the bottom and right by
//!   repeating its last row/column up to the next multiple before the strided convolution, so
//!   every pixel reaches some key and no key sees zeros;
//! - the keys/values have no activation and the scores no scaling (embedded Gaussian, as the
//!   non-local block PNEN builds on); the 1x1 convolutions have biases.

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use super::default_conv;
use super::non_local::flatten_spatial;

#[derive(Config, Debug, PartialEq)]
pub struct PyramidNonLocalConfig {
    /// Channels of the block input.
    pub channels: usize,
    /// Query/key channels (m).
    #[config(default = 64)]
    pub key_channels: usize,
    /// Value channels per scale (n).
    #[config(default = 32)]
    pub value_channels: usize,
    /// Number of scales S (strides 2, 4, ..., 2^S).
    #[config(default = 3)]
    pub scales: usize,
}

impl PyramidNonLocalConfig {
    pub fn init(&self, device: &Device) -> PyramidNonLocal {
        let (c, m, n) = (self.channels, self.key_channels, self.value_channels);
        let strided = |out: usize, s: usize| {
            let k = 1usize << s;
            Conv2dConfig::new([c, out], [k, k])
                .with_stride([k, k])
                .with_bias(true)
                .init(device)
        };
        PyramidNonLocal {
            query: default_conv(c, m, 1, device),
            keys: (1..=self.scales).map(|s| strided(m, s)).collect(),
            values: (1..=self.scales).map(|s| strided(n, s)).collect(),
            fuse: default_conv(n * self.scales, c, 1, device),
        }
    }
}

#[derive(Module, Debug)]
pub struct PyramidNonLocal {
    pub query: Conv2d,
    /// `keys.{s-1}`: kernel = stride = 2^s.
    pub keys: Vec<Conv2d>,
    pub values: Vec<Conv2d>,
    pub fuse: Conv2d,
}

/// Pad `x` on the bottom and right, repeating the last row/column, to multiples of `m`.
pub(crate) fn pad_replicate_to_multiple(x: Tensor<4>, m: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
    let mut x = x;
    if pw > 0 {
        let last = x.clone().narrow(3, w - 1, 1).repeat_dim(3, pw);
        x = Tensor::cat(vec![x, last], 3);
    }
    if ph > 0 {
        let last = x.clone().narrow(2, h - 1, 1).repeat_dim(2, ph);
        x = Tensor::cat(vec![x, last], 2);
    }
    debug_assert_eq!(x.dims(), [n, c, h + ph, w + pw]);
    x
}

impl PyramidNonLocal {
    /// The attention of every query pixel over the keys of each scale: `[N, HW, L_s]`.
    pub fn attention_maps(&self, x: Tensor<4>) -> Vec<Tensor<3>> {
        let query = flatten_spatial(conv2d(&self.query, x.clone())).swap_dims(1, 2);
        self.keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let padded = pad_replicate_to_multiple(x.clone(), 1 << (i + 1));
                softmax(
                    query.clone().matmul(flatten_spatial(conv2d(key, padded))),
                    2,
                )
            })
            .collect()
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, _, h, w] = x.dims();
        let maps = self.attention_maps(x.clone());
        let per_scale: Vec<Tensor<3>> = maps
            .into_iter()
            .zip(&self.values)
            .enumerate()
            .map(|(i, (attention, value))| {
                let padded = pad_replicate_to_multiple(x.clone(), 1 << (i + 1));
                let v = flatten_spatial(conv2d(value, padded)).swap_dims(1, 2); // [N, L_s, n]
                attention.matmul(v) // [N, HW, n]
            })
            .collect();
        let y = Tensor::cat(per_scale, 2).swap_dims(1, 2); // [N, S*n, HW]
        let [_, sn, _] = y.dims();
        conv2d(&self.fuse, y.reshape([n, sn, h, w])) + x
    }
}
