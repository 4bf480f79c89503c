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
    if let Some(first) = shape(dict, "intermediate_dncnn.itermediate_dncnn.0.weight") {
        let n_layers = count(dict, |k| {
            k.starts_with("intermediate_dncnn.itermediate_dncnn.")
                && k.ends_with(".weight")
                && dict.get(k).is_some_and(|t| t.shape.len() == 4)
        });
        return Ok(Detected {
            arch: Arch::Ffdnet,
            settings: vec![
                s("n_colors", &(first[1] / 5)),
                s("n_feats", &first[0]),
                s("n_layers", &n_layers),
            ],
        });
    }
    if let Some(entry) = shape(dict, "entry.weight") {
        return detect_pnen(dict, entry);
    }
    if let Some(sfe) = shape(dict, "SFENet1.weight") {
        return detect_rdn(dict, sfe);
    }
    if let Some(fe) = shape(dict, "feature_extractor.conv.weight") {
        return detect_memnet(dict, fe);
    }
    let head = shape(dict, "head.0.weight").ok_or_else(|| {
        "unrecognised checkpoint: no `head.0.weight` (PANet/EDSR family), `dncnn.0.weight` \
         (DnCNN), `intermediate_dncnn.itermediate_dncnn.0.weight` (FFDNet), `entry.weight` (PNEN), `SFENet1.weight` (RDN) nor \
         `feature_extractor.conv.weight` (MemNet); give --arch and --set explicitly"
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

/// PNEN: sizes from the entry convolution and the first group's non-local block. The plain
/// non-local block and APNB have the same keys (`theta`, `phi`, `g`, `w`); such a checkpoint
/// is taken as NLB unless `--set non_local=apnb` says otherwise.
fn detect_pnen(dict: &StateDict, entry: &[usize]) -> Result<Detected, String> {
    let s = |k: &str, v: &dyn std::fmt::Display| (k.to_string(), v.to_string());
    let n_groups = shape(dict, "fusion")
        .map(|f| f[0])
        .ok_or("a PNEN checkpoint needs `fusion` (the weights of the group predictions)")?;
    let mut settings = vec![
        s("n_colors", &entry[1]),
        s("n_feats", &entry[0]),
        s("n_groups", &n_groups),
    ];
    if let Some(query) = shape(dict, "groups.0.non_local.query.weight") {
        let value = shape(dict, "groups.0.non_local.values.0.weight")
            .ok_or("a PNEN checkpoint with a pyramid non-local block needs its `values`")?;
        let scales = count(dict, |k| {
            k.starts_with("groups.0.non_local.keys.") && k.ends_with(".weight")
        });
        settings.extend([
            s("non_local", &"pnb"),
            s("key_channels", &query[0]),
            s("value_channels", &value[0]),
            s("scales", &scales),
        ]);
    } else if dict.get("groups.0.non_local.theta.weight").is_some() {
        settings.push(s("non_local", &"nlb"));
    } else {
        return Err("a PNEN checkpoint without a recognisable non-local block in group 0".into());
    }
    Ok(Detected {
        arch: Arch::Pnen,
        settings,
    })
}

/// The non-local blocks of an RDN/MemNet body (`non_locals.{k}`): kind, sizes and spacing
/// (`non_local_every`: 5, the paper's, when it explains the count, else the spacing that
/// spreads the count over `units`).
fn host_non_locals(dict: &StateDict, units: usize) -> Vec<(String, String)> {
    let s = |k: &str, v: &dyn std::fmt::Display| (k.to_string(), v.to_string());
    let count = count(dict, |k| {
        k.starts_with("non_locals.")
            && (k.ends_with(".query.weight") || k.ends_with(".theta.weight"))
    });
    if count == 0 {
        return vec![s("non_local", &"none")];
    }
    let every = if units.div_ceil(5) == count {
        5
    } else {
        units.div_ceil(count)
    };
    let mut settings = vec![s("non_local_every", &every)];
    if let Some(query) = shape(dict, "non_locals.0.query.weight") {
        let value = shape(dict, "non_locals.0.values.0.weight").map_or(0, |v| v[0]);
        let scales = count_keys(dict, "non_locals.0.keys.");
        settings.extend([
            s("non_local", &"pnb"),
            s("key_channels", &query[0]),
            s("value_channels", &value),
            s("scales", &scales),
        ]);
    } else {
        settings.push(s("non_local", &"nlb"));
    }
    settings
}

fn count_keys(dict: &StateDict, prefix: &str) -> usize {
    count(dict, |k| k.starts_with(prefix) && k.ends_with(".weight"))
}

/// RDN: G0 and the colours from `SFENet1`, D, C and G from the dense blocks, the scale from
/// UPNet's first convolution (G * r^2 outputs).
fn detect_rdn(dict: &StateDict, sfe: &[usize]) -> Result<Detected, String> {
    let s = |k: &str, v: &dyn std::fmt::Display| (k.to_string(), v.to_string());
    let blocks = count(dict, |k| {
        k.starts_with("RDBs.") && k.ends_with(".LFF.weight")
    });
    let layers = count(dict, |k| {
        k.starts_with("RDBs.0.convs.") && k.ends_with(".conv.0.weight")
    });
    let growth = shape(dict, "RDBs.0.convs.0.conv.0.weight")
        .map(|g| g[0])
        .ok_or("an RDN checkpoint needs `RDBs.0.convs.0.conv.0.weight`")?;
    let up = shape(dict, "UPNet.0.weight").ok_or("an RDN checkpoint needs `UPNet.0.weight`")?;
    let scale = if dict.get("UPNet.4.weight").is_some() {
        4
    } else if dict.get("UPNet.2.weight").is_some() {
        ((up[0] / growth.max(1)) as f64).sqrt().round() as usize
    } else {
        1
    };
    let mut settings = vec![
        s("n_colors", &sfe[1]),
        s("G0", &sfe[0]),
        s("D", &blocks),
        s("C", &layers),
        s("G", &growth),
        s("scale", &scale),
    ];
    settings.extend(host_non_locals(dict, blocks));
    Ok(Detected {
        arch: Arch::Rdn,
        settings,
    })
}

/// MemNet: features and colours from the feature extractor, M from the gate units, R from
/// the first gate's input (R short-term + 1 long-term memories).
fn detect_memnet(dict: &StateDict, fe: &[usize]) -> Result<Detected, String> {
    let s = |k: &str, v: &dyn std::fmt::Display| (k.to_string(), v.to_string());
    let blocks = count(dict, |k| {
        k.starts_with("dense_memory.") && k.ends_with(".gate_unit.conv.weight")
    });
    let gate = shape(dict, "dense_memory.0.gate_unit.conv.weight")
        .ok_or("a MemNet checkpoint needs `dense_memory.0.gate_unit.conv.weight`")?;
    let recursions = (gate[1] / fe[0].max(1)).saturating_sub(1);
    let mut settings = vec![
        s("n_colors", &fe[1]),
        s("n_feats", &fe[0]),
        s("n_memblocks", &blocks),
        s("n_resblocks", &recursions),
    ];
    settings.extend(host_non_locals(dict, blocks));
    Ok(Detected {
        arch: Arch::MemNet,
        settings,
    })
}
