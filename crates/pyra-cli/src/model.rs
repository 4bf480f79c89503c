//! Building a network from `--arch`, `--set KEY=VALUE` and `--weights`, shared by commands.

use std::path::Path;

use anyhow::{bail, Context, Result};
use pyra_core::burn::tensor::Device;
use pyra_core::networks::{detect, AnyNetwork, Arch, ArchConfig};
use pyra_core::weights::{load_state_dict, LoadOptions, LoadReport, StateDict};

/// Parse `KEY=VALUE` settings.
pub fn parse_settings(settings: &[String]) -> Result<Vec<(String, String)>> {
    settings
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => bail!("--set expects KEY=VALUE, got `{s}`"),
        })
        .collect()
}

/// The configuration of `arch` with `settings` applied.
pub fn config(arch: &str, settings: &[String]) -> Result<(Arch, ArchConfig)> {
    let arch: Arch = arch.parse().map_err(anyhow::Error::msg)?;
    let settings = parse_settings(settings)?;
    let config = ArchConfig::from_settings(arch, &settings).map_err(anyhow::Error::msg)?;
    Ok((arch, config))
}

/// Build the network and load `weights` strictly (or `allow_extra`).
pub fn load(
    config: &ArchConfig,
    weights: &StateDict,
    origin: &str,
    allow_extra: bool,
    device: &Device,
) -> Result<(AnyNetwork, LoadReport)> {
    let options = LoadOptions {
        allow_extra,
        ..Default::default()
    };
    load_state_dict(config.init(device), weights, &options)
        .with_context(|| format!("cannot load {origin}"))
}

/// Read weights: a `.pt` / safetensors file, or the name of a bundled model (`pyra-dn25`,
/// ...) when no such file exists.
pub fn read_weights(path: &Path) -> Result<StateDict> {
    if !path.exists() {
        if let Some(bundled) = path.to_str().and_then(pyra_infer::bundled::find) {
            return Ok(bundled.weights()?);
        }
        bail!(
            "{}: no such file (nor a bundled model: {})",
            path.display(),
            pyra_infer::bundled::names()
        );
    }
    Ok(StateDict::read(path)?)
}

/// The configuration for a checkpoint: from `--arch` and `--set` when an architecture is
/// given, else detected from the checkpoint's keys and shapes with `--set` overrides.
pub fn configure(
    arch: Option<&str>,
    settings: &[String],
    dict: &StateDict,
    origin: &Path,
) -> Result<ArchConfig> {
    match arch {
        Some(arch) => Ok(config(arch, settings)?.1),
        None => {
            let detected = detect(dict).map_err(anyhow::Error::msg)?;
            let config = detected
                .config_with(&parse_settings(settings)?)
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "model: {} (detected from {})",
                detected.describe(),
                origin.display()
            );
            Ok(config)
        }
    }
}

/// Read weights (a file or a bundled model's name), settle the configuration (given, or
/// detected from the keys) and build the network.
pub fn open(
    weights: &Path,
    arch: Option<&str>,
    settings: &[String],
    device: &Device,
) -> Result<(ArchConfig, AnyNetwork)> {
    let dict = read_weights(weights)?;
    let config = configure(arch, settings, &dict, weights)?;
    let (network, _) = load(
        &config,
        &dict,
        &weights.display().to_string(),
        false,
        device,
    )?;
    Ok((config, network))
}
