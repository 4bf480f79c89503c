//! RDN, the residual dense network (Zhang et al., CVPR 2018), as PNEN's section V hosts it:
//! a non-local block (the pyramid one, or the plain one for the ablation) inserted before
//! every `non_local_every` residual dense blocks.
//!
//! ```text
//!   F_-1 = SFENet1(x),  F_0 = SFENet2(F_-1)
//!   F_d  = RDB_d( NL_k(F_{d-1}) if d-1 is a multiple of `non_local_every` else F_{d-1} )
//!   RDB(f) = f + LFF( concat(f, c_1, ..., c_C) ),  c_i = ReLU(conv3x3(concat(f, c_1..c_{i-1})))
//!   y = UPNet( GFF(concat(F_1, ..., F_D)) + F_-1 )
//! ```
//!
//! Keys are those of EDSR-PyTorch's `rdn.py` (`SFENet1`, `RDBs.{d}.convs.{c}.conv.0`,
//! `RDBs.{d}.LFF`, `GFF.0/1`, `UPNet.{0,2,4}`); the non-local blocks are `non_locals.{k}`.
//! For `scale = 1` (denoising) UPNet is one convolution to the image channels and the input
//! is added back (global residual learning, as RDN's restoration variant), a choice of
//! this implementation.

// Field names are the official state-dict keys (`SFENet1`, `RDBs`, `LFF`, ...), which are
// not snake case; the Module derive repeats them in generated code.
#![allow(non_snake_case)]

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::PixelShuffleConfig;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::arch::{
    count, host_non_locals, parse, parse_non_local, setting, shape, Architecture, MemoryShape,
};
use super::cost::{conv_flops, non_local_layer_flops, upsampler_flops};
use crate::blocks::upsampler::{supported_scale, upsample, Upsampler, UpsamplerLayer};
use crate::blocks::{default_conv, NonLocalKind, NonLocalLayer, PyramidNonLocal};
use crate::weights::StateDict;

#[derive(Config, Debug, PartialEq)]
pub struct RdnConfig {
    #[config(default = 3)]
    pub n_colors: usize,
    /// G0: features between blocks.
    #[config(default = 64)]
    pub g0: usize,
    /// D: residual dense blocks.
    #[config(default = 16)]
    pub n_blocks: usize,
    /// C: convolutions per block.
    #[config(default = 8)]
    pub n_layers: usize,
    /// G: growth rate.
    #[config(default = 64)]
    pub growth: usize,
    /// Upscaling factor (1: restoration).
    #[config(default = 1)]
    pub scale: usize,
    #[config(default = 255.0)]
    pub rgb_range: f64,
    /// The non-local block inserted, or none.
    #[config(default = "Some(NonLocalKind::Pnb)")]
    pub non_local: Option<NonLocalKind>,
    #[config(default = 5)]
    pub non_local_every: usize,
    #[config(default = 64)]
    pub key_channels: usize,
    #[config(default = 32)]
    pub value_channels: usize,
    #[config(default = 3)]
    pub scales: usize,
}

