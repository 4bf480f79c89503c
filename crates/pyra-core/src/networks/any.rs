//! Any of Pyra's architectures, chosen at run time: the registry. Each architecture lives in
//! its own file, which implements [`Architecture`] (its settings under the official argument
//! names, its detection from a state dict, its cost, what it offers at run time); the one
//! line per architecture in the `registry!` call below generates [`Arch`], [`ArchConfig`],
//! [`AnyNetwork`] and their dispatch. Adding an architecture is its file plus that line.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::arch::{Architecture, MemoryShape};
use super::attention::PyramidAttentionArch;
use super::blind_panet::BlindPaNetArch;
use super::dncnn::DncnnArch;
use super::edsr::EdsrArch;
use super::ffdnet::FfdnetArch;
use super::memnet::MemNetArch;
use super::paedsr::PaEdsrArch;
use super::panet::PaNetArch;
use super::pnen::PnenArch;
use super::rdn::RdnArch;
use super::{
    BlindPaNet, BlindPaNetConfig, Dncnn, DncnnConfig, Edsr, EdsrConfig, Ffdnet, FfdnetConfig,
    MemNet, MemNetConfig, PaEdsr, PaEdsrConfig, PaNet, PaNetConfig, Pnen, PnenConfig, Rdn,
    RdnConfig,
};
use crate::blocks::{PyramidAttention, PyramidAttentionConfig, PyramidNonLocal};
use crate::weights::StateDict;

