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

use crate::blocks::{
    default_conv, DilatedResidual, DilatedResidualConfig, NonLocalKind, NonLocalLayer,
};

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
