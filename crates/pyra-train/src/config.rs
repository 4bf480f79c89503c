//! One TOML file describes a training run: the model, the task that degrades clean images, the
//! data, the optimiser and its schedule, validation and output. Presets for the papers' recipes
//! live in `configs/` at the repository root and are compiled in (`pyra train --preset NAME`).
//!
//! Relative paths are resolved against the working directory, as the official scripts do with
//! `--dir_data`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pyra_core::networks::{Arch, ArchConfig};
use pyra_tasks::smooth::{L0Options, SdOptions, Smoother, WmfOptions};
use serde::{Deserialize, Serialize};

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name of the run (the default output folder is `runs/<name>`).
    pub name: String,
    pub model: ModelSection,
    pub task: TaskConfig,
    pub data: DataSection,
    pub optim: OptimSection,
    #[serde(default)]
    pub validation: ValidationSection,
    #[serde(default)]
    pub output: OutputSection,
}

/// The network: an architecture of `pyra forward` and its official constructor arguments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub arch: String,
    /// Official argument names (`n_resblocks`, `n_feats`, ...); values may be numbers, booleans
    /// or strings.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
    /// Start from these weights (safetensors or `.pt`, strict keys) instead of a fresh
    /// initialisation, as EDSR's x3/x4 recipes start from x2.
    #[serde(default)]
    pub init: Option<PathBuf>,
}

/// A single value or an inclusive range `[low, high]` sampled uniformly per patch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Level {
    Fixed(f64),
    Range([f64; 2]),
}

impl Level {
    pub fn bounds(self) -> (f64, f64) {
        match self {
            Level::Fixed(v) => (v, v),
            Level::Range([a, b]) => (a.min(b), a.max(b)),
        }
    }
}

/// The noise protocol of training inputs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrainProtocol {
    /// Clipped to 0-255 and rounded to 8 bits (PANet's test inputs).
    #[default]
    Clip8,
    /// Float noise, neither clipped nor rounded (DnCNN, FFDNet, PANet Table 1).
    Float,
    /// Each patch one or the other, even odds.
    Mixed,
}

/// How clean images become training inputs (the papers' degradations).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TaskConfig {
    /// Additive Gaussian noise (0-255 scale), by default clipped and rounded to 8 bits as
    /// PANet's inputs.
    Denoise {
        sigma: Level,
        /// Train on gray (BT.601 Y) images.
        #[serde(default)]
        gray: bool,
        /// `clip8` (PANet), `float` (DnCNN/FFDNet: no clipping or rounding), or `mixed` (each
        /// patch one or the other, even odds).
        #[serde(default)]
        protocol: TrainProtocol,
        /// Append the noise map `σ/255` (per patch) to the input as a last channel, for
        /// networks told the noise level (PANet-B).
        #[serde(default)]
        noise_map: bool,
    },
    /// IJG JPEG compression of the gray (Y) image (PANet's CAR protocol).
    Jpeg { quality: Level },
    /// GRBG Bayer mosaic (the network sees the mosaic as a 3-channel image with zeros).
    Mosaic {},
    /// MATLAB bicubic downscaling by `scale`; `data.patch_size` is the HR patch.
    Sr { scale: usize },
    /// Edge-preserving smoothing (PNEN): the input is the clean image, the target the image
    /// filtered by `filter` (`l0`: `lambda` 0.02, `kappa` 2; `wmf`: `radius` 10, `sigma` 50;
    /// `sd`: `lambda` 15), computed once per image and cached.
    Smooth {
        filter: SmoothFilter,
        #[serde(default)]
        lambda: Option<f64>,
        #[serde(default)]
        kappa: Option<f64>,
        #[serde(default)]
        radius: Option<usize>,
        #[serde(default)]
        sigma: Option<f64>,
    },
}

/// The filters a smoothing network can learn.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmoothFilter {
    L0,
    Wmf,
    Sd,
}

impl TaskConfig {
    /// Whether inputs carry the noise map as a last channel.
    pub fn noise_map(&self) -> bool {
        matches!(
            self,
            TaskConfig::Denoise {
                noise_map: true,
                ..
            }
        )
    }

