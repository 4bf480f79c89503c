//! Training checkpoints and exported weights, in safetensors, written atomically.
//!
//! A checkpoint (`checkpoint_latest.safetensors`) holds everything a run needs to continue
//! exactly: the weights (`model.<key>`), Adam's moments (`optim.exp_avg.<key>`,
//! `optim.exp_avg_sq.<key>`) and, in the metadata, the step, Adam's step count, the run's
//! configuration (TOML) — whose seed with the step is the whole RNG state, see [`crate::data`]
//! — the best validation PSNR and the training time so far.
//!
//! Exported weights (`model_best.safetensors`, `model_latest.safetensors`) hold the plain
//! state-dict keys, as `pyra restore`, `pyra bench` and `pyra convert` read them, with the
//! architecture and settings in the metadata.

use std::collections::HashMap;
use std::path::Path;

use pyra_core::weights::{save_safetensors, NamedTensor, StateDict};

use crate::optim::Adam;

const FORMAT: &str = "pyra-training-checkpoint/1";

/// Everything a run needs to continue.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Steps completed.
    pub step: u64,
    pub weights: StateDict,
    pub adam: Adam,
    /// The run's configuration (canonical TOML).
    pub config: String,
    pub best_psnr: Option<f64>,
    /// Seconds spent training so far (all sessions).
    pub elapsed_s: f64,
}

impl Checkpoint {
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let mut dict = StateDict::default();
        for t in &self.weights.tensors {
            dict.push(NamedTensor {
                name: format!("model.{}", t.name),
                ..t.clone()
            });
        }
        for t in self.adam.to_tensors(&self.weights) {
            dict.push(NamedTensor {
                name: format!("optim.{}", t.name),
                ..t
            });
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("adam_steps".to_string(), self.adam.steps.to_string());
        meta.insert("config".to_string(), self.config.clone());
        meta.insert(
            "best_psnr".to_string(),
            self.best_psnr.map(|p| p.to_string()).unwrap_or_default(),
        );
        meta.insert("elapsed_s".to_string(), self.elapsed_s.to_string());
        save_safetensors(&dict, Some(meta), path)
            .map_err(|e| format!("cannot write checkpoint {}: {e}", path.display()))
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let what = |e: String| format!("{} is not a Pyra training checkpoint: {e}", path.display());
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| what(e.to_string()))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| what("no metadata".into()))?;
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(what(format!("format is not {FORMAT}")));
        }
        let field = |key: &str| {
            meta.get(key)
                .cloned()
                .ok_or_else(|| what(format!("metadata lacks `{key}`")))
        };
        let number = |key: &str| -> Result<u64, String> {
            field(key)?
                .parse()
                .map_err(|_| what(format!("`{key}` is not a number")))
        };
        let dict = StateDict::from_bytes(&bytes, &path.display().to_string())
            .map_err(|e| what(e.to_string()))?;
        let mut weights = StateDict::default();
        let mut optim = Vec::new();
        for t in &dict.tensors {
            if let Some(name) = t.name.strip_prefix("model.") {
                weights.push(NamedTensor {
                    name: name.to_string(),
                    ..t.clone()
                });
            } else if t.name.starts_with("optim.") {
                optim.push(t);
            } else {
                return Err(what(format!("unexpected tensor `{}`", t.name)));
            }
        }
        let optim: Vec<NamedTensor> = optim
            .into_iter()
            .map(|t| NamedTensor {
                name: t.name["optim.".len()..].to_string(),
                ..t.clone()
            })
            .collect();
        let adam = Adam::from_tensors(number("adam_steps")?, &optim.iter().collect::<Vec<_>>())
            .map_err(what)?;
        let best = field("best_psnr")?;
        Ok(Self {
            step: number("step")?,
            weights,
            adam,
            config: field("config")?,
            best_psnr: if best.is_empty() {
                None
            } else {
                Some(best.parse().map_err(|_| what("bad best_psnr".into()))?)
            },
            elapsed_s: field("elapsed_s")?.parse().unwrap_or(0.0),
        })
    }
}

/// Write inference weights (plain state-dict keys) with the architecture in the metadata.
pub fn export_weights(
    weights: &StateDict,
    arch: &str,
    settings: &[String],
    step: u64,
    path: &Path,
) -> Result<(), String> {
    let mut meta = HashMap::new();
    meta.insert("arch".to_string(), arch.to_string());
    meta.insert("settings".to_string(), settings.join(" "));
    meta.insert("step".to_string(), step.to_string());
    save_safetensors(weights, Some(meta), path)
        .map_err(|e| format!("cannot write weights {}: {e}", path.display()))
}
