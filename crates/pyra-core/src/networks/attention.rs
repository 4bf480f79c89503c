//! The pyramid attention block on its own as a network (`--arch pyramid-attention`): what the
//! official-fixture parity tests and `pyra attention` run. Its checkpoints are parts of other
//! networks', so it is never detected; `--arch` names it.

use burn::tensor::{Device, Tensor};

use super::arch::{parse, set_attention, Architecture, MemoryShape};
use super::cost::pyramid_attention_flops;
use crate::blocks::{PyramidAttention, PyramidAttentionConfig};
use crate::weights::StateDict;

/// The pyramid attention block in the registry ([`super::arch::Architecture`]).
pub struct PyramidAttentionArch;

impl Architecture for PyramidAttentionArch {
    type Config = PyramidAttentionConfig;
    type Network = PyramidAttention;
    const NAME: &'static str = "pyramid-attention";
    const ALIASES: &'static [&'static str] = &["pa"];
    const SETTINGS: &'static str =
        "channel, res_scale, reduction, level, scales, ksize, stride, softmax_scale, average, interp";
    const MARKER: &'static str = "(pyramid attention on its own: never detected, give --arch)";

    fn defaults() -> PyramidAttentionConfig {
        PyramidAttentionConfig::new()
    }

    fn set(c: &mut PyramidAttentionConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "channel" => c.channel = parse(key, value)?,
            "res_scale" => c.res_scale = parse(key, value)?,
            _ => return set_attention(c, key, value),
        }
        Ok(true)
    }

    fn validate(c: &PyramidAttentionConfig) -> Result<(), String> {
        c.validate()
    }

    fn init(c: &PyramidAttentionConfig, device: &Device) -> PyramidAttention {
        c.init(device)
    }

    fn input_channels(c: &PyramidAttentionConfig) -> usize {
        c.channel
    }

    fn has_attention(_: &PyramidAttentionConfig) -> bool {
        true
    }

    fn memory_shape(c: &PyramidAttentionConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: c.channel as u64,
            attention_scales: Some(&c.scales),
            non_local: None,
        }
    }

    fn detect(_dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        None
    }

    fn flops(m: &PyramidAttention, h: usize, w: usize) -> u64 {
        pyramid_attention_flops(m, h, w)
    }

    fn forward(m: &PyramidAttention, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }

    fn attentions(m: &PyramidAttention) -> Vec<&PyramidAttention> {
        vec![m]
    }

    fn attentions_mut(m: &mut PyramidAttention) -> Vec<&mut PyramidAttention> {
        vec![m]
    }

    fn min_input_side(m: &PyramidAttention) -> usize {
        m.min_input_side()
    }

    fn attention_input(
        m: &PyramidAttention,
        x: Tensor<4>,
    ) -> Option<(Tensor<4>, &PyramidAttention)> {
        Some((x, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::arch::ATTENTION_KEYS;
    use crate::networks::paedsr::PaEdsrArch;
    use crate::networks::panet::PaNetArch;

    #[test]
    fn the_settings_lists_name_every_attention_knob() {
        for settings in [
            PyramidAttentionArch::SETTINGS,
            PaNetArch::SETTINGS,
            PaEdsrArch::SETTINGS,
        ] {
            assert!(settings.ends_with(ATTENTION_KEYS), "{settings}");
        }
    }
}
