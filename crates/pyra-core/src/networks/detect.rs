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
use crate::blocks::mean_shift::RGB_MEAN;
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

fn shape<'a>(dict: &'a StateDict, key: &str) -> Option<&'a [usize]> {
    dict.get(key).map(|t| t.shape.as_slice())
}

fn count(dict: &StateDict, pattern: impl Fn(&str) -> bool) -> usize {
    dict.names().filter(|k| pattern(k)).count()
}

/// `rgb_range` from `sub_mean.bias` (`-rgb_range * RGB_MEAN`), when present and consistent
/// over the three channels; rounded to an integer, as ranges are (1 or 255 in practice).
fn rgb_range(dict: &StateDict) -> Option<u32> {
    let bias = dict.get("sub_mean.bias")?.to_f32();
    let ranges: Vec<f32> = bias.iter().zip(RGB_MEAN).map(|(b, m)| -b / m).collect();
    let range = ranges.first()?.round();
    let consistent =
        bias.len() == 3 && range >= 1.0 && ranges.iter().all(|r| (r - range).abs() <= 1e-3 * range);
    consistent.then_some(range as u32)
}

/// Detect the architecture of `dict`; the error says what was looked for.
pub fn detect(dict: &StateDict) -> Result<Detected, String> {
    let s = |k: &str, v: &dyn std::fmt::Display| (k.to_string(), v.to_string());
    if let Some(first) = shape(dict, "dncnn.0.weight") {
        let depth = count(dict, |k| {
            k.starts_with("dncnn.")
                && k.ends_with(".weight")
                && dict.get(k).is_some_and(|t| t.shape.len() == 4)
        });
        return Ok(Detected {
            arch: Arch::Dncnn,
            settings: vec![
                s("depth", &depth),
                s("n_channels", &first[0]),
                s("image_channels", &first[1]),
            ],
        });
    }
    let head = shape(dict, "head.0.weight").ok_or_else(|| {
        "unrecognised checkpoint: no `head.0.weight` (PANet/EDSR family) nor `dncnn.0.weight` \
         (DnCNN); give --arch and --set explicitly"
            .to_string()
    })?;
    let (n_feats, n_colors) = (head[0], head[1]);
    let n_resblocks = count(dict, |k| {
        k.starts_with("body.") && k.ends_with(".body.0.weight")
    });
    let attention_key = dict
        .names()
        .find(|k| k.starts_with("body.") && k.ends_with(".conv_match.0.weight"))
        .map(str::to_string);
    let reduction = attention_key
        .as_deref()
        .and_then(|k| shape(dict, k))
        .map(|m| n_feats / m[0].max(1));
    let upsampler = shape(dict, "tail.0.0.weight");
    let mut settings = vec![
        s("n_resblocks", &n_resblocks),
        s("n_feats", &n_feats),
        s("n_colors", &n_colors),
    ];
    let arch = match (upsampler, attention_key.is_some()) {
        (None, true) => Arch::PaNet,
        (Some(up), with_attention) => {
            let convs = count(dict, |k| k.starts_with("tail.0.") && k.ends_with(".weight"));
            let scale = if up[0] == 9 * n_feats { 3 } else { 1 << convs };
            settings.push(s("scale", &scale));
            settings.push((
                "res_scale".into(),
                if n_feats == 256 { "0.1" } else { "1" }.into(),
            ));
            if with_attention {
                Arch::PaEdsr
            } else {
                Arch::Edsr
            }
        }
        // PANet's trunk without its attention (the ablation baseline).
        (None, false) => {
            settings.push(s("attention", &"false"));
            Arch::PaNet
        }
    };
    if let Some(r) = reduction {
        settings.push(s("reduction", &r));
    }
    if let Some(range) = rgb_range(dict) {
        settings.push(s("rgb_range", &range));
    }
    Ok(Detected { arch, settings })
}
