//! What Pyra knows about one architecture, behind one small trait (as spandrel describes each
//! architecture in one file): its settings (the official argument names), how to recognise
//! its checkpoints, what it costs, and what it offers at run time. Each network file
//! implements [`Architecture`] for a marker type next to its network; the registry in
//! [`super::any`] lists them, one line each, and generates the enums and the dispatch.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::blocks::{NonLocalKind, PyramidAttention, PyramidAttentionConfig, PyramidNonLocal};
use crate::ops::Interp;
use crate::weights::StateDict;

/// What the memory model needs to know of a configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryShape<'a> {
    /// Feature channels alive along the trunk (at input resolution).
    pub features: u64,
    /// The pyramid attention's scales, if the network has one.
    pub attention_scales: Option<&'a [f64]>,
    /// The kind and scales of its non-local blocks, if it has any.
    pub non_local: Option<(NonLocalKind, usize)>,
}

/// One architecture: the associated functions take the configuration or the network
/// explicitly, so they never shadow the networks' own methods.
pub trait Architecture {
    type Config: Clone + std::fmt::Debug + PartialEq;
    type Network: Module + std::fmt::Debug;

    /// The `--arch` name.
    const NAME: &'static str;
    /// Other names `--arch` accepts.
    const ALIASES: &'static [&'static str] = &[];
    /// The settings [`Architecture::set`] accepts, for the error message.
    const SETTINGS: &'static str;
    /// What [`Architecture::detect`] looks for, for the message when nothing matches.
    const MARKER: &'static str;

    /// The official defaults.
    fn defaults() -> Self::Config;
    /// Apply one `key=value` setting; `Ok(false)` when `key` is not a setting of this
    /// architecture.
    fn set(config: &mut Self::Config, key: &str, value: &str) -> Result<bool, String>;
    /// Check the configuration; the message names the offending setting.
    fn validate(config: &Self::Config) -> Result<(), String>;
    fn init(config: &Self::Config, device: &Device) -> Self::Network;
    /// Channels the input must have.
    fn input_channels(config: &Self::Config) -> usize;
    /// Output size / input size.
    fn scale(_config: &Self::Config) -> usize {
        1
    }
    /// The pixel value range the network expects.
    fn rgb_range(_config: &Self::Config) -> f32 {
        1.0
    }
    /// Whether the network contains pyramid attention.
    fn has_attention(_config: &Self::Config) -> bool {
        false
    }
    /// Whether the network is told the noise level.
    fn takes_noise_level(_config: &Self::Config) -> bool {
        false
    }
    fn memory_shape(config: &Self::Config) -> MemoryShape<'_>;

    /// The settings that rebuild a checkpoint of this architecture from its keys and shapes;
    /// `None` when `dict` is not one, `Some(Err(..))` when it is one but incomplete.
    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>>;

    /// FLOPs of one forward on a `1 x C x h x w` input (see [`super::cost`]).
    fn flops(network: &Self::Network, h: usize, w: usize) -> u64;
    fn forward(network: &Self::Network, x: Tensor<4>) -> Tensor<4>;
    /// Every prediction the training loss supervises, the final one first.
    fn forward_supervised(network: &Self::Network, x: Tensor<4>) -> Vec<Tensor<4>> {
        vec![Self::forward(network, x)]
    }
    /// Tell the network the noise level of its next inputs; `false` if it takes none.
    fn set_noise_level(_network: &mut Self::Network, _sigma: f64) -> bool {
        false
    }
    /// The network's pyramid attention blocks.
    fn attentions(_network: &Self::Network) -> Vec<&PyramidAttention> {
        Vec::new()
    }
    /// The same, to change (for [`super::AnyNetwork::set_attention_window`]).
    fn attentions_mut(_network: &mut Self::Network) -> Vec<&mut PyramidAttention> {
        Vec::new()
    }
    /// Make the network's global non-local block (if any) attend within windows of `t x t`
    /// pixels of the map it sees (`None`: the whole map); `false` without one.
    fn set_non_local_window(_network: &mut Self::Network, _window: Option<usize>) -> bool {
        false
    }
    /// Whether [`Architecture::set_non_local_window`] has a block to set.
    fn has_non_local_window(_network: &Self::Network) -> bool {
        false
    }
    /// Input pixels per pixel of the map the attention sees (PANet-B: 2).
    fn attention_stride(_network: &Self::Network) -> usize {
        1
    }
    /// The smallest input side the network accepts.
    fn min_input_side(_network: &Self::Network) -> usize {
        1
    }
    /// The features that enter the pyramid attention, and the block.
    fn attention_input(
        _network: &Self::Network,
        _x: Tensor<4>,
    ) -> Option<(Tensor<4>, &PyramidAttention)> {
        None
    }
    /// The features that enter the `index`-th pyramid non-local block, and the block.
    fn pyramid_non_local_input(
        _network: &Self::Network,
        _x: Tensor<4>,
        _index: usize,
    ) -> Option<(Tensor<4>, &PyramidNonLocal)> {
        None
    }
}

