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

use crate::blocks::{default_conv, BatchNorm, NonLocalKind, NonLocalLayer};

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
