//! Floating-point operations of a forward pass, counted from the layers' shapes: 2 per
//! multiply-add of every convolution and of the attention matrix products (the
//! convention of the papers' cost tables). Element-wise work (activations, softmax,
//! normalisation, bicubic resizing) is not counted; it is a few percent at most.

use burn::nn::conv::Conv2d;

use super::AnyNetwork;
use crate::blocks::upsampler::UpsamplerLayer;
use crate::blocks::{
    Apnb, DilatedResidual, NonLocal, NonLocalLayer, PyramidAttention, PyramidNonLocal,
};
use crate::ops::bicubic::scaled_len;

/// A convolution producing an `h x w` output.
pub fn conv_flops(conv: &Conv2d, h: usize, w: usize) -> u64 {
    let [out, input, kh, kw] = conv.weight.dims();
    2 * (out * input * kh * kw) as u64 * (h * w) as u64
}

/// A matrix product `[m, k] x [k, n]`.
fn matmul_flops(m: usize, k: usize, n: usize) -> u64 {
    2 * m as u64 * k as u64 * n as u64
}

pub fn non_local_flops(block: &NonLocal, h: usize, w: usize) -> u64 {
    let n = h * w;
    let [inter, _, _, _] = block.theta.weight.dims();
    conv_flops(&block.theta, h, w)
        + conv_flops(&block.phi, h, w)
        + conv_flops(&block.g, h, w)
        + matmul_flops(n, inter, n) // scores
        + matmul_flops(n, n, inter) // aggregation
        + conv_flops(&block.w, h, w)
}

pub fn pyramid_non_local_flops(block: &PyramidNonLocal, h: usize, w: usize) -> u64 {
    let n = h * w;
    let [m, _, _, _] = block.query.weight.dims();
    let mut total = conv_flops(&block.query, h, w) + conv_flops(&block.fuse, h, w);
    for (i, (key, value)) in block.keys.iter().zip(&block.values).enumerate() {
        let stride = 1 << (i + 1);
        let (hs, ws) = (h.div_ceil(stride), w.div_ceil(stride));
        let [nv, _, _, _] = value.weight.dims();
        total += conv_flops(key, hs, ws)
            + conv_flops(value, hs, ws)
            + matmul_flops(n, m, hs * ws)
            + matmul_flops(n, hs * ws, nv);
    }
    total
}

pub fn apnb_flops(block: &Apnb, h: usize, w: usize) -> u64 {
    let n = h * w;
    let pooled: usize = block.pool_sizes.iter().map(|s| s * s).sum();
    let [inter, _, _, _] = block.theta.weight.dims();
    conv_flops(&block.theta, h, w)
        + conv_flops(&block.phi, h, w)
        + conv_flops(&block.g, h, w)
        + matmul_flops(n, inter, pooled)
        + matmul_flops(n, pooled, inter)
        + conv_flops(&block.w, h, w)
}

pub fn non_local_layer_flops(layer: &NonLocalLayer, h: usize, w: usize) -> u64 {
    match layer {
        NonLocalLayer::Pnb(b) => pyramid_non_local_flops(b, h, w),
        NonLocalLayer::Nlb(b) => non_local_flops(b, h, w),
        NonLocalLayer::Apnb(b) => apnb_flops(b, h, w),
    }
}

pub fn dilated_residual_flops(block: &DilatedResidual, h: usize, w: usize) -> u64 {
    block
        .units
        .iter()
        .map(|u| conv_flops(&u.conv1, h, w) + conv_flops(&u.conv2, h, w))
        .sum()
}

/// Pyramid attention: embeddings at every level, matching of every full-resolution query
/// patch with every key patch of every level, and pasting of the value patches.
pub fn pyramid_attention_flops(block: &PyramidAttention, h: usize, w: usize) -> u64 {
    let n = h * w;
    let k2 = block.ksize * block.ksize;
    let [reduced, channels, _, _] = block.conv_match_L_base.0.weight.dims();
    let mut total = conv_flops(&block.conv_match_L_base.0, h, w);
    let mut keys = 0;
    for &s in &block.scales {
        let (hs, ws) = (scaled_len(h, s), scaled_len(w, s));
        total +=
            conv_flops(&block.conv_match.0, hs, ws) + conv_flops(&block.conv_assembly.0, hs, ws);
        keys += hs.div_ceil(block.stride) * ws.div_ceil(block.stride);
    }
    total + matmul_flops(n, reduced * k2, keys) + matmul_flops(n, keys, channels * k2)
}

/// Upsampler layers starting at `h x w`; returns the FLOPs and the final size.
pub fn upsampler_flops(layers: &[UpsamplerLayer], h: usize, w: usize) -> (u64, usize, usize) {
    let (mut h, mut w, mut total) = (h, w, 0);
    for layer in layers {
        match layer {
            UpsamplerLayer::Conv(c) => total += conv_flops(c, h, w),
            UpsamplerLayer::PixelShuffle(p) => {
                h *= p.upscale_factor;
                w *= p.upscale_factor;
            }
        }
    }
    (total, h, w)
}

/// FLOPs of one forward of `network` on a `1 x C x h x w` input (each architecture's file
/// counts its own, from the block costs here).
pub fn forward_flops(network: &AnyNetwork, h: usize, w: usize) -> u64 {
    network.flops(h, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use crate::blocks::{NonLocalConfig, PyramidNonLocalConfig};

    #[test]
    fn non_local_costs_follow_the_formulas() {
        let device = backend::cpu();
        // NLB on 64 channels (32 inside), 96x96: 4 1x1 convs of 64x32 and two N x N x 32
        // products.
        let n = 96u64 * 96;
        let nlb = NonLocalConfig::new(64).init(&device);
        assert_eq!(
            non_local_flops(&nlb, 96, 96),
            4 * 2 * 64 * 32 * n + 2 * 2 * n * n * 32
        );
        // PNB m = 64, n = 32, S = 3: query and fuse at full size, kernel = stride convs cost
        // 2 * C * out * N each, and products with N / 4^s keys.
        let pnb = PyramidNonLocalConfig::new(64).init(&device);
        let mut expected = 2 * 64 * 64 * n + 2 * 96 * 64 * n;
        for s in 1..=3u32 {
            let keys = n / 4u64.pow(s);
            expected += 2 * 64 * 64 * n + 2 * 64 * 32 * n + 2 * n * keys * 64 + 2 * n * keys * 32;
        }
        assert_eq!(pyramid_non_local_flops(&pnb, 96, 96), expected);
        assert!(pyramid_non_local_flops(&pnb, 96, 96) < non_local_flops(&nlb, 96, 96));
    }
}