// Helpers the architectures' settings and detection share.

pub(crate) fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("`{key}={value}`: `{value}` is not a valid value for {key}"))
}

/// `pnb`, `nlb`, `apnb` or `none`.
pub(crate) fn parse_non_local(value: &str) -> Result<Option<NonLocalKind>, String> {
    if value.eq_ignore_ascii_case("none") {
        Ok(None)
    } else {
        value.parse().map(Some)
    }
}

pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{key}={value}`: expected True or False")),
    }
}

fn parse_scales(key: &str, value: &str) -> Result<Vec<f64>, String> {
    value
        .split(',')
        .map(|s| parse::<f64>(key, s.trim()))
        .collect()
}

/// Apply one attention knob; `Ok(false)` when `key` is not an attention knob.
pub(crate) fn set_attention(
    c: &mut PyramidAttentionConfig,
    key: &str,
    value: &str,
) -> Result<bool, String> {
    match key {
        "reduction" => c.reduction = parse(key, value)?,
        "level" | "levels" => *c = c.clone().with_levels(parse(key, value)?),
        "scales" => c.scales = parse_scales(key, value)?,
        "ksize" => c.ksize = parse(key, value)?,
        "stride" => c.stride = parse(key, value)?,
        "softmax_scale" => c.softmax_scale = parse(key, value)?,
        "average" => c.average = parse_bool(key, value)?,
        "interp" => c.interp = value.parse::<Interp>()?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The settings [`set_attention`] knows (each list of settings that includes them ends with
/// them; a test checks).
#[cfg(test)]
pub(crate) const ATTENTION_KEYS: &str =
    "reduction, level, scales, ksize, stride, softmax_scale, average, interp";

/// `rgb_range=1` (the only value) for networks that work on [0, 1] and accept the key for
/// symmetry with the others.
pub(crate) fn unit_range(key: &str, value: &str) -> Result<bool, String> {
    Ok(key == "rgb_range" && parse::<f64>(key, value)? == 1.0)
}

/// Zero is never a valid size.
pub(crate) fn positive(name: &str, v: usize) -> Result<(), String> {
    if v == 0 {
        Err(format!("{name} must be at least 1"))
    } else {
        Ok(())
    }
}

/// A `(key, value)` setting.
pub(crate) fn setting(key: &str, value: impl std::fmt::Display) -> (String, String) {
    (key.to_string(), value.to_string())
}

pub(crate) fn shape<'a>(dict: &'a StateDict, key: &str) -> Option<&'a [usize]> {
    dict.get(key).map(|t| t.shape.as_slice())
}

pub(crate) fn count(dict: &StateDict, pattern: impl Fn(&str) -> bool) -> usize {
    dict.names().filter(|k| pattern(k)).count()
}

/// Keys under `prefix` ending in `.weight` whose tensors are 4-D (convolutions).
pub(crate) fn count_convs(dict: &StateDict, prefix: &str) -> usize {
    count(dict, |k| {
        k.starts_with(prefix)
            && k.ends_with(".weight")
            && dict.get(k).is_some_and(|t| t.shape.len() == 4)
    })
}

/// Keys under `prefix` ending in `.weight`.
pub(crate) fn count_weights(dict: &StateDict, prefix: &str) -> usize {
    count(dict, |k| k.starts_with(prefix) && k.ends_with(".weight"))
}

/// The non-local blocks of an RDN/MemNet body (`non_locals.{k}`): kind, sizes and spacing
/// (`non_local_every`: 5, the paper's, when it explains the count, else the spacing that
/// spreads the count over `units`).
pub(crate) fn host_non_locals(dict: &StateDict, units: usize) -> Vec<(String, String)> {
    let count = count(dict, |k| {
        k.starts_with("non_locals.")
            && (k.ends_with(".query.weight") || k.ends_with(".theta.weight"))
    });
    if count == 0 {
        return vec![setting("non_local", "none")];
    }
    let every = if units.div_ceil(5) == count {
        5
    } else {
        units.div_ceil(count)
    };
    let mut settings = vec![setting("non_local_every", every)];
    if let Some(query) = shape(dict, "non_locals.0.query.weight") {
        let value = shape(dict, "non_locals.0.values.0.weight").map_or(0, |v| v[0]);
        settings.extend([
            setting("non_local", "pnb"),
            setting("key_channels", query[0]),
            setting("value_channels", value),
            setting("scales", count_weights(dict, "non_locals.0.keys.")),
        ]);
    } else {
        settings.push(setting("non_local", "nlb"));
    }
    settings
}
