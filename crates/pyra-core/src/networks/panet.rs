//! PANet for colour/gray denoising, demosaicing and JPEG artifact reduction (the official
//! `DN_RGB/code/model/panet.py`): `tail(body(head(x)) + head(x))`, with a pyramid attention after
//! the first half of the res-blocks (`body.40` for the paper's 80 blocks).
//!
//! Official behaviours kept: all res-blocks share ONE PReLU slope (the official code passes a
//! single default-argument `nn.PReLU()` to every block; the checkpoint has one aliased key per
//! block), and `sub_mean`/`add_mean` exist (and are loaded) but are not used by the forward.

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::body::{residual_body, run_body, BodyLayer};
use crate::blocks::{default_conv, Activation, MeanShift, Prelu, PyramidAttentionConfig};
use crate::ops::Interp;

#[derive(Config, Debug, PartialEq)]
pub struct PaNetConfig {
    /// Res-blocks in the body (80 in the paper; 8 for PANet-S).
    #[config(default = 80)]
    pub n_resblocks: usize,
    #[config(default = 64)]
    pub n_feats: usize,
    /// 3 for colour, 1 for gray.
    #[config(default = 3)]
    pub n_colors: usize,
    #[config(default = 1.0)]
    pub res_scale: f64,
    /// Pixel value range of the input (official default 1).
    #[config(default = 1.0)]
    pub rgb_range: f64,
    /// Whether the body has its pyramid attention (`false` gives the paper's ablation
    /// baseline "w/o PA", a plain residual trunk; not an official argument).
    #[config(default = true)]
    pub with_attention: bool,
    /// The attention block (its `channel` is set to `n_feats`).
    #[config(default = "PyramidAttentionConfig::new()")]
    pub attention: PyramidAttentionConfig,
}

impl PaNetConfig {
    /// PANet-S: 8 res-blocks.
    pub fn small() -> Self {
        Self::new().with_n_resblocks(8)
    }

    /// Set the pyramid interpolation mode.
    pub fn with_interp(mut self, interp: Interp) -> Self {
        self.attention.interp = interp;
        self
    }

    pub fn init(&self, device: &Device) -> PaNet {
        let shared_prelu = Activation::PReLU(Prelu::new(device));
        let attention = self.with_attention.then(|| {
            self.attention
                .clone()
                .with_channel(self.n_feats)
                .init(device)
        });
        PaNet {
            sub_mean: MeanShift::new(self.rgb_range as f32, -1.0, device),
            add_mean: MeanShift::new(self.rgb_range as f32, 1.0, device),
            head: vec![default_conv(self.n_colors, self.n_feats, 3, device)],
            body: residual_body(
                self.n_resblocks,
                self.n_feats,
                &shared_prelu,
                self.res_scale,
                attention,
                device,
            ),
            tail: vec![default_conv(self.n_feats, self.n_colors, 3, device)],
        }
    }
}

#[derive(Module, Debug)]
pub struct PaNet {
    /// Present in the official state dict, unused by its forward.
    pub sub_mean: MeanShift,
    /// Present in the official state dict, unused by its forward.
    pub add_mean: MeanShift,
    pub head: Vec<Conv2d>,
    pub body: Vec<BodyLayer>,
    pub tail: Vec<Conv2d>,
}

impl PaNet {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.head[0], x);
        let res = run_body(&self.body, x.clone()) + x;
        conv2d(&self.tail[0], res)
    }
}
