//! The residual trunk shared by PANet, PA-EDSR and EDSR: an `nn.Sequential` of res-blocks,
//! optionally a pyramid attention in the middle, and a final 3x3 convolution.

use crate::ops::fused_conv::conv2d;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::arch::{count, setting, shape};
use crate::blocks::mean_shift::RGB_MEAN;
use crate::blocks::{default_conv, Activation, PyramidAttention, ResBlock};
use crate::weights::StateDict;

/// One entry of the official `body` Sequential (its index is the key prefix `body.{i}`).
// Layers live once per model and burn's Module derive takes variants by value: boxing the
// large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum BodyLayer {
    ResBlock(ResBlock),
    PyramidAttention(PyramidAttention),
    Conv(Conv2d),
}

/// `[n/2 res-blocks, attention?, n/2 res-blocks, conv]`, as the official constructors build it.
/// `activation` is cloned into every block (clones of one `Prelu` share one parameter).
pub fn residual_body(
    n_resblocks: usize,
    n_feats: usize,
    activation: &Activation,
    res_scale: f64,
    attention: Option<PyramidAttention>,
    device: &Device,
) -> Vec<BodyLayer> {
    let block = || {
        BodyLayer::ResBlock(ResBlock::new(
            n_feats,
            3,
            activation.clone(),
            res_scale,
            device,
        ))
    };
    let half = n_resblocks / 2;
    let mut body: Vec<BodyLayer> = (0..half).map(|_| block()).collect();
    if let Some(attention) = attention {
        body.push(BodyLayer::PyramidAttention(attention));
    }
    body.extend((half..n_resblocks).map(|_| block()));
    body.push(BodyLayer::Conv(default_conv(n_feats, n_feats, 3, device)));
    body
}

/// Run the body in order.
pub fn run_body(body: &[BodyLayer], mut x: Tensor<4>) -> Tensor<4> {
    for layer in body {
        x = match layer {
            BodyLayer::ResBlock(block) => block.forward(x),
            BodyLayer::PyramidAttention(attention) => attention.forward(x),
            BodyLayer::Conv(conv) => conv2d(conv, x),
        };
    }
    x
}

/// FLOPs of the body on `h x w`.
pub fn body_flops(body: &[BodyLayer], h: usize, w: usize) -> u64 {
    use super::cost::{conv_flops, pyramid_attention_flops};
    body.iter()
        .map(|layer| match layer {
            BodyLayer::ResBlock(b) => conv_flops(&b.body.0, h, w) + conv_flops(&b.body.2, h, w),
            BodyLayer::PyramidAttention(a) => pyramid_attention_flops(a, h, w),
            BodyLayer::Conv(c) => conv_flops(c, h, w),
        })
        .sum()
}

/// FLOPs of an SR trunk (EDSR, PA-EDSR) on an `h x w` input: head, body, upsampler, last
/// conv at the output size.
pub fn sr_trunk_flops(
    head: &Conv2d,
    body: &[BodyLayer],
    tail: &(crate::blocks::Upsampler, Conv2d),
    h: usize,
    w: usize,
) -> u64 {
    use super::cost::{conv_flops, upsampler_flops};
    let (up, hh, ww) = upsampler_flops(&tail.0, h, w);
    conv_flops(head, h, w) + body_flops(body, h, w) + up + conv_flops(&tail.1, hh, ww)
}

/// The body's pyramid attention blocks.
pub fn body_attentions(body: &[BodyLayer]) -> Vec<&PyramidAttention> {
    body.iter()
        .filter_map(|layer| match layer {
            BodyLayer::PyramidAttention(attention) => Some(attention),
            _ => None,
        })
        .collect()
}

/// The same, to change.
pub fn body_attentions_mut(body: &mut [BodyLayer]) -> Vec<&mut PyramidAttention> {
    body.iter_mut()
        .filter_map(|layer| match layer {
            BodyLayer::PyramidAttention(attention) => Some(attention),
            _ => None,
        })
        .collect()
}

