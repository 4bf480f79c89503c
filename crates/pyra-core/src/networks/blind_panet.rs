//! PANet-B: a blind colour denoiser of the PANet family, told the noise level as FFDNet is,
//! working at half resolution as FFDNet does.
//!
//! ```text
//!   m        = σ / 255 (one channel; per sample from the input's last channel, or the level
//!              set with `set_noise_level` when the input is the image alone)
//!   f_0      = conv_first( [ unshuffle_2(x), m↓2 ] )           4C + 1 -> F channels, H/2 x W/2
//!   f        = f_0 + body(f_0)        res-blocks, then the attention, then res-blocks, conv
//!   y        = x - shuffle_2( conv_last(f) )                   the predicted noise removed
//! ```
//!
//! Working on the 2x2 sub-images puts every convolution on a quarter of the pixels and the
//! attention on a sixteenth of its pairs, which is what makes pyramid attention affordable to
//! train on a CPU; the noise map lets one network serve every level, and lets the user (or
//! the noise estimator) say how strong the noise is. Odd sides are reflect-padded by one line
//! and cropped back (FFDNet's handling). The body's middle block is pyramid attention
//! (`attention = pa`, the paper's module), a plain non-local block (`nlb`, Wang et al., for
//! the ablation) or nothing (`none`). Keys follow BasicSR's names: `conv_first`, `body.{i}`,
//! `conv_last`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Relu;
use burn::tensor::{Device, Tensor};

use super::arch::{parse, positive, set_attention, setting, shape, Architecture, MemoryShape};
use super::cost::{conv_flops, non_local_flops, pyramid_attention_flops};
use crate::blocks::{
    default_conv, Activation, NonLocal, NonLocalConfig, PyramidAttention, PyramidAttentionConfig,
    ResBlock,
};
use crate::ops::fused_conv::conv2d;
use crate::ops::sub_images::{from_sub_images, pad_to_even, to_sub_images};
use crate::weights::StateDict;

/// The block in the middle of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MiddleBlock {
    /// Pyramid attention (PANet).
    Pa,
    /// The embedded-Gaussian non-local block.
    Nlb,
    /// None: a plain residual trunk.
    None,
}

impl std::str::FromStr for MiddleBlock {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pa" | "true" => Ok(Self::Pa),
            "nlb" => Ok(Self::Nlb),
            "none" | "false" => Ok(Self::None),
            other => Err(format!("`attention={other}`: expected pa, nlb or none")),
        }
    }
}

#[derive(Config, Debug, PartialEq)]
pub struct BlindPaNetConfig {
    #[config(default = 3)]
    pub n_colors: usize,
    /// Features of the half-resolution trunk.
    #[config(default = 64)]
    pub n_feats: usize,
    #[config(default = 8)]
    pub n_resblocks: usize,
    #[config(default = "MiddleBlock::Pa")]
    pub attention: MiddleBlock,
    /// The pyramid attention (its `channel` is set to `n_feats`).
    #[config(default = "PyramidAttentionConfig::new()")]
    pub pyramid: PyramidAttentionConfig,
    /// The noise level (0-255 scale) used when the input carries no noise map.
    #[config(default = 25.0)]
    pub sigma: f64,
}

impl BlindPaNetConfig {
    pub fn validate(&self) -> Result<(), String> {
        positive("n_colors", self.n_colors)?;
        positive("n_feats", self.n_feats)?;
        if !(0.0..=255.0).contains(&self.sigma) {
            return Err(format!(
                "sigma={}: the noise level is a standard deviation on the 0-255 scale",
                self.sigma
            ));
        }
        self.pyramid.clone().with_channel(self.n_feats).validate()
    }

