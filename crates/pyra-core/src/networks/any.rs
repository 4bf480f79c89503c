//! Any of Pyra's PANet-family modules, chosen at run time from the official constructor
//! arguments (`channel=16`, `n_resblocks=80`, `interp=legacy`, ...), as the tensor-level
//! `pyra forward` command and the checkpoint loaders need.

use crate::ops::fused_conv::conv2d;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::{
    Dncnn, DncnnConfig, Edsr, EdsrConfig, Ffdnet, FfdnetConfig, MemNet, MemNetConfig, PaEdsr,
    PaEdsrConfig, PaNet, PaNetConfig, Pnen, PnenConfig, Rdn, RdnConfig,
};
use crate::blocks::{NonLocalKind, NonLocalLayer, PyramidNonLocal};
use crate::blocks::{PyramidAttention, PyramidAttentionConfig};
use crate::ops::Interp;

/// The architectures of the PANet paper's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    PyramidAttention,
    PaNet,
    PaEdsr,
    Edsr,
    Dncnn,
    Ffdnet,
    Pnen,
    Rdn,
    MemNet,
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "pyramid-attention" | "pa" => Ok(Self::PyramidAttention),
            "panet" => Ok(Self::PaNet),
            "paedsr" | "pa-edsr" => Ok(Self::PaEdsr),
            "edsr" => Ok(Self::Edsr),
            "dncnn" => Ok(Self::Dncnn),
            "ffdnet" => Ok(Self::Ffdnet),
            "pnen" => Ok(Self::Pnen),
            "rdn" => Ok(Self::Rdn),
            "memnet" => Ok(Self::MemNet),
            other => Err(format!(
                "unknown architecture `{other}` (use pyramid-attention, panet, paedsr, edsr, dncnn, ffdnet, pnen, rdn or memnet)"
            )),
        }
    }
}

/// A configuration of one of the [`Arch`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchConfig {
    PyramidAttention(PyramidAttentionConfig),
    PaNet(PaNetConfig),
    PaEdsr(PaEdsrConfig),
    Edsr(EdsrConfig),
    Dncnn(DncnnConfig),
    Ffdnet(FfdnetConfig),
    Pnen(PnenConfig),
    Rdn(RdnConfig),
    MemNet(MemNetConfig),
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("`{key}={value}`: `{value}` is not a valid value for {key}"))
}

