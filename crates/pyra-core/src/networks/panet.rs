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

use super::arch::{parse, parse_bool, positive, set_attention, setting, Architecture, MemoryShape};
use super::body::{
    body_attention_input, body_attentions, body_attentions_mut, body_flops, body_min_input_side,
    residual_body, run_body, BodyLayer, TrunkKeys,
};
use super::cost::conv_flops;
use crate::blocks::{
    default_conv, Activation, MeanShift, Prelu, PyramidAttention, PyramidAttentionConfig,
};
use crate::ops::Interp;
use crate::weights::StateDict;

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

/// PANet in the registry ([`super::arch::Architecture`]).
pub struct PaNetArch;

impl Architecture for PaNetArch {
    type Config = PaNetConfig;
    type Network = PaNet;
    const NAME: &'static str = "panet";
    const SETTINGS: &'static str = "n_resblocks, n_feats, n_colors, res_scale, rgb_range, scale, attention, reduction, level, scales, ksize, stride, softmax_scale, average, interp";
    const MARKER: &'static str = "`head.0.weight` without an upsampler (PANet)";

    fn defaults() -> PaNetConfig {
        PaNetConfig::new()
    }

    fn set(c: &mut PaNetConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "n_resblocks" => c.n_resblocks = parse(key, value)?,
            "n_feats" => c.n_feats = parse(key, value)?,
            "n_colors" => c.n_colors = parse(key, value)?,
            "res_scale" => c.res_scale = parse(key, value)?,
            "rgb_range" => c.rgb_range = parse(key, value)?,
            "attention" => c.with_attention = parse_bool(key, value)?,
            // DN_RGB reuses `--scale` for the noise level; the network ignores it.
            "scale" => {
                parse::<f64>(key, value)?;
            }
            _ => return set_attention(&mut c.attention, key, value),
        }
        Ok(true)
    }

    fn validate(c: &PaNetConfig) -> Result<(), String> {
        positive("n_feats", c.n_feats)?;
        positive("n_colors", c.n_colors)?;
        c.attention.clone().with_channel(c.n_feats).validate()
    }

    fn init(c: &PaNetConfig, device: &Device) -> PaNet {
        c.init(device)
    }

    fn input_channels(c: &PaNetConfig) -> usize {
        c.n_colors
    }

    fn rgb_range(c: &PaNetConfig) -> f32 {
        c.rgb_range as f32
    }

    fn has_attention(c: &PaNetConfig) -> bool {
        c.with_attention
    }

    fn memory_shape(c: &PaNetConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: c.n_feats as u64,
            attention_scales: c.with_attention.then_some(c.attention.scales.as_slice()),
            non_local: None,
        }
    }

    /// `head.0` and no upsampler in `tail.0`; without an attention in the body it is the
    /// paper's "w/o PA" baseline.
    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        let trunk = TrunkKeys::read(dict)?;
        if trunk.scale.is_some() {
            return None;
        }
        let mut settings = trunk.settings;
        match trunk.reduction {
            Some(r) => settings.push(setting("reduction", r)),
            None => settings.push(setting("attention", "false")),
        }
        settings.extend(trunk.rgb_range.map(|r| setting("rgb_range", r)));
        Some(Ok(settings))
    }

    fn flops(m: &PaNet, h: usize, w: usize) -> u64 {
        conv_flops(&m.head[0], h, w) + body_flops(&m.body, h, w) + conv_flops(&m.tail[0], h, w)
    }

    fn forward(m: &PaNet, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }

    fn attentions(m: &PaNet) -> Vec<&PyramidAttention> {
        body_attentions(&m.body)
    }

    fn attentions_mut(m: &mut PaNet) -> Vec<&mut PyramidAttention> {
        body_attentions_mut(&mut m.body)
    }

    fn min_input_side(m: &PaNet) -> usize {
        body_min_input_side(&m.body)
    }

    fn attention_input(m: &PaNet, x: Tensor<4>) -> Option<(Tensor<4>, &PyramidAttention)> {
        body_attention_input(&m.body, conv2d(&m.head[0], x))
    }
}
