//! The commands' side of opening a model: `pyra_infer::open` with the CLI's error type, and the
//! detected architecture printed on stderr.

use std::path::Path;

use anyhow::Result;
use pyra_core::burn::tensor::Device;
use pyra_core::networks::{AnyNetwork, Arch, ArchConfig};
use pyra_infer::open as infer;

/// Parse `KEY=VALUE` settings.
pub fn parse_settings(settings: &[String]) -> Result<Vec<(String, String)>> {
    Ok(infer::parse_settings(settings)?)
}

/// The configuration of `arch` with `settings` applied.
pub fn config(arch: &str, settings: &[String]) -> Result<(Arch, ArchConfig)> {
    Ok(infer::config(arch, settings)?)
}

/// Read weights (a file or a bundled model's name), settle the configuration and build the
/// network.
pub fn open(
    weights: &Path,
    arch: Option<&str>,
    settings: &[String],
    device: &Device,
) -> Result<(ArchConfig, AnyNetwork)> {
    let model = infer::open(weights, arch, settings, device)?;
    if let Some(detected) = &model.detected {
        eprintln!("model: {detected} (detected from {})", weights.display());
    }
    Ok((model.config, model.network))
}
