//! The residual trunk shared by PANet, PA-EDSR and EDSR: an `nn.Sequential` of res-blocks,
//! optionally a pyramid attention in the middle, and a final 3x3 convolution.

use crate::ops::fused_conv::conv2d;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use crate::blocks::{default_conv, Activation, PyramidAttention, ResBlock};

/// One entry of the official `body` Sequential (its index is the key prefix `body.{i}`).
// Layers live once per model and burn's Module derive takes variants by value: boxing the
// large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum BodyLayer {
    ResBlock(ResBlock),
    PyramidAttention(PyramidAttention),
    Conv(Conv2d),
}

/// `[n/2 res-blocks, attention?, n/2 res-blocks, conv]`, as the official constructors build it.
/// `activation` is cloned into every block (clones of one `Prelu` share one parameter).
pub fn residual_body(
    n_resblocks: usize,
    n_feats: usize,
    activation: &Activation,
    res_scale: f64,
    attention: Option<PyramidAttention>,
    device: &Device,
) -> Vec<BodyLayer> {
    let block = || {
        BodyLayer::ResBlock(ResBlock::new(
            n_feats,
            3,
            activation.clone(),
            res_scale,
            device,
        ))
    };
    let half = n_resblocks / 2;
    let mut body: Vec<BodyLayer> = (0..half).map(|_| block()).collect();
    if let Some(attention) = attention {
        body.push(BodyLayer::PyramidAttention(attention));
    }
    body.extend((half..n_resblocks).map(|_| block()));
    body.push(BodyLayer::Conv(default_conv(n_feats, n_feats, 3, device)));
    body
}

/// Run the body in order.
pub fn run_body(body: &[BodyLayer], mut x: Tensor<4>) -> Tensor<4> {
    for layer in body {
        x = match layer {
            BodyLayer::ResBlock(block) => block.forward(x),
            BodyLayer::PyramidAttention(attention) => attention.forward(x),
            BodyLayer::Conv(conv) => conv2d(conv, x),
        };
    }
    x
}