    /// Whether the images are gray.
    pub fn gray(&self) -> bool {
        match self {
            TaskConfig::Denoise { gray, .. } => *gray,
            TaskConfig::Jpeg { .. } => true,
            TaskConfig::Mosaic {} | TaskConfig::Sr { .. } | TaskConfig::Smooth { .. } => false,
        }
    }

    /// For the smoothing task, its filter with the parameters given (paper defaults for the
    /// rest); an error names a parameter that does not belong to the filter.
    pub fn smoother(&self) -> Result<Option<Smoother>, String> {
        let TaskConfig::Smooth {
            filter,
            lambda,
            kappa,
            radius,
            sigma,
        } = *self
        else {
            return Ok(None);
        };
        let misplaced = |name: &str, given: bool| {
            if given {
                Err(format!(
                    "task.{name} is not a parameter of the {filter:?} filter"
                ))
            } else {
                Ok(())
            }
        };
        Ok(Some(match filter {
            SmoothFilter::L0 => {
                misplaced("radius", radius.is_some())?;
                misplaced("sigma", sigma.is_some())?;
                let d = L0Options::default();
                Smoother::L0(L0Options {
                    lambda: lambda.unwrap_or(d.lambda),
                    kappa: kappa.unwrap_or(d.kappa),
                    ..d
                })
            }
            SmoothFilter::Wmf => {
                misplaced("lambda", lambda.is_some())?;
                misplaced("kappa", kappa.is_some())?;
                let d = WmfOptions::default();
                Smoother::Wmf(WmfOptions {
                    radius: radius.unwrap_or(d.radius),
                    sigma: sigma.unwrap_or(d.sigma),
                })
            }
            SmoothFilter::Sd => {
                misplaced("kappa", kappa.is_some())?;
                misplaced("radius", radius.is_some())?;
                misplaced("sigma", sigma.is_some())?;
                let d = SdOptions::default();
                Smoother::Sd(SdOptions {
                    lambda: lambda.unwrap_or(d.lambda),
                    ..d
                })
            }
        }))
    }

    /// Output size / input size.
    pub fn scale(&self) -> usize {
        match self {
            TaskConfig::Sr { scale } => *scale,
            _ => 1,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_workers() -> usize {
    1
}
fn default_prefetch() -> usize {
    4
}

/// Training images and batching.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Folders of clean images (one path or a list).
    pub train: Folders,
    /// Target patch side (48 for restoration, 96 HR for SR in the paper).
    pub patch_size: usize,
    pub batch_size: usize,
    /// The 8 flips/rotations.
    #[serde(default = "default_true")]
    pub augment: bool,
    /// Threads that make batches ahead of the model.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Batches each worker keeps ready.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// The last `holdout` images (in name order) are kept out of training and used for
    /// validation when `validation.folder` is not given.
    #[serde(default)]
    pub holdout: usize,
}

/// One folder or several.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Folders {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl Folders {
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Folders::One(p) => vec![p.clone()],
            Folders::Many(v) => v.clone(),
        }
    }
}

/// The training loss.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Mean absolute error (PANet, EDSR).
    L1,
    /// Mean squared error (DnCNN, PNEN).
    Mse,
}

fn default_gamma() -> f64 {
    0.5
}
fn default_seed() -> u64 {
    1
}

/// Adam (beta 0.9/0.999, eps 1e-8) with a step schedule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    pub loss: LossKind,
    /// Initial learning rate (paper: 1e-4).
    pub lr: f64,
    /// Total optimisation steps.
    pub steps: u64,
    /// Multiply the learning rate by `gamma` every `decay_every` steps (0: never). The official
    /// code halves it every 200 epochs of 1000 steps.
    #[serde(default)]
    pub decay_every: u64,
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Linear warm-up over the first steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this value.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Seeds the weights, the patch order, the augmentations and the noise.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_max_images() -> usize {
    8
}