impl RdnConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("n_colors", self.n_colors),
            ("g0", self.g0),
            ("n_blocks", self.n_blocks),
            ("n_layers", self.n_layers),
            ("growth", self.growth),
            ("non_local_every", self.non_local_every),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.scale != 1 && !(supported_scale(self.scale) && self.scale <= 4) {
            return Err(format!("scale must be 1, 2, 3 or 4, got {}", self.scale));
        }
        Ok(())
    }

    /// How many non-local blocks the body holds.
    pub fn non_local_count(&self) -> usize {
        match self.non_local {
            Some(_) => self.n_blocks.div_ceil(self.non_local_every),
            None => 0,
        }
    }

    pub fn init(&self, device: &Device) -> Rdn {
        let (g0, g, c) = (self.g0, self.growth, self.n_layers);
        let up = |channels_in: usize, channels_out: usize| {
            UpsamplerLayer::Conv(default_conv(channels_in, channels_out, 3, device))
        };
        let shuffle = |r: usize| UpsamplerLayer::PixelShuffle(PixelShuffleConfig::new(r).init());
        let upnet: Upsampler = match self.scale {
            1 => vec![up(g0, self.n_colors)],
            2 | 3 => vec![
                up(g0, g * self.scale * self.scale),
                shuffle(self.scale),
                up(g, self.n_colors),
            ],
            _ => vec![
                up(g0, g * 4),
                shuffle(2),
                up(g, g * 4),
                shuffle(2),
                up(g, self.n_colors),
            ],
        };
        Rdn {
            SFENet1: default_conv(self.n_colors, g0, 3, device),
            SFENet2: default_conv(g0, g0, 3, device),
            RDBs: (0..self.n_blocks)
                .map(|_| ResidualDenseBlock {
                    convs: (0..c)
                        .map(|i| DenseLayer {
                            conv: vec![default_conv(g0 + i * g, g, 3, device)],
                        })
                        .collect(),
                    LFF: default_conv(g0 + c * g, g0, 1, device),
                })
                .collect(),
            non_locals: self
                .non_local
                .map(|kind| {
                    (0..self.non_local_count())
                        .map(|_| {
                            kind.init(
                                g0,
                                self.key_channels,
                                self.value_channels,
                                self.scales,
                                device,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            GFF: (
                default_conv(self.n_blocks * g0, g0, 1, device),
                default_conv(g0, g0, 3, device),
            ),
            UPNet: upnet,
            non_local_every: self.non_local_every,
            scale: self.scale,
        }
    }
}

/// `RDB_Conv`: its `conv` is `nn.Sequential(conv, ReLU)`, so the convolution's key is
/// `conv.0` (a one-element `Vec` here; the ReLU has no weights).
#[derive(Module, Debug)]
pub struct DenseLayer {
    pub conv: Vec<Conv2d>,
}

#[derive(Module, Debug)]
pub struct ResidualDenseBlock {
    pub convs: Vec<DenseLayer>,
    /// Local feature fusion, 1x1.
    pub LFF: Conv2d,
}

impl ResidualDenseBlock {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut features = x.clone();
        for layer in &self.convs {
            let grown = relu(conv2d(&layer.conv[0], features.clone()));
            features = Tensor::cat(vec![features, grown], 1);
        }
        conv2d(&self.LFF, features) + x
    }
}

#[derive(Module, Debug)]
pub struct Rdn {
    pub SFENet1: Conv2d,
    pub SFENet2: Conv2d,
    pub RDBs: Vec<ResidualDenseBlock>,
    /// `non_locals.{k}` runs before `RDBs.{k * non_local_every}`.
    pub non_locals: Vec<NonLocalLayer>,
    /// Global feature fusion: 1x1 over all block outputs, then 3x3.
    pub GFF: (Conv2d, Conv2d),
    pub UPNet: Upsampler,
    pub non_local_every: usize,
    pub scale: usize,
}

impl Rdn {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shallow = conv2d(&self.SFENet1, x.clone());
        let mut f = conv2d(&self.SFENet2, shallow.clone());
        let mut outputs = Vec::with_capacity(self.RDBs.len());
        for (d, block) in self.RDBs.iter().enumerate() {
            if d % self.non_local_every == 0 {
                if let Some(non_local) = self.non_locals.get(d / self.non_local_every) {
                    f = non_local.forward(f);
                }
            }
            f = block.forward(f);
            outputs.push(f.clone());
        }
        let fused = conv2d(&self.GFF.1, conv2d(&self.GFF.0, Tensor::cat(outputs, 1))) + shallow;
        let y = upsample(&self.UPNet, fused);
        if self.scale == 1 {
            y + x
        } else {
            y
        }
    }
}

/// RDN (with its non-local blocks) in the registry ([`super::arch::Architecture`]).
pub struct RdnArch;

impl Architecture for RdnArch {
    type Config = RdnConfig;
    type Network = Rdn;
    const NAME: &'static str = "rdn";
    const SETTINGS: &'static str = "n_colors, G0, D, C, G, scale, rgb_range, non_local, non_local_every, key_channels, value_channels, scales";
    const MARKER: &'static str = "`SFENet1.weight` (RDN)";

    fn defaults() -> RdnConfig {
        RdnConfig::new()
    }

    fn set(c: &mut RdnConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "n_colors" => c.n_colors = parse(key, value)?,
            "G0" | "g0" => c.g0 = parse(key, value)?,
            "n_blocks" | "D" => c.n_blocks = parse(key, value)?,
            "n_layers" | "C" => c.n_layers = parse(key, value)?,
            "growth" | "G" => c.growth = parse(key, value)?,
            "scale" => c.scale = parse(key, value)?,
            "rgb_range" => c.rgb_range = parse(key, value)?,
            "non_local" => c.non_local = parse_non_local(value)?,
            "non_local_every" => c.non_local_every = parse(key, value)?,
            "key_channels" => c.key_channels = parse(key, value)?,
            "value_channels" => c.value_channels = parse(key, value)?,
            "scales" => c.scales = parse(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn validate(c: &RdnConfig) -> Result<(), String> {
        c.validate()
    }

    fn init(c: &RdnConfig, device: &Device) -> Rdn {
        c.init(device)
    }

    fn input_channels(c: &RdnConfig) -> usize {
        c.n_colors
    }

    fn scale(c: &RdnConfig) -> usize {
        c.scale
    }

    fn rgb_range(c: &RdnConfig) -> f32 {
        c.rgb_range as f32
    }

    /// Dense blocks keep G0 + C*G channels alive.
    fn memory_shape(c: &RdnConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: (c.g0 + c.n_layers * c.growth) as u64,
            attention_scales: None,
            non_local: c.non_local.map(|kind| (kind, c.scales)),
        }
    }

    /// G0 and the colours from `SFENet1`, D, C and G from the dense blocks, the scale from
    /// UPNet's first convolution (G * r^2 outputs).
    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        let sfe = shape(dict, "SFENet1.weight")?;
        Some((|| {
            let blocks = count(dict, |k| {
                k.starts_with("RDBs.") && k.ends_with(".LFF.weight")
            });
            let layers = count(dict, |k| {
                k.starts_with("RDBs.0.convs.") && k.ends_with(".conv.0.weight")
            });
            let growth = shape(dict, "RDBs.0.convs.0.conv.0.weight")
                .map(|g| g[0])
                .ok_or("an RDN checkpoint needs `RDBs.0.convs.0.conv.0.weight`")?;
            let up =
                shape(dict, "UPNet.0.weight").ok_or("an RDN checkpoint needs `UPNet.0.weight`")?;
            let scale = if dict.get("UPNet.4.weight").is_some() {
                4
            } else if dict.get("UPNet.2.weight").is_some() {
                ((up[0] / growth.max(1)) as f64).sqrt().round() as usize
            } else {
                1
            };
            let mut settings = vec![
                setting("n_colors", sfe[1]),
                setting("G0", sfe[0]),
                setting("D", blocks),
                setting("C", layers),
                setting("G", growth),
                setting("scale", scale),
            ];
            settings.extend(host_non_locals(dict, blocks));
            Ok(settings)
        })())
    }

    fn flops(m: &Rdn, h: usize, w: usize) -> u64 {
        let blocks: u64 = m
            .RDBs
            .iter()
            .map(|b| {
                b.convs
                    .iter()
                    .map(|c| conv_flops(&c.conv[0], h, w))
                    .sum::<u64>()
                    + conv_flops(&b.LFF, h, w)
            })
            .sum();
        let non_locals: u64 = m
            .non_locals
            .iter()
            .map(|b| non_local_layer_flops(b, h, w))
            .sum();
        conv_flops(&m.SFENet1, h, w)
            + conv_flops(&m.SFENet2, h, w)
            + blocks
            + non_locals
            + conv_flops(&m.GFF.0, h, w)
            + conv_flops(&m.GFF.1, h, w)
            + upsampler_flops(&m.UPNet, h, w).0
    }

    fn forward(m: &Rdn, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }

    /// The `index`-th inserted block.
    fn pyramid_non_local_input(
        m: &Rdn,
        x: Tensor<4>,
        index: usize,
    ) -> Option<(Tensor<4>, &PyramidNonLocal)> {
        let block = m.non_locals.get(index)?.as_pnb()?;
        let mut f = conv2d(&m.SFENet2, conv2d(&m.SFENet1, x));
        for (d, rdb) in m.RDBs.iter().enumerate().take(index * m.non_local_every) {
            if d % m.non_local_every == 0 {
                f = m.non_locals[d / m.non_local_every].forward(f);
            }
            f = rdb.forward(f);
        }
        Some((f, block))
    }
}
