//! The dilated residual block of PNEN (Zhu, Fang, Ma): five residual units in a row, the
//! `i`-th with dilation `d_i` (1, 2, 4, 2, 1), each
//!
//! ```text
//!   u_i(x) = x + Conv_{d_i}( ReLU( BN( Conv_{d_i}(x) ) ) )
//! ```
//!
//! The dilations widen the receptive field to 1 + 2 * 2 * (1 + 2 + 4 + 2 + 1) = 41 pixels
//! without pooling, so the non-local block that follows sees context-rich features at full
//! resolution.
//!
//! What the paper leaves open, and the choice made here: both convolutions of a unit are
//! 3x3 with the unit's dilation and `dilation` zero padding (the size is kept); the
//! convolutions have biases; BatchNorm is PyTorch's (momentum 0.1, eps 1e-5, batch statistics
//! in training — see [`BatchNorm`]).

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::BatchNorm;

#[derive(Config, Debug, PartialEq)]
pub struct DilatedResidualConfig {
    /// Channels in and out.
    pub channels: usize,
    /// One residual unit per dilation.
    #[config(default = "vec![1, 2, 4, 2, 1]")]
    pub dilations: Vec<usize>,
}

/// A 3x3 convolution with dilation `d` that keeps the size.
fn dilated_conv(channels: usize, d: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([channels, channels], [3, 3])
        .with_dilation([d, d])
        .with_padding(PaddingConfig2d::Explicit(d, d, d, d))
        .with_bias(true)
        .init(device)
}

impl DilatedResidualConfig {
    pub fn init(&self, device: &Device) -> DilatedResidual {
        let c = self.channels;
        DilatedResidual {
            units: self
                .dilations
                .iter()
                .map(|&d| ResidualUnit {
                    conv1: dilated_conv(c, d, device),
                    bn: BatchNorm::new(c, 1e-5, device),
                    conv2: dilated_conv(c, d, device),
                })
                .collect(),
        }
    }
}

/// `x + conv2(relu(bn(conv1(x))))`.
#[derive(Module, Debug)]
pub struct ResidualUnit {
    pub conv1: Conv2d,
    pub bn: BatchNorm,
    pub conv2: Conv2d,
}

impl ResidualUnit {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let r = conv2d(
            &self.conv2,
            relu(self.bn.forward(conv2d(&self.conv1, x.clone()))),
        );
        x + r
    }
}

#[derive(Module, Debug)]
pub struct DilatedResidual {
    pub units: Vec<ResidualUnit>,
}

impl DilatedResidual {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.units.iter().fold(x, |x, unit| unit.forward(x))
    }
}
