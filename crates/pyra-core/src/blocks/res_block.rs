//! `common.ResBlock`: `x + res_scale * conv(act(conv(x)))`, the body a `nn.Sequential` whose
//! indices (`body.0`, `body.1`, `body.2`) are the checkpoint keys.

use crate::ops::fused_conv::conv2d;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Relu;
use burn::tensor::{Device, Tensor};

use super::{default_conv, Prelu};

/// The activation between the two convolutions.
#[derive(Module, Debug)]
pub enum Activation {
    /// PANet: `nn.PReLU()` — in the official code one slope shared by every res-block.
    PReLU(Prelu),
    /// EDSR / PA-EDSR: `nn.ReLU(True)`, no parameters.
    ReLU(Relu),
}

impl Activation {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::PReLU(prelu) => prelu.forward(x),
            Self::ReLU(relu) => relu.forward(x),
        }
    }
}

#[derive(Module, Debug)]
pub struct ResBlock {
    pub body: (Conv2d, Activation, Conv2d),
    pub res_scale: f64,
}

impl ResBlock {
    /// `ResBlock(conv, n_feats, ksize, act=act, res_scale=res_scale)`; pass a clone of one
    /// [`Prelu`] to several blocks to share its slope (same parameter id).
    pub fn new(
        n_feats: usize,
        ksize: usize,
        act: Activation,
        res_scale: f64,
        device: &Device,
    ) -> Self {
        Self {
            body: (
                default_conv(n_feats, n_feats, ksize, device),
                act,
                default_conv(n_feats, n_feats, ksize, device),
            ),
            res_scale,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (conv1, act, conv2) = &self.body;
        let res = conv2d(conv2, act.forward(conv2d(conv1, x.clone())));
        res.mul_scalar(self.res_scale) + x
    }
}
