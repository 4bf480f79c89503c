//! EDSR (Lim et al.), the baseline PA-EDSR extends: the same network without the attention
//! (the official `SR/code/model/edsr.py`; keys `sub_mean`, `add_mean`, `head.0`,
//! `body.{0..n-1}.body.{0,2}`, `body.{n}`, `tail.0.*`, `tail.1`).

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Relu;
use burn::tensor::{Device, Tensor};

use super::arch::{parse, positive, Architecture, MemoryShape};
use super::body::{residual_body, run_body, sr_trunk_flops, BodyLayer, TrunkKeys};
use crate::blocks::upsampler::{supported_scale, upsample, upsampler};
use crate::blocks::{default_conv, Activation, MeanShift, Upsampler};
use crate::weights::StateDict;

#[derive(Config, Debug, PartialEq)]
pub struct EdsrConfig {
    #[config(default = 32)]
    pub n_resblocks: usize,
    #[config(default = 256)]
    pub n_feats: usize,
    #[config(default = 3)]
    pub n_colors: usize,
    #[config(default = 0.1)]
    pub res_scale: f64,
    #[config(default = 2)]
    pub scale: usize,
    #[config(default = 1.0)]
    pub rgb_range: f64,
}

impl EdsrConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !supported_scale(self.scale) {
            return Err(format!(
                "scale must be 3 or a power of two, got {}",
                self.scale
            ));
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> Edsr {
        if let Err(message) = self.validate() {
            panic!("invalid EDSR configuration: {message}");
        }
        Edsr {
            sub_mean: MeanShift::new(self.rgb_range as f32, -1.0, device),
            add_mean: MeanShift::new(self.rgb_range as f32, 1.0, device),
            head: vec![default_conv(self.n_colors, self.n_feats, 3, device)],
            body: residual_body(
                self.n_resblocks,
                self.n_feats,
                &Activation::ReLU(Relu::new()),
                self.res_scale,
                None,
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
pub struct Edsr {
    pub sub_mean: MeanShift,
    pub add_mean: MeanShift,
    pub head: Vec<Conv2d>,
    pub body: Vec<BodyLayer>,
    pub tail: (Upsampler, Conv2d),
}

impl Edsr {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.head[0], self.sub_mean.forward(x));
        let res = run_body(&self.body, x.clone()) + x;
        let (up, conv) = &self.tail;
        self.add_mean.forward(conv2d(conv, upsample(up, res)))
    }
}

/// EDSR in the registry ([`super::arch::Architecture`]).
pub struct EdsrArch;

impl Architecture for EdsrArch {
    type Config = EdsrConfig;
    type Network = Edsr;
    const NAME: &'static str = "edsr";
    const SETTINGS: &'static str = "n_resblocks, n_feats, n_colors, res_scale, scale, rgb_range";
    const MARKER: &'static str = "`head.0.weight` with an upsampler, no attention (EDSR)";

    fn defaults() -> EdsrConfig {
        EdsrConfig::new()
    }

    fn set(c: &mut EdsrConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "n_resblocks" => c.n_resblocks = parse(key, value)?,
            "n_feats" => c.n_feats = parse(key, value)?,
            "n_colors" => c.n_colors = parse(key, value)?,
            "res_scale" => c.res_scale = parse(key, value)?,
            "scale" => c.scale = parse(key, value)?,
            "rgb_range" => c.rgb_range = parse(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn validate(c: &EdsrConfig) -> Result<(), String> {
        positive("n_feats", c.n_feats)?;
        positive("n_colors", c.n_colors)?;
        c.validate()
    }

    fn init(c: &EdsrConfig, device: &Device) -> Edsr {
        c.init(device)
    }

    fn input_channels(c: &EdsrConfig) -> usize {
        c.n_colors
    }

    fn scale(c: &EdsrConfig) -> usize {
        c.scale
    }

    fn rgb_range(c: &EdsrConfig) -> f32 {
        c.rgb_range as f32
    }

    fn memory_shape(c: &EdsrConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: c.n_feats as u64,
            attention_scales: None,
            non_local: None,
        }
    }

    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        let trunk = TrunkKeys::read(dict)?;
        (trunk.scale.is_some() && trunk.reduction.is_none()).then(|| Ok(trunk.sr_settings()))
    }

    fn flops(m: &Edsr, h: usize, w: usize) -> u64 {
        sr_trunk_flops(&m.head[0], &m.body, &m.tail, h, w)
    }

    fn forward(m: &Edsr, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }
}
