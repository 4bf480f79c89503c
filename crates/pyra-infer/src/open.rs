//! Opening a model to restore with: a checkpoint file (an official `model_best.pt`, a Pyra
//! safetensors file) or the name of a bundled model, its architecture detected from the keys
//! and shapes (spandrel-style) or given, its weights loaded strictly.
//!
//! ```no_run
//! let device = pyra_core::backend::default_device();
//! let restorer = pyra_infer::Restorer::open("pyra-dn25", &device).unwrap();
//! let photo = pyra_tasks::read_image("noisy.png").unwrap();
//! pyra_tasks::write_png(&restorer.restore(&photo), "out.png", pyra_tasks::Depth::Eight).unwrap();
//! ```

use std::path::Path;

use pyra_core::burn::tensor::Device;
use pyra_core::networks::{detect, AnyNetwork, Arch, ArchConfig};
use pyra_core::weights::{load_state_dict, LoadOptions, LoadReport, StateDict, WeightsError};

use crate::bundled;
use crate::restorer::{Mode, Restorer};

/// Why a model could not be opened (one line each).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: no such file (nor a bundled model: {bundled})")]
    NotFound { path: String, bundled: String },
    #[error("{0}")]
    Weights(#[from] WeightsError),
    /// A bad `--arch`/`--set`, or keys that match no architecture.
    #[error("{0}")]
    Config(String),
    #[error("cannot load {origin}: {source}")]
    Load {
        origin: String,
        source: WeightsError,
    },
}

/// A network with its configuration, ready to run.
pub struct Model {
    pub config: ArchConfig,
    pub network: AnyNetwork,
    /// What detection found (`None` when the architecture was given).
    pub detected: Option<String>,
}

/// `KEY=VALUE` settings as pairs.
pub fn parse_settings(settings: &[String]) -> Result<Vec<(String, String)>, OpenError> {
    settings
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(OpenError::Config(format!(
                "--set expects KEY=VALUE, got `{s}`"
            ))),
        })
        .collect()
}

/// The configuration of `arch` with `settings` applied.
pub fn config(arch: &str, settings: &[String]) -> Result<(Arch, ArchConfig), OpenError> {
    let arch: Arch = arch.parse().map_err(OpenError::Config)?;
    let config =
        ArchConfig::from_settings(arch, &parse_settings(settings)?).map_err(OpenError::Config)?;
    Ok((arch, config))
}

/// Weights from a file (`.pt` zip or legacy, safetensors), or from the bundled model of that
/// name when no such file exists.
pub fn read_weights(path: &Path) -> Result<StateDict, OpenError> {
    if !path.exists() {
        if let Some(model) = path.to_str().and_then(bundled::find) {
            return Ok(model.weights()?);
        }
        return Err(OpenError::NotFound {
            path: path.display().to_string(),
            bundled: bundled::names(),
        });
    }
    Ok(StateDict::read(path)?)
}

/// The configuration for `dict`: `arch` with `settings` when an architecture is given, else
/// detected from the keys and shapes, with `settings` as overrides. Also returns what was
/// detected.
pub fn configure(
    arch: Option<&str>,
    settings: &[String],
    dict: &StateDict,
) -> Result<(ArchConfig, Option<String>), OpenError> {
    match arch {
        Some(arch) => Ok((config(arch, settings)?.1, None)),
        None => {
            let detected = detect(dict).map_err(OpenError::Config)?;
            let config = detected
                .config_with(&parse_settings(settings)?)
                .map_err(OpenError::Config)?;
            Ok((config, Some(detected.describe())))
        }
    }
}

/// Build the network of `config` and load `weights` into it strictly (every key used, every
/// parameter given, shapes equal; `allow_extra` tolerates unused keys).
pub fn load(
    config: &ArchConfig,
    weights: &StateDict,
    origin: &str,
    allow_extra: bool,
    device: &Device,
) -> Result<(AnyNetwork, LoadReport), OpenError> {
    let options = LoadOptions {
        allow_extra,
        ..Default::default()
    };
    load_state_dict(config.init(device), weights, &options).map_err(|source| OpenError::Load {
        origin: origin.to_string(),
        source,
    })
}

/// A bundled model, architecture detected from its keys.
pub fn open_bundled(model: &bundled::BundledModel, device: &Device) -> Result<Model, OpenError> {
    let dict = model.weights()?;
    let (config, detected) = configure(None, &[], &dict)?;
    let (network, _) = load(&config, &dict, model.name, false, device)?;
    Ok(Model {
        config,
        network,
        detected,
    })
}

/// Read `weights` (a file or a bundled model's name), settle the configuration (given, or
/// detected) and load the network strictly.
pub fn open(
    weights: &Path,
    arch: Option<&str>,
    settings: &[String],
    device: &Device,
) -> Result<Model, OpenError> {
    let dict = read_weights(weights)?;
    let (config, detected) = configure(arch, settings, &dict)?;
    let (network, _) = load(
        &config,
        &dict,
        &weights.display().to_string(),
        false,
        device,
    )?;
    Ok(Model {
        config,
        network,
        detected,
    })
}

impl Restorer {
    /// A restorer for `config`'s network with the defaults of `pyra restore`: output rounded
    /// to 8-bit levels, no self-ensemble, one whole-image pass.
    pub fn new(config: &ArchConfig, network: AnyNetwork, device: &Device) -> Restorer {
        Restorer {
            network,
            scale: config.scale(),
            rgb_range: config.rgb_range(),
            mode: Mode::Whole,
            quantize: true,
            ensemble: false,
            device: device.clone(),
        }
    }

    /// Open a checkpoint file or a bundled model (architecture detected, weights loaded
    /// strictly) as a restorer with [`Restorer::new`]'s defaults.
    pub fn open(weights: impl AsRef<Path>, device: &Device) -> Result<Restorer, OpenError> {
        let model = open(weights.as_ref(), None, &[], device)?;
        Ok(Restorer::new(&model.config, model.network, device))
    }
}