/// `pnb`, `nlb`, `apnb` or `none`.
fn parse_non_local(value: &str) -> Result<Option<NonLocalKind>, String> {
    if value.eq_ignore_ascii_case("none") {
        Ok(None)
    } else {
        value.parse().map(Some)
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{key}={value}`: expected True or False")),
    }
}

fn parse_scales(key: &str, value: &str) -> Result<Vec<f64>, String> {
    value
        .split(',')
        .map(|s| parse::<f64>(key, s.trim()))
        .collect()
}

/// Apply one attention knob; `Ok(false)` when `key` is not an attention knob.
fn set_attention(c: &mut PyramidAttentionConfig, key: &str, value: &str) -> Result<bool, String> {
    match key {
        "reduction" => c.reduction = parse(key, value)?,
        "level" | "levels" => *c = c.clone().with_levels(parse(key, value)?),
        "scales" => c.scales = parse_scales(key, value)?,
        "ksize" => c.ksize = parse(key, value)?,
        "stride" => c.stride = parse(key, value)?,
        "softmax_scale" => c.softmax_scale = parse(key, value)?,
        "average" => c.average = parse_bool(key, value)?,
        "interp" => c.interp = value.parse::<Interp>()?,
        _ => return Ok(false),
    }
    Ok(true)
}

const ATTENTION_KEYS: &str =
    "reduction, level, scales, ksize, stride, softmax_scale, average, interp";

fn unknown(arch: &str, key: &str, valid: &str) -> String {
    format!("`{key}` is not a setting of {arch}; valid settings: {valid}")
}

impl ArchConfig {
    /// The official defaults of `arch`, overridden by `settings` (official argument names).
    pub fn from_settings(arch: Arch, settings: &[(String, String)]) -> Result<Self, String> {
        let mut config = match arch {
            Arch::PyramidAttention => Self::PyramidAttention(PyramidAttentionConfig::new()),
            Arch::PaNet => Self::PaNet(PaNetConfig::new()),
            Arch::PaEdsr => Self::PaEdsr(PaEdsrConfig::new()),
            Arch::Edsr => Self::Edsr(EdsrConfig::new()),
            Arch::Dncnn => Self::Dncnn(DncnnConfig::new()),
            Arch::Ffdnet => Self::Ffdnet(FfdnetConfig::new()),
            Arch::Pnen => Self::Pnen(PnenConfig::new()),
            Arch::Rdn => Self::Rdn(RdnConfig::new()),
            Arch::MemNet => Self::MemNet(MemNetConfig::new()),
        };
        for (key, value) in settings {
            let (key, value) = (key.as_str(), value.as_str());
            match &mut config {
                Self::PyramidAttention(c) => match key {
                    "channel" => c.channel = parse(key, value)?,
                    "res_scale" => c.res_scale = parse(key, value)?,
                    _ if set_attention(c, key, value)? => {}
                    _ => {
                        return Err(unknown(
                            "pyramid-attention",
                            key,
                            &format!("channel, res_scale, {ATTENTION_KEYS}"),
                        ))
                    }
                },
                Self::PaNet(c) => match key {
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
                    _ if set_attention(&mut c.attention, key, value)? => {}
                    _ => {
                        return Err(unknown(
                            "panet",
                            key,
                            &format!("n_resblocks, n_feats, n_colors, res_scale, rgb_range, scale, attention, {ATTENTION_KEYS}"),
                        ))
                    }
                },
                Self::PaEdsr(c) => match key {
                    "n_resblocks" => c.n_resblocks = parse(key, value)?,
                    "n_feats" => c.n_feats = parse(key, value)?,
                    "n_colors" => c.n_colors = parse(key, value)?,
                    "res_scale" => c.res_scale = parse(key, value)?,
                    "scale" => c.scale = parse(key, value)?,
                    "rgb_range" => c.rgb_range = parse(key, value)?,
                    _ if set_attention(&mut c.attention, key, value)? => {}
                    _ => {
                        return Err(unknown(
                            "paedsr",
                            key,
                            &format!("n_resblocks, n_feats, n_colors, res_scale, scale, rgb_range, {ATTENTION_KEYS}"),
                        ))
                    }
                },
                Self::Edsr(c) => match key {
                    "n_resblocks" => c.n_resblocks = parse(key, value)?,
                    "n_feats" => c.n_feats = parse(key, value)?,
                    "n_colors" => c.n_colors = parse(key, value)?,
                    "res_scale" => c.res_scale = parse(key, value)?,
                    "scale" => c.scale = parse(key, value)?,
                    "rgb_range" => c.rgb_range = parse(key, value)?,
                    _ => {
                        return Err(unknown(
                            "edsr",
                            key,
                            "n_resblocks, n_feats, n_colors, res_scale, scale, rgb_range",
                        ))
                    }
                },
                Self::Dncnn(c) => match key {
                    "depth" => c.depth = parse(key, value)?,
                    "n_channels" => c.n_channels = parse(key, value)?,
                    "image_channels" | "n_colors" => c.image_channels = parse(key, value)?,
                    _ => return Err(unknown("dncnn", key, "depth, n_channels, image_channels")),
                },
                Self::Ffdnet(c) => match key {
                    // The IPOL sizes of that many colours, before explicit sizes override them.
                    "n_colors" => {
                        let sigma = c.sigma;
                        *c = FfdnetConfig::ipol(parse(key, value)?).with_sigma(sigma)
                    }
                    "n_feats" => c.n_feats = parse(key, value)?,
                    "n_layers" => c.n_layers = parse(key, value)?,
                    "sigma" => c.sigma = parse(key, value)?,
                    "rgb_range" if parse::<f64>(key, value)? == 1.0 => {}
                    _ => return Err(unknown("ffdnet", key, "n_colors, n_feats, n_layers, sigma")),
                },
                Self::Pnen(c) => match key {
                    "n_colors" => c.n_colors = parse(key, value)?,
                    "n_feats" => c.n_feats = parse(key, value)?,
                    "n_groups" => c.n_groups = parse(key, value)?,
                    "key_channels" => c.key_channels = parse(key, value)?,
                    "value_channels" => c.value_channels = parse(key, value)?,
                    "scales" => c.scales = parse(key, value)?,
                    "non_local" => c.non_local = value.parse()?,
                    // Pixels are on [0, 1]; accepted for symmetry with the other networks.
                    "rgb_range" if parse::<f64>(key, value)? == 1.0 => {}
                    _ => {
                        return Err(unknown(
                            "pnen",
                            key,
                            "n_colors, n_feats, n_groups, key_channels, value_channels, scales, non_local",
                        ))
                    }
                },
                Self::Rdn(c) => match key {
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
                    _ => {
                        return Err(unknown(
                            "rdn",
                            key,
                            "n_colors, G0, D, C, G, scale, rgb_range, non_local, non_local_every, key_channels, value_channels, scales",
                        ))
                    }
                },
                Self::MemNet(c) => match key {
                    "n_colors" => c.n_colors = parse(key, value)?,
                    "n_feats" => c.n_feats = parse(key, value)?,
                    "n_memblocks" => c.n_memblocks = parse(key, value)?,
                    "n_resblocks" => c.n_resblocks = parse(key, value)?,
                    "non_local" => c.non_local = parse_non_local(value)?,
                    "non_local_every" => c.non_local_every = parse(key, value)?,
                    "key_channels" => c.key_channels = parse(key, value)?,
                    "value_channels" => c.value_channels = parse(key, value)?,
                    "scales" => c.scales = parse(key, value)?,
                    "rgb_range" if parse::<f64>(key, value)? == 1.0 => {}
                    _ => {
                        return Err(unknown(
                            "memnet",
                            key,
                            "n_colors, n_feats, n_memblocks, n_resblocks, non_local, non_local_every, key_channels, value_channels, scales",
                        ))
                    }
                },
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Check the configuration; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: usize| {
            if v == 0 {
                Err(format!("{name} must be at least 1"))
            } else {
                Ok(())
            }
        };
        match self {
            Self::PyramidAttention(c) => c.validate(),
            Self::PaNet(c) => {
                positive("n_feats", c.n_feats)?;
                positive("n_colors", c.n_colors)?;
                c.attention.clone().with_channel(c.n_feats).validate()
            }
            Self::PaEdsr(c) => {
                positive("n_feats", c.n_feats)?;
                positive("n_colors", c.n_colors)?;
                c.validate()
            }
            Self::Edsr(c) => {
                positive("n_feats", c.n_feats)?;
                positive("n_colors", c.n_colors)?;
                c.validate()
            }
            Self::Dncnn(c) => c.validate(),
            Self::Ffdnet(c) => c.validate(),
            Self::Pnen(c) => c.validate(),
            Self::Rdn(c) => c.validate(),
            Self::MemNet(c) => c.validate(),
        }
    }

    /// Channels the input must have.
    pub fn input_channels(&self) -> usize {
        match self {
            Self::PyramidAttention(c) => c.channel,
            Self::PaNet(c) => c.n_colors,
            Self::PaEdsr(c) => c.n_colors,
            Self::Edsr(c) => c.n_colors,
            Self::Dncnn(c) => c.image_channels,
            Self::Ffdnet(c) => c.n_colors,
            Self::Pnen(c) => c.n_colors,
            Self::Rdn(c) => c.n_colors,
            Self::MemNet(c) => c.n_colors,
        }
    }

    /// Output size / input size (the SR factor; 1 for restoration).
    pub fn scale(&self) -> usize {
        match self {
            Self::PaEdsr(c) => c.scale,
            Self::Edsr(c) => c.scale,
            Self::Rdn(c) => c.scale,
            _ => 1,
        }
    }

    /// The pixel value range the network expects (`rgb_range`; DnCNN works on [0, 1]).
    pub fn rgb_range(&self) -> f32 {
        match self {
            Self::PaNet(c) => c.rgb_range as f32,
            Self::PaEdsr(c) => c.rgb_range as f32,
            Self::Edsr(c) => c.rgb_range as f32,
            Self::Rdn(c) => c.rgb_range as f32,
            Self::PyramidAttention(_)
            | Self::Dncnn(_)
            | Self::Ffdnet(_)
            | Self::Pnen(_)
            | Self::MemNet(_) => 1.0,
        }
    }

    /// Whether the network contains pyramid attention (its memory grows with the image
    /// squared when run whole).
    pub fn has_attention(&self) -> bool {
        match self {
            Self::PyramidAttention(_) | Self::PaEdsr(_) => true,
            Self::PaNet(c) => c.with_attention,
            Self::Edsr(_)
            | Self::Dncnn(_)
            | Self::Ffdnet(_)
            | Self::Pnen(_)
            | Self::Rdn(_)
            | Self::MemNet(_) => false,
        }
    }

    /// Whether the network is told the noise level (FFDNet's noise map).
    pub fn takes_noise_level(&self) -> bool {
        matches!(self, Self::Ffdnet(_))
    }

    pub fn init(&self, device: &Device) -> AnyNetwork {
        match self {
            Self::PyramidAttention(c) => AnyNetwork::PyramidAttention(c.init(device)),
            Self::PaNet(c) => AnyNetwork::PaNet(c.init(device)),
            Self::PaEdsr(c) => AnyNetwork::PaEdsr(c.init(device)),
            Self::Edsr(c) => AnyNetwork::Edsr(c.init(device)),
            Self::Dncnn(c) => AnyNetwork::Dncnn(c.init(device)),
            Self::Ffdnet(c) => AnyNetwork::Ffdnet(c.init(device)),
            Self::Pnen(c) => AnyNetwork::Pnen(c.init(device)),
            Self::Rdn(c) => AnyNetwork::Rdn(c.init(device)),
            Self::MemNet(c) => AnyNetwork::MemNet(c.init(device)),
        }
    }
}

/// One module of any [`Arch`]; state-dict keys are those of the inner module.
// Layers live once per model and burn's Module derive takes variants by value: boxing the
// large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyNetwork {
    PyramidAttention(PyramidAttention),
    PaNet(PaNet),
    PaEdsr(PaEdsr),
    Edsr(Edsr),
    Dncnn(Dncnn),
    Ffdnet(Ffdnet),
    Pnen(Pnen),
    Rdn(Rdn),
    MemNet(MemNet),
}

impl AnyNetwork {
    /// Tell a network that takes the noise level (FFDNet) the level of its next inputs
    /// (standard deviation, 0-255 scale); `false` for networks that do not take one.
    pub fn set_noise_level(&mut self, sigma: f64) -> bool {
        match self {
            Self::Ffdnet(m) => {
                m.sigma = sigma;
                true
            }
            _ => false,
        }
    }

    /// The features that enter the network's pyramid attention, and the attention block
    /// (the first half of the body has run); `None` for networks without attention.
    pub fn attention_input(&self, x: Tensor<4>) -> Option<(Tensor<4>, &PyramidAttention)> {
        use super::BodyLayer;
        let (features, body) = match self {
            Self::PyramidAttention(m) => return Some((x, m)),
            Self::PaNet(m) => (conv2d(&m.head[0], x), &m.body),
            Self::PaEdsr(m) => (conv2d(&m.head[0], m.sub_mean.forward(x)), &m.body),
            Self::Edsr(_)
            | Self::Dncnn(_)
            | Self::Ffdnet(_)
            | Self::Pnen(_)
            | Self::Rdn(_)
            | Self::MemNet(_) => return None,
        };
        let mut y = features;
        for layer in body {
            match layer {
                BodyLayer::PyramidAttention(attention) => return Some((y, attention)),
                BodyLayer::ResBlock(block) => y = block.forward(y),
                BodyLayer::Conv(conv) => y = conv2d(conv, y),
            }
        }
        None
    }

    /// The smallest input side the network accepts (pyramid attention needs every pyramid
    /// level to keep a pixel; the other networks take any size).
    pub fn min_input_side(&self) -> usize {
        use super::BodyLayer;
        let body = match self {
            Self::PyramidAttention(m) => return m.min_input_side(),
            Self::PaEdsr(m) => return m.msa.min_input_side(),
            Self::PaNet(m) => &m.body,
            Self::Ffdnet(_) => return 2,
            Self::Edsr(_) | Self::Dncnn(_) | Self::Pnen(_) | Self::Rdn(_) | Self::MemNet(_) => {
                return 1
            }
        };
        body.iter()
            .map(|layer| match layer {
                BodyLayer::PyramidAttention(attention) => attention.min_input_side(),
                _ => 1,
            })
            .max()
            .unwrap_or(1)
    }

    /// The features that enter the `index`-th pyramid non-local block (PNEN: of group
    /// `index`; RDN/MemNet: the `index`-th inserted block), and the block; `None` when there
    /// is no such pyramid non-local block.
    pub fn pyramid_non_local_input(
        &self,
        x: Tensor<4>,
        index: usize,
    ) -> Option<(Tensor<4>, &PyramidNonLocal)> {
        fn as_pnb(layer: &NonLocalLayer) -> Option<&PyramidNonLocal> {
            match layer {
                NonLocalLayer::Pnb(block) => Some(block),
                _ => None,
            }
        }
        match self {
            Self::Pnen(m) => {
                let block = as_pnb(&m.groups.get(index)?.non_local)?;
                let mut f = conv2d(&m.entry, x);
                for group in &m.groups[..index] {
                    f = group.non_local.forward(group.drb.forward(f));
                }
                Some((m.groups[index].drb.forward(f), block))
            }
            Self::Rdn(m) => {
                let block = as_pnb(m.non_locals.get(index)?)?;
                let mut f = conv2d(&m.SFENet2, conv2d(&m.SFENet1, x));
                for (d, rdb) in m.RDBs.iter().enumerate().take(index * m.non_local_every) {
                    if d % m.non_local_every == 0 {
                        f = m.non_locals[d / m.non_local_every].forward(f);
                    }
                    f = rdb.forward(f);
                }
                Some((f, block))
            }
            Self::MemNet(m) => {
                let block = as_pnb(m.non_locals.get(index)?)?;
                let b0 = m.feature_extractor.forward(x);
                let mut long_term = vec![b0.clone()];
                let mut b = b0;
                for (i, memory) in m
                    .dense_memory
                    .iter()
                    .enumerate()
                    .take(index * m.non_local_every)
                {
                    if i % m.non_local_every == 0 {
                        b = m.non_locals[i / m.non_local_every].forward(b);
                    }
                    b = memory.forward(b, &long_term);
                    long_term.push(b.clone());
                }
                Some((b, block))
            }
            _ => None,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::PyramidAttention(m) => m.forward(x),
            Self::PaNet(m) => m.forward(x),
            Self::PaEdsr(m) => m.forward(x),
            Self::Edsr(m) => m.forward(x),
            Self::Dncnn(m) => m.forward(x),
            Self::Ffdnet(m) => m.forward(x),
            Self::Pnen(m) => m.forward(x),
            Self::Rdn(m) => m.forward(x),
            Self::MemNet(m) => m.forward(x),
        }
    }

    /// Every prediction the training loss supervises, the final one first: PNEN's Y and
    /// its per-group Y_m; the single output of the other networks.
    pub fn forward_supervised(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        match self {
            Self::Pnen(m) => {
                let (y, per_group) = m.forward_all(x);
                std::iter::once(y).chain(per_group).collect()
            }
            other => vec![other.forward(x)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn official_arguments_map_onto_configs() {
        let c = ArchConfig::from_settings(
            Arch::PyramidAttention,
            &settings(&[
                ("channel", "16"),
                ("level", "3"),
                ("average", "False"),
                ("interp", "modern"),
            ]),
        )
        .unwrap();
        let ArchConfig::PyramidAttention(c) = c else {
            panic!()
        };
        assert_eq!(c.channel, 16);
        assert_eq!(c.scales, vec![1.0, 0.9, 0.8]);
        assert!(!c.average);
        assert_eq!(c.interp, Interp::Modern);
    }

    #[test]
    fn unknown_and_bad_values_are_named() {
        let e = ArchConfig::from_settings(Arch::Edsr, &settings(&[("channel", "3")])).unwrap_err();
        assert!(e.contains("`channel` is not a setting of edsr"), "{e}");
        let e = ArchConfig::from_settings(Arch::PaEdsr, &settings(&[("scale", "5")])).unwrap_err();
        assert!(e.contains("scale must be 3 or a power of two"), "{e}");
        let e = ArchConfig::from_settings(Arch::PaNet, &settings(&[("ksize", "x")])).unwrap_err();
        assert!(e.contains("`ksize=x`"), "{e}");
    }
}
