//! PA-EDSR for super-resolution (the official `SR/code/model/paedsr.py`): EDSR with a pyramid
//! attention after the middle res-block (`body.16` for 32 blocks), mean shift around the network
//! and a pixel-shuffle upsampler.
//!
//! The official module registers the attention twice (`self.msa` and inside `body`), so its
//! state dict has every attention tensor under two keys; here `msa` is a clone of the body's
//! attention (same parameter ids), so both keys load into one tensor and both are saved.

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Relu;
use burn::tensor::{Device, Tensor};

use super::body::{residual_body, run_body, BodyLayer};
use crate::blocks::upsampler::{supported_scale, upsample, upsampler};
use crate::blocks::{
    default_conv, Activation, MeanShift, PyramidAttention, PyramidAttentionConfig, Upsampler,
};
use crate::ops::Interp;

#[derive(Config, Debug, PartialEq)]
pub struct PaEdsrConfig {
    #[config(default = 32)]
    pub n_resblocks: usize,
    #[config(default = 256)]
    pub n_feats: usize,
    #[config(default = 3)]
    pub n_colors: usize,
    #[config(default = 0.1)]
    pub res_scale: f64,
    /// Upscaling factor: 2, 3 or 4 (any power of two works).
    #[config(default = 2)]
    pub scale: usize,
    #[config(default = 1.0)]
    pub rgb_range: f64,
    /// The attention block (its `channel` is set to `n_feats` and its `res_scale` to the
    /// network's, as the official constructor does; reduction 8).
    #[config(default = "PyramidAttentionConfig::new().with_reduction(8)")]
    pub attention: PyramidAttentionConfig,
}

impl PaEdsrConfig {
    pub fn with_interp(mut self, interp: Interp) -> Self {
        self.attention.interp = interp;
        self
    }

    /// Check the configuration; the message names the offending knob.
    pub fn validate(&self) -> Result<(), String> {
        if !supported_scale(self.scale) {
            return Err(format!(
                "scale must be 3 or a power of two, got {}",
                self.scale
            ));
        }
        self.attention.clone().with_channel(self.n_feats).validate()
    }

    pub fn init(&self, device: &Device) -> PaEdsr {
        if let Err(message) = self.validate() {
            panic!("invalid PA-EDSR configuration: {message}");
        }
        let msa = self
            .attention
            .clone()
            .with_channel(self.n_feats)
            .with_res_scale(self.res_scale)
            .init(device);
        PaEdsr {
            sub_mean: MeanShift::new(self.rgb_range as f32, -1.0, device),
            msa: msa.clone(),
            add_mean: MeanShift::new(self.rgb_range as f32, 1.0, device),
            head: vec![default_conv(self.n_colors, self.n_feats, 3, device)],
            body: residual_body(
                self.n_resblocks,
                self.n_feats,
                &Activation::ReLU(Relu::new()),
                self.res_scale,
                Some(msa),
                device,
            ),
            tail: (
                upsampler(self.scale, self.n_feats, device),
                default_conv(self.n_feats, self.n_colors, 3, device),
            ),
        }
    }
}

#[derive(Module, Debug)]
pub struct PaEdsr {
    pub sub_mean: MeanShift,
    /// The same attention as the one inside `body` (aliased keys `msa.*`).
    pub msa: PyramidAttention,
    pub add_mean: MeanShift,
    pub head: Vec<Conv2d>,
    pub body: Vec<BodyLayer>,
    pub tail: (Upsampler, Conv2d),
}

impl PaEdsr {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.head[0], self.sub_mean.forward(x));
        let res = run_body(&self.body, x.clone()) + x;
        let (up, conv) = &self.tail;
        self.add_mean.forward(conv2d(conv, upsample(up, res)))
    }
}
