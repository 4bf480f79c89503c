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

use super::arch::{parse, positive, set_attention, Architecture, MemoryShape};
use super::body::{
    body_attention_input, body_attentions, body_attentions_mut, residual_body, run_body,
    sr_trunk_flops, BodyLayer, TrunkKeys,
};
use crate::blocks::upsampler::{supported_scale, upsample, upsampler};
use crate::blocks::{
    default_conv, Activation, MeanShift, PyramidAttention, PyramidAttentionConfig, Upsampler,
};
use crate::ops::Interp;
use crate::weights::StateDict;

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

/// PA-EDSR in the registry ([`super::arch::Architecture`]).
pub struct PaEdsrArch;

impl Architecture for PaEdsrArch {
    type Config = PaEdsrConfig;
    type Network = PaEdsr;
    const NAME: &'static str = "paedsr";
    const ALIASES: &'static [&'static str] = &["pa-edsr"];
    const SETTINGS: &'static str = "n_resblocks, n_feats, n_colors, res_scale, scale, rgb_range, reduction, level, scales, ksize, stride, softmax_scale, average, interp";
    const MARKER: &'static str = "`head.0.weight` with an upsampler and an attention (PA-EDSR)";

    fn defaults() -> PaEdsrConfig {
        PaEdsrConfig::new()
    }

    fn set(c: &mut PaEdsrConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "n_resblocks" => c.n_resblocks = parse(key, value)?,
            "n_feats" => c.n_feats = parse(key, value)?,
            "n_colors" => c.n_colors = parse(key, value)?,
            "res_scale" => c.res_scale = parse(key, value)?,
            "scale" => c.scale = parse(key, value)?,
            "rgb_range" => c.rgb_range = parse(key, value)?,
            _ => return set_attention(&mut c.attention, key, value),
        }
        Ok(true)
    }

    fn validate(c: &PaEdsrConfig) -> Result<(), String> {
        positive("n_feats", c.n_feats)?;
        positive("n_colors", c.n_colors)?;
        c.validate()
    }

    fn init(c: &PaEdsrConfig, device: &Device) -> PaEdsr {
        c.init(device)
    }

    fn input_channels(c: &PaEdsrConfig) -> usize {
        c.n_colors
    }

    fn scale(c: &PaEdsrConfig) -> usize {
        c.scale
    }

    fn rgb_range(c: &PaEdsrConfig) -> f32 {
        c.rgb_range as f32
    }

    fn has_attention(_: &PaEdsrConfig) -> bool {
        true
    }

    fn memory_shape(c: &PaEdsrConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: c.n_feats as u64,
            attention_scales: Some(&c.attention.scales),
            non_local: None,
        }
    }

    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        let trunk = TrunkKeys::read(dict)?;
        (trunk.scale.is_some() && trunk.reduction.is_some()).then(|| Ok(trunk.sr_settings()))
    }

    fn flops(m: &PaEdsr, h: usize, w: usize) -> u64 {
        sr_trunk_flops(&m.head[0], &m.body, &m.tail, h, w)
    }

    fn forward(m: &PaEdsr, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }

    fn attentions(m: &PaEdsr) -> Vec<&PyramidAttention> {
        let mut all = vec![&m.msa];
        all.extend(body_attentions(&m.body));
        all
    }

    fn attentions_mut(m: &mut PaEdsr) -> Vec<&mut PyramidAttention> {
        let mut all = vec![&mut m.msa];
        all.extend(body_attentions_mut(&mut m.body));
        all
    }

    fn min_input_side(m: &PaEdsr) -> usize {
        m.msa.min_input_side()
    }

    fn attention_input(m: &PaEdsr, x: Tensor<4>) -> Option<(Tensor<4>, &PyramidAttention)> {
        body_attention_input(&m.body, conv2d(&m.head[0], m.sub_mean.forward(x)))
    }
}