    pub fn init(&self, device: &Device) -> BlindPaNet {
        if let Err(message) = self.validate() {
            panic!("invalid PANet-B configuration: {message}");
        }
        let (c, f) = (self.n_colors, self.n_feats);
        let block = || {
            BlindLayer::ResBlock(ResBlock::new(
                f,
                3,
                Activation::ReLU(Relu::new()),
                1.0,
                device,
            ))
        };
        let half = self.n_resblocks / 2;
        let mut body: Vec<BlindLayer> = (0..half).map(|_| block()).collect();
        match self.attention {
            MiddleBlock::Pa => body.push(BlindLayer::PyramidAttention(
                self.pyramid.clone().with_channel(f).init(device),
            )),
            MiddleBlock::Nlb => {
                body.push(BlindLayer::NonLocal(NonLocalConfig::new(f).init(device)))
            }
            MiddleBlock::None => {}
        }
        body.extend((half..self.n_resblocks).map(|_| block()));
        body.push(BlindLayer::Conv(default_conv(f, f, 3, device)));
        BlindPaNet {
            conv_first: default_conv(4 * c + 1, f, 3, device),
            body,
            conv_last: default_conv(f, 4 * c, 3, device),
            n_colors: c,
            sigma: self.sigma,
            non_local_window: None,
        }
    }
}

/// One entry of the body (`body.{i}`).
// Layers live once per model and burn's Module derive takes variants by value.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum BlindLayer {
    ResBlock(ResBlock),
    PyramidAttention(PyramidAttention),
    NonLocal(NonLocal),
    Conv(Conv2d),
}

#[derive(Module, Debug)]
pub struct BlindPaNet {
    pub conv_first: Conv2d,
    pub body: Vec<BlindLayer>,
    pub conv_last: Conv2d,
    pub n_colors: usize,
    /// The noise level (0-255 scale) of inputs that carry no noise map.
    pub sigma: f64,
    /// `attention = nlb`: the non-local block within windows of this many map pixels
    /// (`None`: over the whole map, as trained on patches); see
    /// [`crate::networks::AnyNetwork::set_attention_window`].
    pub non_local_window: Option<usize>,
}

impl BlindPaNet {
    /// The denoised image, pixels on [0, 1]. `x` is `[N, C, H, W]` (the noise level is
    /// [`BlindPaNet::sigma`]) or `[N, C + 1, H, W]` with the noise map `σ/255` as the last
    /// channel (what training feeds, a level per sample).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, channels, h, w] = x.dims();
        let c = self.n_colors;
        let (image, map) = if channels == c + 1 {
            (x.clone().narrow(1, 0, c), x.narrow(1, c, 1))
        } else {
            assert_eq!(channels, c, "PANet-B takes {c} or {} channels", c + 1);
            let map = Tensor::full([n, 1, h, w], self.sigma / 255.0, &x.device());
            (x, map)
        };
        let padded = pad_to_even(image);
        // The map is constant over 2x2 cells in practice; take each cell's top-left value.
        let map = to_sub_images(pad_to_even(map)).narrow(1, 0, 1);
        let f0 = conv2d(
            &self.conv_first,
            Tensor::cat(vec![to_sub_images(padded.clone()), map], 1),
        );
        let mut f = f0.clone();
        for layer in &self.body {
            f = match layer {
                BlindLayer::ResBlock(block) => block.forward(f),
                BlindLayer::PyramidAttention(attention) => attention.forward(f),
                BlindLayer::NonLocal(block) => match self.non_local_window {
                    Some(t) => crate::blocks::window::windowed(f, t, |x| block.forward(x)),
                    None => block.forward(f),
                },
                BlindLayer::Conv(conv) => conv2d(conv, f),
            };
        }
        let noise = from_sub_images(conv2d(&self.conv_last, f + f0));
        (padded - noise).narrow(2, 0, h).narrow(3, 0, w)
    }
}

/// PANet-B in the registry ([`super::arch::Architecture`]).
pub struct BlindPaNetArch;

