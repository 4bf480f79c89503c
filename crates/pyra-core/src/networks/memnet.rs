//! MemNet, the persistent memory network (Tai et al., ICCV 2017), as PNEN's section V hosts
//! it: a non-local block (the pyramid one, or the plain one for the ablation) inserted before
//! every `non_local_every` memory blocks.
//!
//! ```text
//!   B_0 = FENet(x)                                        BN-ReLU-Conv
//!   memory block m:  H_0 = B_{m-1};  H_r = Rec(H_{r-1})   R recursions of one residual unit
//!                    B_m = Gate( concat(H_1..H_R, B_0..B_{m-1}) )   BN-ReLU-Conv 1x1
//!   y = x + ReconNet(B_M)                                 BN-ReLU-Conv, global residual
//! ```
//!
//! The residual unit is `h + BNReLUConv(BNReLUConv(h))`, its weights shared by the R
//! recursions (MemNet's recursive unit). Key names follow the widely used PyTorch port
//! (`feature_extractor`, `dense_memory.{m}.recursive_unit.relu_conv1/2`,
//! `dense_memory.{m}.gate_unit`, `reconstructor`, each a `bn`/`conv` pair); the non-local
//! blocks are `non_locals.{k}`, run on B_{m-1} before memory block `k * non_local_every`.
//! MemNet's optional multi-supervision is not modelled (the final output is supervised).

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::arch::{
    count, host_non_locals, parse, parse_non_local, setting, shape, unit_range, Architecture,
    MemoryShape,
};
use super::cost::{conv_flops, non_local_layer_flops};
use crate::blocks::{default_conv, BatchNorm, NonLocalKind, NonLocalLayer, PyramidNonLocal};
use crate::weights::StateDict;

#[derive(Config, Debug, PartialEq)]
pub struct MemNetConfig {
    /// Image channels (1 in MemNet's denoising).
    #[config(default = 1)]
    pub n_colors: usize,
    #[config(default = 64)]
    pub n_feats: usize,
    /// M: memory blocks.
    #[config(default = 6)]
    pub n_memblocks: usize,
    /// R: recursions per memory block.
    #[config(default = 6)]
    pub n_resblocks: usize,
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

/// `BNReLUConv`: BatchNorm, ReLU, convolution (keys `bn`, `conv`).
#[derive(Module, Debug)]
pub struct BnReluConv {
    pub bn: BatchNorm,
    pub conv: Conv2d,
}

impl BnReluConv {
    fn new(channels_in: usize, channels_out: usize, ksize: usize, device: &Device) -> Self {
        Self {
            bn: BatchNorm::new(channels_in, 1e-5, device),
            conv: default_conv(channels_in, channels_out, ksize, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(&self.conv, relu(self.bn.forward(x)))
    }
}

/// The recursive unit: `h + relu_conv2(relu_conv1(h))`.
#[derive(Module, Debug)]
pub struct ResidualUnit {
    pub relu_conv1: BnReluConv,
    pub relu_conv2: BnReluConv,
}

#[derive(Module, Debug)]
pub struct MemoryBlock {
    pub recursive_unit: ResidualUnit,
    pub gate_unit: BnReluConv,
    pub recursions: usize,
}

impl MemoryBlock {
    /// `long_term`: B_0..B_{m-1}; returns B_m.
    pub fn forward(&self, x: Tensor<4>, long_term: &[Tensor<4>]) -> Tensor<4> {
        let mut short_term = Vec::with_capacity(self.recursions + long_term.len());
        let mut h = x;
        for _ in 0..self.recursions {
            let unit = &self.recursive_unit;
            h = h.clone() + unit.relu_conv2.forward(unit.relu_conv1.forward(h));
            short_term.push(h.clone());
        }
        short_term.extend(long_term.iter().cloned());
        self.gate_unit.forward(Tensor::cat(short_term, 1))
    }
}

impl MemNetConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("n_colors", self.n_colors),
            ("n_feats", self.n_feats),
            ("n_memblocks", self.n_memblocks),
            ("n_resblocks", self.n_resblocks),
            ("non_local_every", self.non_local_every),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }

    pub fn non_local_count(&self) -> usize {
        match self.non_local {
            Some(_) => self.n_memblocks.div_ceil(self.non_local_every),
            None => 0,
        }
    }