/// Validation on a folder (or on the held-out training images).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidationSection {
    /// Validate every this many steps (0: never).
    #[serde(default)]
    pub every: u64,
    /// Clean images to validate on (default: the held-out training images).
    #[serde(default)]
    pub folder: Option<PathBuf>,
    /// Images used at most.
    #[serde(default = "default_max_images")]
    pub max_images: usize,
    /// Centre crop of each validation image (target side), to keep validation cheap.
    #[serde(default)]
    pub crop: Option<usize>,
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self {
            every: 0,
            folder: None,
            max_images: default_max_images(),
            crop: None,
        }
    }
}

fn default_log_every() -> u64 {
    10
}
fn default_checkpoint_every() -> u64 {
    500
}

/// Where results go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Run folder (default `runs/<name>`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Write a CSV row (and refresh the plots) every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Save `checkpoint_latest.safetensors` every this many steps.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Also export the weights at these steps as `model_step<N>.safetensors` (kept, never
    /// overwritten): the twin runs of an ablation are compared with this run at one step.
    #[serde(default)]
    pub snapshots: Vec<u64>,
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            dir: None,
            log_every: default_log_every(),
            checkpoint_every: default_checkpoint_every(),
            snapshots: Vec::new(),
        }
    }
}

/// The presets, by name: the papers' recipes and the recipes of Pyra's bundled models.
pub const PRESETS: &[(&str, &str)] = &[
    ("panet-dn", include_str!("../../../configs/panet-dn.toml")),
    (
        "panet-s-dn",
        include_str!("../../../configs/panet-s-dn.toml"),
    ),
    ("panet-dm", include_str!("../../../configs/panet-dm.toml")),
    ("panet-car", include_str!("../../../configs/panet-car.toml")),
    ("paedsr-x2", include_str!("../../../configs/paedsr-x2.toml")),
    ("paedsr-x3", include_str!("../../../configs/paedsr-x3.toml")),
    ("paedsr-x4", include_str!("../../../configs/paedsr-x4.toml")),
    ("pyra-dn25", include_str!("../../../configs/pyra-dn25.toml")),
    ("pyra-dn50", include_str!("../../../configs/pyra-dn50.toml")),
    ("pyra-sr2", include_str!("../../../configs/pyra-sr2.toml")),
    (
        "pyra-blind",
        include_str!("../../../configs/pyra-blind.toml"),
    ),
    ("pnen-l0", include_str!("../../../configs/pnen-l0.toml")),
    ("pnen-wmf", include_str!("../../../configs/pnen-wmf.toml")),
    ("pnen-sd", include_str!("../../../configs/pnen-sd.toml")),
    (
        "pyra-pnen-l0",
        include_str!("../../../configs/pyra-pnen-l0.toml"),
    ),
];

/// The TOML text of a preset.
pub fn preset(name: &str) -> Result<&'static str, String> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            format!("unknown preset `{name}`; presets: {}", names.join(", "))
        })
}

/// Parse a run from TOML text, with `overrides` (`section.key=value`, value in TOML syntax;
/// a bare word is taken as a string) applied first.
pub fn parse_run(text: &str, overrides: &[String]) -> Result<RunConfig, String> {
    let mut table: toml::Table = text.parse().map_err(|e| format!("invalid TOML: {e}"))?;
    for item in overrides {
        let (path, value) = item
            .split_once('=')
            .ok_or_else(|| format!("--set expects section.key=value, got `{item}`"))?;
        let value: toml::Value = format!("v = {}", value.trim())
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.trim().to_string()));
        let keys: Vec<&str> = path.trim().split('.').collect();
        let (last, parents) = keys.split_last().expect("split yields one item");
        let mut node = &mut table;
        for key in parents {
            node = node
                .entry(key.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| format!("--set {path}: `{key}` is not a section"))?;
        }
        node.insert(last.to_string(), value);
    }
    let config: RunConfig = table
        .try_into()
        .map_err(|e: toml::de::Error| format!("invalid run configuration: {}", e.message()))?;
    config.validate()?;
    Ok(config)
}

/// Read a run file.
pub fn read_run(path: &Path, overrides: &[String]) -> Result<RunConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_run(&text, overrides).map_err(|e| format!("{}: {e}", path.display()))
}

