//! DnCNN (Zhang et al., cszn/DnCNN `TrainingCodes/dncnn_pytorch`), the peer denoiser whose real
//! pretrained weights check Pyra's import, convolution, BatchNorm and metric path.
//!
//! `dncnn` is a `nn.Sequential` of `depth` convolutions: conv (with bias) + ReLU, then
//! `depth - 2` times conv (no bias) + BatchNorm(eps 1e-4) + ReLU, then a conv back to the image
//! channels. The Sequential predicts the noise; the network returns `input - dncnn(input)`.
//! Keys: `dncnn.0.*`, `dncnn.{3j-1}.weight`, `dncnn.{3j}.*` (BN) for j = 1..depth-2, and the
//! last conv at `dncnn.{3(depth-2)+2}`.

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};

use super::arch::{count_convs, parse, setting, shape, Architecture, MemoryShape};
use super::cost::conv_flops;
use crate::blocks::BatchNorm;
use crate::weights::StateDict;

#[derive(Config, Debug, PartialEq)]
pub struct DncnnConfig {
    /// Convolution layers (17 for DnCNN-S).
    #[config(default = 17)]
    pub depth: usize,
    #[config(default = 64)]
    pub n_channels: usize,
    /// 1 for gray, 3 for colour.
    #[config(default = 1)]
    pub image_channels: usize,
}

fn conv(channels_in: usize, channels_out: usize, bias: bool, device: &Device) -> Conv2d {
    Conv2dConfig::new([channels_in, channels_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(bias)
        .init(device)
}

impl DncnnConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.depth < 2 || self.n_channels == 0 || self.image_channels == 0 {
            return Err("depth must be at least 2 and the channel counts positive".into());
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> Dncnn {
        let mut dncnn = vec![
            DncnnLayer::Conv(conv(self.image_channels, self.n_channels, true, device)),
            DncnnLayer::ReLU(Relu::new()),
        ];
        for _ in 0..self.depth - 2 {
            dncnn.push(DncnnLayer::Conv(conv(
                self.n_channels,
                self.n_channels,
                false,
                device,
            )));
            dncnn.push(DncnnLayer::BatchNorm(BatchNorm::new(
                self.n_channels,
                1e-4,
                device,
            )));
            dncnn.push(DncnnLayer::ReLU(Relu::new()));
        }
        dncnn.push(DncnnLayer::Conv(conv(
            self.n_channels,
            self.image_channels,
            false,
            device,
        )));
        Dncnn { dncnn }
    }
}

/// One entry of the `dncnn` Sequential.
#[derive(Module, Debug)]
pub enum DncnnLayer {
    Conv(Conv2d),
    BatchNorm(BatchNorm),
    ReLU(Relu),
}

#[derive(Module, Debug)]
pub struct Dncnn {
    pub dncnn: Vec<DncnnLayer>,
}

impl Dncnn {
    /// The predicted noise (the Sequential's output).
    pub fn noise(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = x;
        for layer in &self.dncnn {
            y = match layer {
                DncnnLayer::Conv(conv) => conv2d(conv, y),
                DncnnLayer::BatchNorm(bn) => bn.forward(y),
                DncnnLayer::ReLU(relu) => relu.forward(y),
            };
        }
        y
    }

    /// The denoised image: `x - noise(x)`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x.clone() - self.noise(x)
    }
}

/// DnCNN in the registry ([`super::arch::Architecture`]).
pub struct DncnnArch;

impl Architecture for DncnnArch {
    type Config = DncnnConfig;
    type Network = Dncnn;
    const NAME: &'static str = "dncnn";
    const SETTINGS: &'static str = "depth, n_channels, image_channels";
    const MARKER: &'static str = "`dncnn.0.weight` (DnCNN)";

    fn defaults() -> DncnnConfig {
        DncnnConfig::new()
    }

    fn set(c: &mut DncnnConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "depth" => c.depth = parse(key, value)?,
            "n_channels" => c.n_channels = parse(key, value)?,
            "image_channels" | "n_colors" => c.image_channels = parse(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn validate(c: &DncnnConfig) -> Result<(), String> {
        c.validate()
    }

    fn init(c: &DncnnConfig, device: &Device) -> Dncnn {
        c.init(device)
    }

    fn input_channels(c: &DncnnConfig) -> usize {
        c.image_channels
    }

    fn memory_shape(c: &DncnnConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: c.n_channels as u64,
            attention_scales: None,
            non_local: None,
        }
    }

    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        let first = shape(dict, "dncnn.0.weight")?;
        Some(Ok(vec![
            setting("depth", count_convs(dict, "dncnn.")),
            setting("n_channels", first[0]),
            setting("image_channels", first[1]),
        ]))
    }

    fn flops(m: &Dncnn, h: usize, w: usize) -> u64 {
        m.dncnn
            .iter()
            .map(|l| match l {
                DncnnLayer::Conv(c) => conv_flops(c, h, w),
                _ => 0,
            })
            .sum()
    }

    fn forward(m: &Dncnn, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }
}
