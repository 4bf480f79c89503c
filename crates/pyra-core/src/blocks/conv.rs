//! The official `common.default_conv` and `common.BasicBlock`.

use crate::ops::fused_conv::conv2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::{Device, Tensor};

use super::Prelu;

/// `default_conv(in, out, k)`: a `k x k` convolution with bias and `k / 2` zero padding.
/// Initialisation is PyTorch's default (kaiming-uniform with a = sqrt(5), i.e.
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
pub fn default_conv(
    channels_in: usize,
    channels_out: usize,
    ksize: usize,
    device: &Device,
) -> Conv2d {
    let p = ksize / 2;
    Conv2dConfig::new([channels_in, channels_out], [ksize, ksize])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(true)
        .init(device)
}

/// `common.BasicBlock(conv, in, out, k, bn=False, act=nn.PReLU())`: a `nn.Sequential` of a
/// convolution (`.0`) and a PReLU (`.1`).
pub type BasicBlock = (Conv2d, Prelu);

/// A [`BasicBlock`] with a `1 x 1` convolution, as the attention's embeddings use.
pub fn basic_block_1x1(channels_in: usize, channels_out: usize, device: &Device) -> BasicBlock {
    (
        default_conv(channels_in, channels_out, 1, device),
        Prelu::new(device),
    )
}

/// Run a [`BasicBlock`].
pub fn basic_block(block: &BasicBlock, x: Tensor<4>) -> Tensor<4> {
    block.1.forward(conv2d(&block.0, x))
}