macro_rules! registry {
    ($($variant:ident: $spec:ident, $network:ident, $config:ident;)*) => {
        /// The architectures Pyra runs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Arch {
            $($variant,)*
        }

        /// A configuration of one of the [`Arch`]s.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ArchConfig {
            $($variant($config),)*
        }

        /// One module of any [`Arch`]; state-dict keys are those of the inner module.
        // Layers live once per model and burn's Module derive takes variants by value:
        // boxing the large variants would buy nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum AnyNetwork {
            $($variant($network),)*
        }

        impl Arch {
            /// Every architecture, in the order detection tries them.
            pub const ALL: &'static [Arch] = &[$(Arch::$variant,)*];

            /// The `--arch` name and its aliases.
            pub fn names(self) -> (&'static str, &'static [&'static str]) {
                match self {
                    $(Arch::$variant => ($spec::NAME, $spec::ALIASES),)*
                }
            }

            /// The official defaults.
            pub fn defaults(self) -> ArchConfig {
                match self {
                    $(Arch::$variant => ArchConfig::$variant($spec::defaults()),)*
                }
            }

            /// The settings a checkpoint of this architecture implies, `None` when `dict` is
            /// not one.
            pub fn detect(self, dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
                match self {
                    $(Arch::$variant => $spec::detect(dict),)*
                }
            }

            /// What detection looks for.
            pub fn marker(self) -> &'static str {
                match self {
                    $(Arch::$variant => $spec::MARKER,)*
                }
            }

            /// The settings of this architecture, for messages.
            pub fn settings(self) -> &'static str {
                match self {
                    $(Arch::$variant => $spec::SETTINGS,)*
                }
            }
        }

        impl ArchConfig {
            pub fn arch(&self) -> Arch {
                match self {
                    $(Self::$variant(_) => Arch::$variant,)*
                }
            }

            /// Apply one setting; `Ok(false)` when it is not one of this architecture.
            fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
                match self {
                    $(Self::$variant(c) => $spec::set(c, key, value),)*
                }
            }

            /// Check the configuration; the message names the offending setting.
            pub fn validate(&self) -> Result<(), String> {
                match self {
                    $(Self::$variant(c) => $spec::validate(c),)*
                }
            }

            /// Channels the input must have.
            pub fn input_channels(&self) -> usize {
                match self {
                    $(Self::$variant(c) => $spec::input_channels(c),)*
                }
            }

            /// Output size / input size (the SR factor; 1 for restoration).
            pub fn scale(&self) -> usize {
                match self {
                    $(Self::$variant(c) => $spec::scale(c),)*
                }
            }

            /// The pixel value range the network expects (`rgb_range`; DnCNN works on
            /// [0, 1]).
            pub fn rgb_range(&self) -> f32 {
                match self {
                    $(Self::$variant(c) => $spec::rgb_range(c),)*
                }
            }

            /// Whether the network contains pyramid attention (its memory grows with the
            /// image squared when run whole).
            pub fn has_attention(&self) -> bool {
                match self {
                    $(Self::$variant(c) => $spec::has_attention(c),)*
                }
            }

            /// Whether the network is told the noise level (FFDNet's noise map).
            pub fn takes_noise_level(&self) -> bool {
                match self {
                    $(Self::$variant(c) => $spec::takes_noise_level(c),)*
                }
            }

            /// What the memory model needs to know.
            pub fn memory_shape(&self) -> MemoryShape<'_> {
                match self {
                    $(Self::$variant(c) => $spec::memory_shape(c),)*
                }
            }

            pub fn init(&self, device: &Device) -> AnyNetwork {
                match self {
                    $(Self::$variant(c) => AnyNetwork::$variant($spec::init(c, device)),)*
                }
            }
        }

        impl AnyNetwork {
            pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
                match self {
                    $(Self::$variant(m) => $spec::forward(m, x),)*
                }
            }

            /// Every prediction the training loss supervises, the final one first: PNEN's Y
            /// and its per-group Y_m; the single output of the other networks.
            pub fn forward_supervised(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
                match self {
                    $(Self::$variant(m) => $spec::forward_supervised(m, x),)*
                }
            }

            /// FLOPs of one forward on a `1 x C x h x w` input.
            pub fn flops(&self, h: usize, w: usize) -> u64 {
                match self {
                    $(Self::$variant(m) => $spec::flops(m, h, w),)*
                }
            }

            /// Tell a network that takes the noise level (FFDNet) the level of its next
            /// inputs (standard deviation, 0-255 scale); `false` for networks that do not
            /// take one.
            pub fn set_noise_level(&mut self, sigma: f64) -> bool {
                match self {
                    $(Self::$variant(m) => $spec::set_noise_level(m, sigma),)*
                }
            }

            fn attentions_mut(&mut self) -> Vec<&mut PyramidAttention> {
                match self {
                    $(Self::$variant(m) => $spec::attentions_mut(m),)*
                }
            }

            fn set_non_local_window(&mut self, window: Option<usize>) -> bool {
                match self {
                    $(Self::$variant(m) => $spec::set_non_local_window(m, window),)*
                }
            }

            fn has_non_local_window(&self) -> bool {
                match self {
                    $(Self::$variant(m) => $spec::has_non_local_window(m),)*
                }
            }

            /// The network's pyramid attention blocks.
            pub fn attentions(&self) -> Vec<&PyramidAttention> {
                match self {
                    $(Self::$variant(m) => $spec::attentions(m),)*
                }
            }

            /// Input pixels per pixel of the map its attention sees.
            pub fn attention_stride(&self) -> usize {
                match self {
                    $(Self::$variant(m) => $spec::attention_stride(m),)*
                }
            }

            /// The smallest input side the network accepts (pyramid attention needs every
            /// pyramid level to keep a pixel; most networks take any size).
            pub fn min_input_side(&self) -> usize {
                match self {
                    $(Self::$variant(m) => $spec::min_input_side(m),)*
                }
            }

            /// The features that enter the network's pyramid attention, and the attention
            /// block (the first half of the body has run); `None` for networks without
            /// attention.
            pub fn attention_input(&self, x: Tensor<4>) -> Option<(Tensor<4>, &PyramidAttention)> {
                match self {
                    $(Self::$variant(m) => $spec::attention_input(m, x),)*
                }
            }

            /// The features that enter the `index`-th pyramid non-local block (PNEN: of
            /// group `index`; RDN/MemNet: the `index`-th inserted block), and the block;
            /// `None` when there is no such pyramid non-local block.
            pub fn pyramid_non_local_input(
                &self,
                x: Tensor<4>,
                index: usize,
            ) -> Option<(Tensor<4>, &PyramidNonLocal)> {
                match self {
                    $(Self::$variant(m) => $spec::pyramid_non_local_input(m, x, index),)*
                }
            }
        }
    };
}