    pub fn init(&self, device: &Device) -> MemNet {
        let f = self.n_feats;
        MemNet {
            feature_extractor: BnReluConv::new(self.n_colors, f, 3, device),
            dense_memory: (0..self.n_memblocks)
                .map(|m| MemoryBlock {
                    recursive_unit: ResidualUnit {
                        relu_conv1: BnReluConv::new(f, f, 3, device),
                        relu_conv2: BnReluConv::new(f, f, 3, device),
                    },
                    gate_unit: BnReluConv::new((self.n_resblocks + m + 1) * f, f, 1, device),
                    recursions: self.n_resblocks,
                })
                .collect(),
            non_locals: self
                .non_local
                .map(|kind| {
                    (0..self.non_local_count())
                        .map(|_| {
                            kind.init(
                                f,
                                self.key_channels,
                                self.value_channels,
                                self.scales,
                                device,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            reconstructor: BnReluConv::new(f, self.n_colors, 3, device),
            non_local_every: self.non_local_every,
        }
    }
}

#[derive(Module, Debug)]
pub struct MemNet {
    pub feature_extractor: BnReluConv,
    pub dense_memory: Vec<MemoryBlock>,
    pub non_locals: Vec<NonLocalLayer>,
    pub reconstructor: BnReluConv,
    pub non_local_every: usize,
}

impl MemNet {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b0 = self.feature_extractor.forward(x.clone());
        let mut long_term = vec![b0.clone()];
        let mut b = b0;
        for (m, block) in self.dense_memory.iter().enumerate() {
            if m % self.non_local_every == 0 {
                if let Some(non_local) = self.non_locals.get(m / self.non_local_every) {
                    b = non_local.forward(b);
                }
            }
            b = block.forward(b, &long_term);
            long_term.push(b.clone());
        }
        x + self.reconstructor.forward(b)
    }
}

/// MemNet (with its non-local blocks) in the registry ([`super::arch::Architecture`]).
pub struct MemNetArch;

impl Architecture for MemNetArch {
    type Config = MemNetConfig;
    type Network = MemNet;
    const NAME: &'static str = "memnet";
    const SETTINGS: &'static str = "n_colors, n_feats, n_memblocks, n_resblocks, non_local, non_local_every, key_channels, value_channels, scales";
    const MARKER: &'static str = "`feature_extractor.conv.weight` (MemNet)";

    fn defaults() -> MemNetConfig {
        MemNetConfig::new()
    }

    fn set(c: &mut MemNetConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "n_colors" => c.n_colors = parse(key, value)?,
            "n_feats" => c.n_feats = parse(key, value)?,
            "n_memblocks" => c.n_memblocks = parse(key, value)?,
            "n_resblocks" => c.n_resblocks = parse(key, value)?,
            "non_local" => c.non_local = parse_non_local(value)?,
            "non_local_every" => c.non_local_every = parse(key, value)?,
            "key_channels" => c.key_channels = parse(key, value)?,
            "value_channels" => c.value_channels = parse(key, value)?,
            "scales" => c.scales = parse(key, value)?,
            _ => return unit_range(key, value),
        }
        Ok(true)
    }

    fn validate(c: &MemNetConfig) -> Result<(), String> {
        c.validate()
    }

    fn init(c: &MemNetConfig, device: &Device) -> MemNet {
        c.init(device)
    }

    fn input_channels(c: &MemNetConfig) -> usize {
        c.n_colors
    }

    /// Its gates keep R + M blocks' outputs alive.
    fn memory_shape(c: &MemNetConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: ((c.n_resblocks + c.n_memblocks) * c.n_feats) as u64 / 4,
            attention_scales: None,
            non_local: c.non_local.map(|kind| (kind, c.scales)),
        }
    }

    /// Features and colours from the feature extractor, M from the gate units, R from the
    /// first gate's input (R short-term + 1 long-term memories).
    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        let fe = shape(dict, "feature_extractor.conv.weight")?;
        Some((|| {
            let blocks = count(dict, |k| {
                k.starts_with("dense_memory.") && k.ends_with(".gate_unit.conv.weight")
            });
            let gate = shape(dict, "dense_memory.0.gate_unit.conv.weight")
                .ok_or("a MemNet checkpoint needs `dense_memory.0.gate_unit.conv.weight`")?;
            let recursions = (gate[1] / fe[0].max(1)).saturating_sub(1);
            let mut settings = vec![
                setting("n_colors", fe[1]),
                setting("n_feats", fe[0]),
                setting("n_memblocks", blocks),
                setting("n_resblocks", recursions),
            ];
            settings.extend(host_non_locals(dict, blocks));
            Ok(settings)
        })())
    }

    fn flops(m: &MemNet, h: usize, w: usize) -> u64 {
        let blocks: u64 = m
            .dense_memory
            .iter()
            .map(|b| {
                let unit = &b.recursive_unit;
                b.recursions as u64
                    * (conv_flops(&unit.relu_conv1.conv, h, w)
                        + conv_flops(&unit.relu_conv2.conv, h, w))
                    + conv_flops(&b.gate_unit.conv, h, w)
            })
            .sum();
        let non_locals: u64 = m
            .non_locals
            .iter()
            .map(|b| non_local_layer_flops(b, h, w))
            .sum();
        conv_flops(&m.feature_extractor.conv, h, w)
            + blocks
            + non_locals
            + conv_flops(&m.reconstructor.conv, h, w)
    }

    fn forward(m: &MemNet, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }

    /// The `index`-th inserted block.
    fn pyramid_non_local_input(
        m: &MemNet,
        x: Tensor<4>,
        index: usize,
    ) -> Option<(Tensor<4>, &PyramidNonLocal)> {
        let block = m.non_locals.get(index)?.as_pnb()?;
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
}
