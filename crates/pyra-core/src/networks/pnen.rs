//! PNEN, the pyramid non-local enhanced network (Zhu, Fang, Ma), for edge-preserving
//! smoothing:
//!
//! ```text
//!   F_0 = Entry(X)
//!   F_m = PNB_m( DRB_m( F_{m-1} ) )                 m = 1..M (M = 3)
//!   R_m = Exit_m(F_m)                               3 convolutions per group
//!   Y_m = X + R_m                                   one prediction per group
//!   Y   = Σ_m w_m · Y_m                             trainable weights w_m
//!   loss = MSE(Y, T) + Σ_m MSE(Y_m, T)              every prediction is supervised
//! ```
//!
//! What the paper leaves open, and the choice made here: the entry is one 3x3 convolution
//! without activation; each exit is conv-ReLU-conv-ReLU-conv (3x3, the last to the image
//! channels); the w_m start at 1/M; pixels are on [0, 1]. `non_local = "nlb"` or `"apnb"`
//! swaps the block for the paper's ablations.

use crate::ops::fused_conv::conv2d;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::arch::{count_weights, parse, setting, shape, unit_range, Architecture, MemoryShape};
use super::cost::{conv_flops, dilated_residual_flops, non_local_layer_flops};
use crate::blocks::{
    default_conv, DilatedResidual, DilatedResidualConfig, NonLocalKind, NonLocalLayer,
    PyramidNonLocal,
};
use crate::weights::StateDict;

#[derive(Config, Debug, PartialEq)]
pub struct PnenConfig {
    #[config(default = 3)]
    pub n_colors: usize,
    #[config(default = 64)]
    pub n_feats: usize,
    /// M: groups of DRB + non-local block, each with its own prediction.
    #[config(default = 3)]
    pub n_groups: usize,
    /// The PNB's query/key channels (m).
    #[config(default = 64)]
    pub key_channels: usize,
    /// The PNB's value channels per scale (n).
    #[config(default = 32)]
    pub value_channels: usize,
    /// The PNB's scales S (strides 2, 4, ..., 2^S).
    #[config(default = 3)]
    pub scales: usize,
    #[config(default = "NonLocalKind::Pnb")]
    pub non_local: NonLocalKind,
}

impl PnenConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("n_colors", self.n_colors),
            ("n_feats", self.n_feats),
            ("n_groups", self.n_groups),
            ("key_channels", self.key_channels),
            ("value_channels", self.value_channels),
            ("scales", self.scales),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> Pnen {
        let (c, f) = (self.n_colors, self.n_feats);
        let m = self.n_groups;
        Pnen {
            entry: default_conv(c, f, 3, device),
            groups: (0..m)
                .map(|_| Group {
                    drb: DilatedResidualConfig::new(f).init(device),
                    non_local: self.non_local.init(
                        f,
                        self.key_channels,
                        self.value_channels,
                        self.scales,
                        device,
                    ),
                })
                .collect(),
            exits: (0..m)
                .map(|_| {
                    vec![
                        default_conv(f, f, 3, device),
                        default_conv(f, f, 3, device),
                        default_conv(f, c, 3, device),
                    ]
                })
                .collect(),
            fusion: Param::from_tensor(Tensor::full([m], 1.0 / m as f32, device)),
        }
    }
}

/// One group: a dilated residual block, then the non-local block.
#[derive(Module, Debug)]
pub struct Group {
    pub drb: DilatedResidual,
    pub non_local: NonLocalLayer,
}

#[derive(Module, Debug)]
pub struct Pnen {
    pub entry: Conv2d,
    pub groups: Vec<Group>,
    /// `exits.{m}.{0,1,2}`: the residual R_m of group m.
    pub exits: Vec<Vec<Conv2d>>,
    /// `[M]`: the w_m of the final sum.
    pub fusion: Param<Tensor<1>>,
}

impl Pnen {
    /// The final prediction Y and the per-group predictions Y_1..Y_M.
    pub fn forward_all(&self, x: Tensor<4>) -> (Tensor<4>, Vec<Tensor<4>>) {
        let mut features = conv2d(&self.entry, x.clone());
        let mut predictions = Vec::with_capacity(self.groups.len());
        for (group, exit) in self.groups.iter().zip(&self.exits) {
            features = group.non_local.forward(group.drb.forward(features));
            let r = relu(conv2d(&exit[0], features.clone()));
            let r = conv2d(&exit[2], relu(conv2d(&exit[1], r)));
            predictions.push(x.clone() + r);
        }
        let m = predictions.len();
        let w = self.fusion.val();
        let y = predictions
            .iter()
            .enumerate()
            .map(|(i, y_m)| y_m.clone() * w.clone().narrow(0, i, 1).reshape([1, 1, 1, 1]))
            .reduce(|a, b| a + b)
            .expect("at least one group");
        debug_assert_eq!(m, self.groups.len());
        (y, predictions)
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_all(x).0
    }
}