// The registry: variant, its `Architecture`, network and configuration. Detection tries them
// in this order.
registry! {
    PyramidAttention: PyramidAttentionArch, PyramidAttention, PyramidAttentionConfig;
    PaNet: PaNetArch, PaNet, PaNetConfig;
    PaEdsr: PaEdsrArch, PaEdsr, PaEdsrConfig;
    Edsr: EdsrArch, Edsr, EdsrConfig;
    Dncnn: DncnnArch, Dncnn, DncnnConfig;
    Ffdnet: FfdnetArch, Ffdnet, FfdnetConfig;
    Pnen: PnenArch, Pnen, PnenConfig;
    Rdn: RdnArch, Rdn, RdnConfig;
    MemNet: MemNetArch, MemNet, MemNetConfig;
    BlindPaNet: BlindPaNetArch, BlindPaNet, BlindPaNetConfig;
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        Arch::ALL
            .iter()
            .copied()
            .find(|arch| {
                let (name, aliases) = arch.names();
                name == wanted || aliases.contains(&wanted.as_str())
            })
            .ok_or_else(|| {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.names().0).collect();
                format!("unknown architecture `{wanted}` (use {})", names.join(", "))
            })
    }
}

impl ArchConfig {
    /// The official defaults of `arch`, overridden by `settings` (official argument names).
    pub fn from_settings(arch: Arch, settings: &[(String, String)]) -> Result<Self, String> {
        let mut config = arch.defaults();
        for (key, value) in settings {
            if !config.set(key, value)? {
                return Err(format!(
                    "`{key}` is not a setting of {}; valid settings: {}",
                    arch.names().0,
                    arch.settings()
                ));
            }
        }
        config.validate()?;
        Ok(config)
    }
}

impl AnyNetwork {
    /// Make the network's pyramid attention (or the global non-local block that replaces it
    /// in PANet-B's ablation twin) attend within windows of `t x t` input pixels (`Some(t)`;
    /// on a map at half resolution, windows of `t/2`) or over the whole map (`None`, the
    /// official computation); see [`crate::blocks::window`]. `false` for networks without
    /// either.
    pub fn set_attention_window(&mut self, window: Option<usize>) -> bool {
        let stride = self.attention_stride().max(1);
        let window = window.map(|t| (t / stride).max(1));
        let attentions = self.attentions_mut();
        let mut found = !attentions.is_empty();
        for attention in attentions {
            attention.window = window;
        }
        found |= self.set_non_local_window(window);
        found
    }

    /// Whether [`AnyNetwork::set_attention_window`] has an attention to set.
    pub fn supports_attention_window(&self) -> bool {
        !self.attentions().is_empty() || self.has_non_local_window()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Interp;

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn official_arguments_map_onto_configs() {
        let c = ArchConfig::from_settings(
            Arch::PyramidAttention,
            &settings(&[
                ("channel", "16"),
                ("level", "3"),
                ("average", "False"),
                ("interp", "modern"),
            ]),
        )
        .unwrap();
        let ArchConfig::PyramidAttention(c) = c else {
            panic!()
        };
        assert_eq!(c.channel, 16);
        assert_eq!(c.scales, vec![1.0, 0.9, 0.8]);
        assert!(!c.average);
        assert_eq!(c.interp, Interp::Modern);
    }

    #[test]
    fn unknown_and_bad_values_are_named() {
        let e = ArchConfig::from_settings(Arch::Edsr, &settings(&[("channel", "3")])).unwrap_err();
        assert!(e.contains("`channel` is not a setting of edsr"), "{e}");
        let e = ArchConfig::from_settings(Arch::PaEdsr, &settings(&[("scale", "5")])).unwrap_err();
        assert!(e.contains("scale must be 3 or a power of two"), "{e}");
        let e = ArchConfig::from_settings(Arch::PaNet, &settings(&[("ksize", "x")])).unwrap_err();
        assert!(e.contains("`ksize=x`"), "{e}");
    }
}
