//! The models Pyra ships, trained with `pyra train` on `CBSD432` only (recipes in `configs/`,
//! model cards in `models/`), compiled into the library so they work with no files around.

use pyra_core::weights::{StateDict, WeightsError};

/// A bundled model.
#[derive(Debug, Clone, Copy)]
pub struct BundledModel {
    /// Name, also the preset of its training recipe.
    pub name: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// safetensors bytes (plain state-dict keys; the architecture is detected from them).
    pub bytes: &'static [u8],
    /// For a denoiser trained at one noise level: that sigma (0-255 scale).
    pub sigma: Option<f64>,
    /// For a blind denoiser, told the level: the range of sigma it was trained on.
    pub sigma_range: Option<(f64, f64)>,
}

/// Every bundled model.
pub const BUNDLED: &[BundledModel] = &[
    BundledModel {
        name: "pyra-dn25",
        summary: "colour denoising, Gaussian noise sigma 25 (0-255 scale)",
        bytes: include_bytes!("../../../models/pyra-dn25.safetensors"),
        sigma: Some(25.0),
        sigma_range: None,
    },
    BundledModel {
        name: "pyra-dn50",
        summary: "colour denoising, Gaussian noise sigma 50 (0-255 scale)",
        bytes: include_bytes!("../../../models/pyra-dn50.safetensors"),
        sigma: Some(50.0),
        sigma_range: None,
    },
    BundledModel {
        name: "pyra-sr2",
        summary: "x2 super-resolution of bicubic-downscaled colour images",
        bytes: include_bytes!("../../../models/pyra-sr2.safetensors"),
        sigma: None,
        sigma_range: None,
    },
];

/// The bundled model called `name`.
pub fn find(name: &str) -> Option<&'static BundledModel> {
    BUNDLED.iter().find(|m| m.name == name)
}

impl BundledModel {
    /// Its weights.
    pub fn weights(&self) -> Result<StateDict, WeightsError> {
        StateDict::from_bytes(self.bytes, self.name)
    }
}

/// The bundled denoiser for noise of `sigma` (0-255 scale): a blind one whose training range
/// covers it (it is then told the level), else the one trained at the nearest level (a model
/// trained at a higher level than the noise removes more than is there, one at a lower level
/// leaves some; nearest is what their PSNR at each level favours).
pub fn denoiser_for(sigma: f64) -> &'static BundledModel {
    if let Some(blind) = BUNDLED.iter().find(|m| {
        m.sigma_range
            .is_some_and(|(lo, hi)| (lo..=hi).contains(&sigma))
    }) {
        return blind;
    }
    BUNDLED
        .iter()
        .filter(|m| m.sigma.is_some())
        .min_by(|a, b| {
            let distance = |m: &BundledModel| (m.sigma.unwrap_or(f64::INFINITY) - sigma).abs();
            distance(a).total_cmp(&distance(b))
        })
        .expect("a bundled denoiser")
}

/// `pyra-dn25, pyra-dn50, ...` for messages.
pub fn names() -> String {
    BUNDLED
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyra_core::networks::detect;

    #[test]
    fn every_bundled_model_reads_and_is_recognised() {
        for model in BUNDLED {
            let weights = model.weights().unwrap();
            let detected = detect(&weights).unwrap();
            let config = detected.config_with(&[]).unwrap();
            let expected_scale = if model.name.contains("sr2") { 2 } else { 1 };
            assert_eq!(config.scale(), expected_scale, "{}", model.name);
            assert_eq!(config.input_channels(), 3, "{}", model.name);
        }
    }

    #[test]
    fn denoiser_is_the_nearest_sigma() {
        assert_eq!(denoiser_for(5.0).name, "pyra-dn25");
        assert_eq!(denoiser_for(37.0).name, "pyra-dn25");
        assert_eq!(denoiser_for(38.0).name, "pyra-dn50");
        assert_eq!(denoiser_for(75.0).name, "pyra-dn50");
    }
}