/// PNEN in the registry ([`super::arch::Architecture`]).
pub struct PnenArch;

impl Architecture for PnenArch {
    type Config = PnenConfig;
    type Network = Pnen;
    const NAME: &'static str = "pnen";
    const SETTINGS: &'static str =
        "n_colors, n_feats, n_groups, key_channels, value_channels, scales, non_local";
    const MARKER: &'static str = "`entry.weight` (PNEN)";

    fn defaults() -> PnenConfig {
        PnenConfig::new()
    }

    fn set(c: &mut PnenConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "n_colors" => c.n_colors = parse(key, value)?,
            "n_feats" => c.n_feats = parse(key, value)?,
            "n_groups" => c.n_groups = parse(key, value)?,
            "key_channels" => c.key_channels = parse(key, value)?,
            "value_channels" => c.value_channels = parse(key, value)?,
            "scales" => c.scales = parse(key, value)?,
            "non_local" => c.non_local = value.parse()?,
            // Pixels are on [0, 1]; accepted for symmetry with the other networks.
            _ => return unit_range(key, value),
        }
        Ok(true)
    }

    fn validate(c: &PnenConfig) -> Result<(), String> {
        c.validate()
    }

    fn init(c: &PnenConfig, device: &Device) -> Pnen {
        c.init(device)
    }

    fn input_channels(c: &PnenConfig) -> usize {
        c.n_colors
    }

    fn memory_shape(c: &PnenConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: c.n_feats as u64,
            attention_scales: None,
            non_local: Some((c.non_local, c.scales)),
        }
    }

    /// Sizes from the entry convolution and the first group's non-local block. The plain
    /// non-local block and APNB have the same keys (`theta`, `phi`, `g`, `w`); such a
    /// checkpoint is taken as NLB unless `--set non_local=apnb` says otherwise.
    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        let entry = shape(dict, "entry.weight")?;
        Some((|| {
            let n_groups = shape(dict, "fusion")
                .map(|f| f[0])
                .ok_or("a PNEN checkpoint needs `fusion` (the weights of the group predictions)")?;
            let mut settings = vec![
                setting("n_colors", entry[1]),
                setting("n_feats", entry[0]),
                setting("n_groups", n_groups),
            ];
            if let Some(query) = shape(dict, "groups.0.non_local.query.weight") {
                let value = shape(dict, "groups.0.non_local.values.0.weight")
                    .ok_or("a PNEN checkpoint with a pyramid non-local block needs its `values`")?;
                settings.extend([
                    setting("non_local", "pnb"),
                    setting("key_channels", query[0]),
                    setting("value_channels", value[0]),
                    setting("scales", count_weights(dict, "groups.0.non_local.keys.")),
                ]);
            } else if dict.get("groups.0.non_local.theta.weight").is_some() {
                settings.push(setting("non_local", "nlb"));
            } else {
                return Err(
                    "a PNEN checkpoint without a recognisable non-local block in group 0".into(),
                );
            }
            Ok(settings)
        })())
    }

    fn flops(m: &Pnen, h: usize, w: usize) -> u64 {
        let mut total = conv_flops(&m.entry, h, w);
        for (group, exit) in m.groups.iter().zip(&m.exits) {
            total += dilated_residual_flops(&group.drb, h, w)
                + non_local_layer_flops(&group.non_local, h, w)
                + exit.iter().map(|c| conv_flops(c, h, w)).sum::<u64>();
        }
        total
    }

    fn forward(m: &Pnen, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }

    /// Y and its per-group Y_m.
    fn forward_supervised(m: &Pnen, x: Tensor<4>) -> Vec<Tensor<4>> {
        let (y, per_group) = m.forward_all(x);
        std::iter::once(y).chain(per_group).collect()
    }

    /// Of group `index`.
    fn pyramid_non_local_input(
        m: &Pnen,
        x: Tensor<4>,
        index: usize,
    ) -> Option<(Tensor<4>, &PyramidNonLocal)> {
        let block = m.groups.get(index)?.non_local.as_pnb()?;
        let mut f = conv2d(&m.entry, x);
        for group in &m.groups[..index] {
            f = group.non_local.forward(group.drb.forward(f));
        }
        Some((m.groups[index].drb.forward(f), block))
    }
}
