//! One of the non-local blocks, chosen by name — how PNEN and its MemNet/RDN hosts switch
//! between the pyramid non-local block and its baselines for the paper's ablations.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::{Apnb, ApnbConfig, NonLocal, NonLocalConfig, PyramidNonLocal, PyramidNonLocalConfig};

/// Which non-local block, with the sizes of the pyramid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonLocalKind {
    /// Pyramid non-local block (PNEN).
    Pnb,
    /// Plain embedded-Gaussian non-local block.
    Nlb,
    /// Asymmetric pyramid non-local block (pooled keys).
    Apnb,
}

impl std::str::FromStr for NonLocalKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pnb" => Ok(Self::Pnb),
            "nlb" => Ok(Self::Nlb),
            "apnb" => Ok(Self::Apnb),
            other => Err(format!(
                "unknown non-local block `{other}` (use pnb, nlb or apnb)"
            )),
        }
    }
}

impl std::fmt::Display for NonLocalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pnb => "pnb",
            Self::Nlb => "nlb",
            Self::Apnb => "apnb",
        })
    }
}

impl NonLocalKind {
    /// The block on `channels` features; `key_channels`, `value_channels` and `scales` are
    /// the PNB's m, n and S (the baselines use their own defaults: half the channels).
    pub fn init(
        self,
        channels: usize,
        key_channels: usize,
        value_channels: usize,
        scales: usize,
        device: &Device,
    ) -> NonLocalLayer {
        match self {
            Self::Pnb => NonLocalLayer::Pnb(
                PyramidNonLocalConfig::new(channels)
                    .with_key_channels(key_channels)
                    .with_value_channels(value_channels)
                    .with_scales(scales)
                    .init(device),
            ),
            Self::Nlb => NonLocalLayer::Nlb(NonLocalConfig::new(channels).init(device)),
            Self::Apnb => NonLocalLayer::Apnb(ApnbConfig::new(channels).init(device)),
        }
    }
}

/// A non-local block of any [`NonLocalKind`]; its keys are the inner block's.
#[derive(Module, Debug)]
pub enum NonLocalLayer {
    Pnb(PyramidNonLocal),
    Nlb(NonLocal),
    Apnb(Apnb),
}

impl NonLocalLayer {
    /// The block, when it is a pyramid non-local block.
    pub fn as_pnb(&self) -> Option<&super::PyramidNonLocal> {
        match self {
            Self::Pnb(block) => Some(block),
            _ => None,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Pnb(b) => b.forward(x),
            Self::Nlb(b) => b.forward(x),
            Self::Apnb(b) => b.forward(x),
        }
    }
}
