//! `pyra convert`: turn an official `model_best.pt` (or any state-dict file) into Pyra's own
//! safetensors weights with the same keys, optionally checking it strictly against an
//! architecture first.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use pyra_core::backend;
use pyra_core::networks::{Arch, ArchConfig};
use pyra_core::weights::{
    load_state_dict, save_safetensors, state_dict_of, LoadOptions, StateDict,
};

use crate::model::parse_settings;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The checkpoint to read (`.pt` zip pickle or safetensors).
    input: PathBuf,
    /// The safetensors file to write (float32, same keys).
    output: PathBuf,
    /// Check the checkpoint strictly against this architecture and write exactly its keys.
    #[arg(long)]
    arch: Option<String>,
    /// Official constructor argument of --arch (repeatable), e.g. `n_resblocks=80`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let dict = StateDict::read(&args.input)?;
    let mut metadata = HashMap::new();
    metadata.insert("source".to_string(), args.input.display().to_string());
    let dict = match &args.arch {
        Some(arch) => {
            let arch: Arch = arch.parse().map_err(anyhow::Error::msg)?;
            let settings = parse_settings(&args.settings)?;
            let config = ArchConfig::from_settings(arch, &settings).map_err(anyhow::Error::msg)?;
            let device = backend::cpu();
            let (model, _) = load_state_dict(config.init(&device), &dict, &LoadOptions::default())
                .with_context(|| format!("{} does not fit {arch:?}", args.input.display()))?;
            metadata.insert("arch".to_string(), format!("{arch:?}"));
            metadata.insert(
                "settings".to_string(),
                settings
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            state_dict_of(&model)
        }
        None => dict,
    };
    save_safetensors(&dict, Some(metadata), &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("wrote {} ({} tensors)", args.output.display(), dict.len());
    Ok(())
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The safetensors file to write.
    output: PathBuf,
    /// Architecture (pyramid-attention, panet, paedsr, edsr, dncnn, pnen, rdn, memnet).
    #[arg(long)]
    arch: String,
    /// Official constructor argument (repeatable), e.g. `n_resblocks=8`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `pyra init`: a freshly initialised model (PyTorch's default initialisation) as safetensors,
/// e.g. to start training or to measure speed and memory.
pub fn init(args: InitArgs) -> Result<()> {
    let settings = parse_settings(&args.settings)?;
    let arch: Arch = args.arch.parse().map_err(anyhow::Error::msg)?;
    let config = ArchConfig::from_settings(arch, &settings).map_err(anyhow::Error::msg)?;
    let device = backend::cpu();
    device.seed(args.seed);
    let dict = state_dict_of(&config.init(&device));
    let mut metadata = HashMap::new();
    metadata.insert("arch".to_string(), format!("{arch:?}"));
    metadata.insert("init_seed".to_string(), args.seed.to_string());
    save_safetensors(&dict, Some(metadata), &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "wrote {} ({} tensors, seed {})",
        args.output.display(),
        dict.len(),
        args.seed
    );
    Ok(())
}