impl Architecture for BlindPaNetArch {
    type Config = BlindPaNetConfig;
    type Network = BlindPaNet;
    const NAME: &'static str = "panet-b";
    const ALIASES: &'static [&'static str] = &["blind-panet"];
    const SETTINGS: &'static str = "n_colors, n_feats, n_resblocks, attention, sigma, reduction, level, scales, ksize, stride, softmax_scale, average, interp";
    const MARKER: &'static str = "`conv_first.weight` with 4C+1 inputs (PANet-B)";

    fn defaults() -> BlindPaNetConfig {
        BlindPaNetConfig::new()
    }

    fn set(c: &mut BlindPaNetConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "n_colors" => c.n_colors = parse(key, value)?,
            "n_feats" => c.n_feats = parse(key, value)?,
            "n_resblocks" => c.n_resblocks = parse(key, value)?,
            "attention" => c.attention = value.parse()?,
            "sigma" => c.sigma = parse(key, value)?,
            "rgb_range" => return Ok(parse::<f64>(key, value)? == 1.0),
            _ => return set_attention(&mut c.pyramid, key, value),
        }
        Ok(true)
    }

    fn validate(c: &BlindPaNetConfig) -> Result<(), String> {
        c.validate()
    }

    fn init(c: &BlindPaNetConfig, device: &Device) -> BlindPaNet {
        c.init(device)
    }

    fn input_channels(c: &BlindPaNetConfig) -> usize {
        c.n_colors
    }

    fn has_attention(c: &BlindPaNetConfig) -> bool {
        c.attention == MiddleBlock::Pa
    }

    fn set_non_local_window(network: &mut BlindPaNet, window: Option<usize>) -> bool {
        let found = Self::has_non_local_window(network);
        if found {
            network.non_local_window = window;
        }
        found
    }

    fn has_non_local_window(network: &BlindPaNet) -> bool {
        network
            .body
            .iter()
            .any(|l| matches!(l, BlindLayer::NonLocal(_)))
    }

    fn takes_noise_level(_: &BlindPaNetConfig) -> bool {
        true
    }

    /// The trunk is at a quarter of the pixels.
    fn memory_shape(c: &BlindPaNetConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: c.n_feats.div_ceil(4) as u64,
            attention_scales: (c.attention == MiddleBlock::Pa)
                .then_some(c.pyramid.scales.as_slice()),
            non_local: (c.attention == MiddleBlock::Nlb)
                .then_some((crate::blocks::NonLocalKind::Nlb, 0)),
        }
    }

    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        let first = shape(dict, "conv_first.weight")?;
        if first.len() != 4 || first[1] % 4 != 1 {
            return None;
        }
        let blocks = dict
            .names()
            .filter(|k| k.starts_with("body.") && k.ends_with(".body.0.weight"))
            .count();
        let mut settings = vec![
            setting("n_colors", first[1] / 4),
            setting("n_feats", first[0]),
            setting("n_resblocks", blocks),
        ];
        let attention = dict
            .names()
            .find(|k| k.starts_with("body.") && k.ends_with(".conv_match.0.weight"))
            .and_then(|k| shape(dict, k));
        if let Some(m) = attention {
            settings.push(setting("attention", "pa"));
            settings.push(setting("reduction", first[0] / m[0].max(1)));
        } else if dict
            .names()
            .any(|k| k.starts_with("body.") && k.ends_with(".theta.weight"))
        {
            settings.push(setting("attention", "nlb"));
        } else {
            settings.push(setting("attention", "none"));
        }
        Some(Ok(settings))
    }

    /// Everything but the sub-image shuffles runs at half resolution.
    fn flops(m: &BlindPaNet, h: usize, w: usize) -> u64 {
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let body: u64 = m
            .body
            .iter()
            .map(|layer| match layer {
                BlindLayer::ResBlock(b) => {
                    conv_flops(&b.body.0, h2, w2) + conv_flops(&b.body.2, h2, w2)
                }
                BlindLayer::PyramidAttention(a) => pyramid_attention_flops(a, h2, w2),
                BlindLayer::NonLocal(b) => non_local_flops(b, h2, w2),
                BlindLayer::Conv(c) => conv_flops(c, h2, w2),
            })
            .sum();
        conv_flops(&m.conv_first, h2, w2) + body + conv_flops(&m.conv_last, h2, w2)
    }

    fn forward(m: &BlindPaNet, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }

    fn set_noise_level(m: &mut BlindPaNet, sigma: f64) -> bool {
        m.sigma = sigma;
        true
    }

    fn attentions(m: &BlindPaNet) -> Vec<&PyramidAttention> {
        m.body
            .iter()
            .filter_map(|l| match l {
                BlindLayer::PyramidAttention(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn attentions_mut(m: &mut BlindPaNet) -> Vec<&mut PyramidAttention> {
        m.body
            .iter_mut()
            .filter_map(|l| match l {
                BlindLayer::PyramidAttention(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn attention_stride(_: &BlindPaNet) -> usize {
        2
    }

    /// The attention's levels need pixels at half resolution.
    fn min_input_side(m: &BlindPaNet) -> usize {
        Self::attentions(m)
            .iter()
            .map(|a| 2 * a.min_input_side())
            .max()
            .unwrap_or(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use crate::weights::{load_state_dict, state_dict_of, LoadOptions};
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn the_noise_map_channel_and_the_set_level_agree() {
        let device = backend::cpu();
        let mut net = BlindPaNetConfig::new()
            .with_n_feats(16)
            .with_n_resblocks(2)
            .init(&device);
        let x = Tensor::<4>::random([2, 3, 21, 18], Distribution::Default, &device);
        net.sigma = 30.0;
        let by_level = net.forward(x.clone());
        assert_eq!(by_level.dims(), [2, 3, 21, 18]);
        let map = Tensor::full([2, 1, 21, 18], 30.0 / 255.0, &device);
        let by_map = net.forward(Tensor::cat(vec![x.clone(), map], 1));
        by_map
            .into_data()
            .assert_approx_eq::<f32>(&by_level.clone().into_data(), Tolerance::absolute(1e-6));
        // Another level, another output.
        net.sigma = 5.0;
        let other = net.forward(x);
        let d = (other - by_level).abs().max().into_scalar::<f32>();
        assert!(d > 1e-5, "{d}");
    }

    #[test]
    fn checkpoints_are_detected_with_their_middle_block() {
        let device = backend::cpu();
        for attention in [MiddleBlock::Pa, MiddleBlock::Nlb, MiddleBlock::None] {
            let config = BlindPaNetConfig::new()
                .with_n_feats(16)
                .with_n_resblocks(4)
                .with_attention(attention);
            let net = config.init(&device);
            let dict = state_dict_of(&net);
            let detected = crate::networks::detect(&dict).unwrap();
            assert_eq!(detected.arch, crate::networks::Arch::BlindPaNet);
            let again = detected.config_with(&[]).unwrap();
            let crate::networks::ArchConfig::BlindPaNet(again) = &again else {
                panic!()
            };
            assert_eq!(again.attention, attention);
            assert_eq!(again.n_resblocks, 4);
            assert!(load_state_dict(again.init(&device), &dict, &LoadOptions::default()).is_ok());
        }
    }

    #[test]
    fn the_non_local_twin_attends_within_windows() {
        let device = backend::cpu();
        let config = BlindPaNetConfig::new()
            .with_n_feats(16)
            .with_n_resblocks(2)
            .with_attention(MiddleBlock::Nlb);
        let mut net = crate::networks::AnyNetwork::BlindPaNet(config.init(&device));
        assert!(net.supports_attention_window());
        // 40x36 input: a 20x18 map at half resolution.
        let x = Tensor::<4>::random([1, 3, 40, 36], Distribution::Default, &device);
        let global = net.forward(x.clone());
        // A window of the whole map is the global block.
        assert!(net.set_attention_window(Some(40)));
        let whole = net.forward(x.clone());
        whole
            .into_data()
            .assert_approx_eq::<f32>(&global.clone().into_data(), Tolerance::absolute(1e-6));
        // 16-pixel windows (8 map pixels): another output; `None` restores the global one.
        net.set_attention_window(Some(16));
        let windowed = net.forward(x.clone());
        let d = (windowed - global.clone()).abs().max().into_scalar::<f32>();
        assert!(d > 1e-6, "windows changed nothing: {d}");
        net.set_attention_window(None);
        net.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&global.into_data(), Tolerance::absolute(1e-6));
        // Without a middle block there is nothing to window.
        let plain = BlindPaNetConfig::new()
            .with_n_feats(16)
            .with_n_resblocks(2)
            .with_attention(MiddleBlock::None);
        let mut plain = crate::networks::AnyNetwork::BlindPaNet(plain.init(&device));
        assert!(!plain.supports_attention_window());
        assert!(!plain.set_attention_window(Some(16)));
    }
}
