//! Recognise the architecture and hyper-parameters of a checkpoint from its keys and shapes
//! (as spandrel does for PyTorch models), so `model_best.pt` can be used without flags.
//!
//! What a state dict cannot tell is left at the official default: the pyramid's levels (5),
//! its interpolation (`legacy`, what the official weights were trained with) and `res_scale`
//! (PANet 1; EDSR/PA-EDSR 0.1 with 256 features, else 1, as the official scripts use them).
//! The pixel range (`rgb_range`) is read from the frozen mean shift, whose bias is
//! `-rgb_range * mean`: a model trained on [0, 255] and one trained on [0, 1] have the same
//! keys and shapes but must be fed differently.

use super::any::{Arch, ArchConfig};
use crate::weights::StateDict;

/// The detected architecture and the settings (official argument names) that reproduce it.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub arch: Arch,
    pub settings: Vec<(String, String)>,
}

impl Detected {
    /// Detected settings overridden by `overrides` (same key: the override wins).
    pub fn config_with(&self, overrides: &[(String, String)]) -> Result<ArchConfig, String> {
        let mut settings: Vec<(String, String)> = self
            .settings
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .cloned()
            .collect();
        settings.extend(overrides.iter().cloned());
        ArchConfig::from_settings(self.arch, &settings)
    }

    /// One line for users: `PANet (n_resblocks=80, n_feats=64, ...)`.
    pub fn describe(&self) -> String {
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{:?} ({})", self.arch, settings.join(", "))
    }
}

/// Detect the architecture of `dict`; the error says what was looked for. Each
/// architecture's file says how it recognises its checkpoints
/// ([`super::arch::Architecture::detect`]); they are tried in the registry's order.
pub fn detect(dict: &StateDict) -> Result<Detected, String> {
    for &arch in Arch::ALL {
        if let Some(settings) = arch.detect(dict) {
            return Ok(Detected {
                arch,
                settings: settings?,
            });
        }
    }
    let markers: Vec<&str> = Arch::ALL
        .iter()
        .filter(|arch| arch.detect(&StateDict::default()).is_none())
        .map(|arch| arch.marker())
        .filter(|marker| marker.starts_with('`'))
        .collect();
    Err(format!(
        "unrecognised checkpoint: none of {}; give --arch and --set explicitly",
        markers.join(", ")
    ))
}