/// The features that enter the body's pyramid attention (`x` entering the body), and the
/// block.
pub fn body_attention_input(
    body: &[BodyLayer],
    mut x: Tensor<4>,
) -> Option<(Tensor<4>, &PyramidAttention)> {
    for layer in body {
        match layer {
            BodyLayer::PyramidAttention(attention) => return Some((x, attention)),
            BodyLayer::ResBlock(block) => x = block.forward(x),
            BodyLayer::Conv(conv) => x = conv2d(conv, x),
        }
    }
    None
}

/// The smallest input side the body's attention accepts (1 without attention).
pub fn body_min_input_side(body: &[BodyLayer]) -> usize {
    body.iter()
        .map(|layer| match layer {
            BodyLayer::PyramidAttention(attention) => attention.min_input_side(),
            _ => 1,
        })
        .max()
        .unwrap_or(1)
}

/// What the keys of a residual-trunk checkpoint (PANet, PA-EDSR, EDSR: `head.0`, `body.*`,
/// `tail.*`) say, `None` without `head.0.weight`.
pub struct TrunkKeys {
    /// `n_resblocks`, `n_feats`, `n_colors`.
    pub settings: Vec<(String, String)>,
    /// `rgb_range`, when the mean shift tells it.
    pub rgb_range: Option<u32>,
    pub n_feats: usize,
    /// The attention's `reduction`, when the body has one.
    pub reduction: Option<usize>,
    /// The SR factor, when `tail.0` is an upsampler.
    pub scale: Option<usize>,
}

impl TrunkKeys {
    pub fn read(dict: &StateDict) -> Option<TrunkKeys> {
        let head = shape(dict, "head.0.weight")?;
        let (n_feats, n_colors) = (head[0], head[1]);
        let n_resblocks = count(dict, |k| {
            k.starts_with("body.") && k.ends_with(".body.0.weight")
        });
        let reduction = dict
            .names()
            .find(|k| k.starts_with("body.") && k.ends_with(".conv_match.0.weight"))
            .and_then(|k| shape(dict, k))
            .map(|m| n_feats / m[0].max(1));
        let scale = shape(dict, "tail.0.0.weight").map(|up| {
            let convs = count(dict, |k| k.starts_with("tail.0.") && k.ends_with(".weight"));
            if up[0] == 9 * n_feats {
                3
            } else {
                1 << convs
            }
        });
        let settings = vec![
            setting("n_resblocks", n_resblocks),
            setting("n_feats", n_feats),
            setting("n_colors", n_colors),
        ];
        Some(TrunkKeys {
            settings,
            rgb_range: rgb_range(dict),
            n_feats,
            reduction,
            scale,
        })
    }

    /// The SR networks' settings: the scale and the official `res_scale` (0.1 with 256
    /// features, else 1).
    pub fn sr_settings(self) -> Vec<(String, String)> {
        let mut settings = self.settings;
        settings.push(setting("scale", self.scale.unwrap_or(1)));
        settings.push(setting(
            "res_scale",
            if self.n_feats == 256 { "0.1" } else { "1" },
        ));
        if let Some(r) = self.reduction {
            settings.push(setting("reduction", r));
        }
        settings.extend(self.rgb_range.map(|r| setting("rgb_range", r)));
        settings
    }
}

/// `rgb_range` from `sub_mean.bias` (`-rgb_range * RGB_MEAN`), when present and consistent
/// over the three channels; rounded to an integer, as ranges are (1 or 255 in practice). A
/// model trained on [0, 255] and one trained on [0, 1] have the same keys and shapes but must
/// be fed differently.
fn rgb_range(dict: &StateDict) -> Option<u32> {
    let bias = dict.get("sub_mean.bias")?.to_f32();
    let ranges: Vec<f32> = bias.iter().zip(RGB_MEAN).map(|(b, m)| -b / m).collect();
    let range = ranges.first()?.round();
    let consistent =
        bias.len() == 3 && range >= 1.0 && ranges.iter().all(|r| (r - range).abs() <= 1e-3 * range);
    consistent.then_some(range as u32)
}