fn setting_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl RunConfig {
    /// The network configuration.
    pub fn arch_config(&self) -> Result<ArchConfig, String> {
        let arch: Arch = self.model.arch.parse()?;
        let settings: Vec<(String, String)> = self
            .model
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), setting_text(v)))
            .collect();
        ArchConfig::from_settings(arch, &settings)
    }

    /// The model settings as `key=value` strings (for checkpoint metadata).
    pub fn settings_text(&self) -> Vec<String> {
        self.model
            .settings
            .iter()
            .map(|(k, v)| format!("{k}={}", setting_text(v)))
            .collect()
    }

    /// The run folder.
    pub fn run_dir(&self) -> PathBuf {
        self.output
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(&self.name))
    }

    /// The canonical TOML text (stored in checkpoints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run configuration serialises")
    }

    /// Consistency checks whose message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let arch = self.arch_config()?;
        let colors = if self.task.gray() { 1 } else { 3 };
        if arch.input_channels() != colors {
            return Err(format!(
                "the model takes {} channel(s) but the task gives {colors} (set model.settings.n_colors)",
                arch.input_channels()
            ));
        }
        if arch.scale() != self.task.scale() {
            return Err(format!(
                "the model upscales x{} but the task is x{}",
                arch.scale(),
                self.task.scale()
            ));
        }
        if self.data.batch_size == 0 || self.data.patch_size == 0 {
            return Err("data.batch_size and data.patch_size must be at least 1".into());
        }
        if !self.data.patch_size.is_multiple_of(self.task.scale()) {
            return Err(format!(
                "data.patch_size {} is not a multiple of the scale {}",
                self.data.patch_size,
                self.task.scale()
            ));
        }
        if self.data.workers == 0 || self.data.prefetch == 0 {
            return Err("data.workers and data.prefetch must be at least 1".into());
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return Err("optim.lr must be a positive number".into());
        }
        if let TaskConfig::Denoise { sigma, .. } = self.task {
            let (lo, hi) = sigma.bounds();
            if lo < 0.0 || !hi.is_finite() {
                return Err("task.sigma must be finite and non-negative".into());
            }
        }
        if let TaskConfig::Jpeg { quality } = self.task {
            let (lo, hi) = quality.bounds();
            if lo < 1.0 || hi > 100.0 {
                return Err("task.quality must lie in 1..=100".into());
            }
        }
        if self.validation.every > 0 && self.validation.folder.is_none() && self.data.holdout == 0 {
            return Err(
                "validation.every needs validation.folder or data.holdout (images kept out of training)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_builds() {
        for (name, text) in PRESETS {
            let run = parse_run(text, &[]).unwrap_or_else(|e| panic!("preset {name}: {e}"));
            assert_eq!(&run.name, name, "preset {name} names itself");
            run.arch_config().unwrap();
        }
    }

    #[test]
    fn overrides_reach_nested_keys_and_bad_values_are_named() {
        let text = preset("pyra-dn25").unwrap();
        let run = parse_run(
            text,
            &[
                "optim.steps=7".into(),
                "model.settings.n_feats=8".into(),
                "output.dir=/tmp/x".into(),
            ],
        )
        .unwrap();
        assert_eq!(run.optim.steps, 7);
        assert_eq!(run.arch_config().unwrap().input_channels(), 3);
        assert_eq!(run.run_dir(), PathBuf::from("/tmp/x"));
        let e = parse_run(text, &["optim.lr=-1".into()]).unwrap_err();
        assert!(e.contains("optim.lr"), "{e}");
        let e = parse_run(text, &["data.bogus=1".into()]).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse_run(text, &["model.settings.n_colors=1".into()]).unwrap_err();
        assert!(e.contains("channel"), "{e}");
    }

    #[test]
    fn canonical_text_round_trips() {
        let run = parse_run(preset("pyra-sr2").unwrap(), &[]).unwrap();
        assert_eq!(parse_run(&run.to_toml(), &[]).unwrap(), run);
    }
}
