//! How much memory a whole-image forward or a training step needs, and how much the machine
//! has.
//!
//! The pyramid attention dominates. On the CPU its streaming kernel holds, per worker thread,
//! the scores of one query tile over all `L` blocks (at most `STREAM_TILE_BYTES`) and a few
//! level-sized buffers, plus the embedded maps of every level. Elsewhere (GPU) the chunked
//! formulation holds a few `SCORE_CHUNK_BYTES` score arrays of one chunk, plus the embedded
//! maps and their zero-bordered canvases (no block columns).

use pyra_core::blocks::pyramid_attention::{SCORE_CHUNK_BYTES, STREAM_TILE_BYTES};
use pyra_core::networks::ArchConfig;
use pyra_core::ops::bicubic::scaled_len;
use pyra_core::ops::streaming_attention;

/// Feature channels of the trunk, and the pyramid attention's scales if it has one.
fn trunk(config: &ArchConfig) -> (u64, Option<&[f64]>) {
    let shape = config.memory_shape();
    (shape.features, shape.attention_scales)
}

/// Pixels of each pyramid level of an `height x width` map.
fn level_pixels(scales: &[f64], height: usize, width: usize) -> Vec<u64> {
    scales
        .iter()
        .map(|&s| (scaled_len(height, s) * scaled_len(width, s)) as u64)
        .collect()
}

/// Scratch of the CPU streaming kernel: every worker's tile buffers (forward and backward
/// alike: the backward recomputes one tile's weights at a time).
/// The kernel also holds each level's keys and values on a grid padded by one block.
fn streaming_scratch(scales: &[f64], height: usize, width: usize, features: u64) -> u64 {
    let dims: Vec<(usize, usize)> = scales
        .iter()
        .map(|&s| (scaled_len(height, s), scaled_len(width, s)))
        .collect();
    let blocks: usize = dims.iter().map(|(h, w)| h * w).sum();
    let padded: Vec<usize> = dims.iter().map(|(h, w)| (h + 2) * (w + 2)).collect();
    let padded_blocks: usize = padded.iter().sum();
    let largest = padded.iter().copied().max().unwrap_or(0);
    let worker = streaming_attention::worker_bytes(
        blocks,
        padded_blocks,
        largest,
        features as usize,
        3,
        STREAM_TILE_BYTES,
    ) as u64;
    streaming_attention::workers() as u64 * worker + padded_blocks as u64 * features * 2 * 4
}

/// Estimated peak bytes of one forward of `config` on an `height x width` input.
pub fn estimate_forward_bytes(config: &ArchConfig, height: usize, width: usize) -> u64 {
    let pixels = (height * width) as u64;
    let (features, scales) = trunk(config);
    let scale = config.scale() as u64;
    // Feature maps at input size (a few alive at once) and the upsampler's at output size.
    let activations = 8 * features * pixels * 4 + 4 * features * pixels * scale * scale * 4;
    let attention = scales.map_or(0, |scales| {
        let levels = level_pixels(scales, height, width);
        let blocks: u64 = levels.iter().sum();
        if !pyra_core::backend::default_is_cpu() {
            // Five score arrays of one chunk; the maps of queries (C/2), keys (C/2), values
            // and output (C), once as tensors and once on canvases.
            5 * (SCORE_CHUNK_BYTES as u64).min(pixels * blocks * 4)
                + canvas_maps(pixels, blocks, features)
        } else {
            // Workers' scratch; the level maps (keys and values) as tensors and as slices.
            streaming_scratch(scales, height, width, features) + blocks * features * 2 * 4 * 2
        }
    });
    activations + attention + non_local_bytes(config, height, width) + (64 << 20)
}

/// Estimated peak bytes of one training step of `config` (with `parameters` learned values)
/// on `batch` patches of `height x width` (network input size).
///
/// Autodiff keeps every layer's output until the backward pass: about three maps per 3x3
/// convolution (its output, the activation, the residual sum), and a convolution of `F` to
/// `F` channels has `9 F^2` weights, so the parameter count says how many there are. Pyramid
/// attention on the CPU saves only its input maps (the fused kernel recomputes scores per
/// tile); elsewhere autodiff keeps the whole score map, its softmax and their gradient. Adam
/// holds weights, gradients and two moments. Errs on the high side: PANet-S at 16 x 48x48 is
/// estimated at 844 MiB, its measured peak RSS is 673 MiB (`pyra bench-speed`, 2 threads);
/// PANet-80 at 4 x 48x48, 1364 MiB against 1120 MiB (`pyra train`, CBSD432 loaded).
pub fn estimate_training_step_bytes(
    config: &ArchConfig,
    parameters: u64,
    batch: usize,
    height: usize,
    width: usize,
) -> u64 {
    let batch = batch as u64;
    let pixels = (height * width) as u64;
    let (features, scales) = trunk(config);
    let scale = config.scale() as u64;
    let convs = parameters / (9 * features * features).max(1);
    let saved_maps = 3 * convs + 10;
    let per_sample = saved_maps * features * pixels * 4 + 8 * features * pixels * scale * scale * 4;
    let attention = scales.map_or(0, |scales| {
        let levels = level_pixels(scales, height, width);
        let blocks: u64 = levels.iter().sum();
        if pyra_core::backend::default_is_cpu() {
            // Level maps, keys and values, with their gradients, per sample; shared scratch.
            streaming_scratch(scales, height, width, features) + batch * blocks * features * 4 * 4
        } else {
            // The recomputed chunks: seven score arrays of one chunk in the backward, plus the
            // maps on canvases and their gradients, per sample.
            let chunk = (SCORE_CHUNK_BYTES as u64).min(batch * pixels * blocks * 4);
            7 * chunk + 2 * batch * canvas_maps(pixels, blocks, features)
        }
    });
    let non_local = 2 * batch * non_local_bytes(config, height, width);
    batch * per_sample + attention + non_local + 5 * parameters * 4 + (64 << 20)
}

/// The chunked attention's maps of one sample: queries and output on the `pixels` grid (C/2 and
/// C channels), keys and values on the levels' (C/2 and C), each as a tensor and on its
/// zero-bordered canvas (about 5/4 of the maps with the paper's scales; 3/2 is taken).
fn canvas_maps(pixels: u64, blocks: u64, features: u64) -> u64 {
    let channels = features + features / 2;
    (pixels + blocks) * channels * 4 * 5 / 2
}

/// The largest batch (up to `batch`) whose training step fits `budget`, if even one does.
pub fn largest_training_batch(
    config: &ArchConfig,
    parameters: u64,
    batch: usize,
    height: usize,
    width: usize,
    budget: u64,
) -> Option<usize> {
    (1..=batch)
        .rev()
        .find(|&b| estimate_training_step_bytes(config, parameters, b, height, width) <= budget)
}

/// PNEN's non-local score maps (one group's alive at a time: map and softmax, 2.2 maps):
/// `[HW, keys]` with keys = HW/4 + HW/16 + ... for the PNB, HW for the NLB, Σ s² for APNB.
fn non_local_bytes(config: &ArchConfig, height: usize, width: usize) -> u64 {
    use pyra_core::blocks::NonLocalKind;
    let Some((kind, scales)) = config.memory_shape().non_local else {
        return 0;
    };
    let pixels = (height * width) as u64;
    let keys: u64 = match kind {
        NonLocalKind::Pnb => (1..=scales)
            .map(|s| (height.div_ceil(1 << s) * width.div_ceil(1 << s)) as u64)
            .sum(),
        NonLocalKind::Nlb => pixels,
        NonLocalKind::Apnb => 1 + 9 + 36 + 64,
    };
    pixels * keys * 4 * 22 / 10
}

/// Memory available to this process now (Linux `MemAvailable`), in bytes.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The default memory budget: 70% of what is available (4 GiB if unknown).
pub fn default_budget() -> u64 {
    available_bytes().map_or(4 << 30, |a| a / 10 * 7)
}

/// The largest square tile (multiple of 8, 32..=512 pixels) whose forward fits `budget`.
pub fn largest_tile(config: &ArchConfig, budget: u64) -> Option<usize> {
    (4..=64)
        .rev()
        .map(|k| k * 8)
        .find(|&t| estimate_forward_bytes(config, t, t) <= budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyra_core::blocks::PyramidAttentionConfig;
    use pyra_core::networks::PaNetConfig;

    #[test]
    fn training_estimate_grows_with_the_batch_and_finds_one_that_fits() {
        let config = ArchConfig::PaNet(PaNetConfig::small());
        let one = estimate_training_step_bytes(&config, 600_000, 1, 48, 48);
        let sixteen = estimate_training_step_bytes(&config, 600_000, 16, 48, 48);
        assert!(sixteen > 8 * (one - (64 << 20)), "{one} {sixteen}");
        let budget = (one + sixteen) / 2;
        let fits = largest_training_batch(&config, 600_000, 16, 48, 48, budget).unwrap();
        assert!((1..16).contains(&fits), "{fits}");
        assert!(estimate_training_step_bytes(&config, 600_000, fits, 48, 48) <= budget);
        assert!(estimate_training_step_bytes(&config, 600_000, fits + 1, 48, 48) > budget);
        assert_eq!(
            largest_training_batch(&config, 600_000, 16, 48, 48, one - 1),
            None
        );
    }

    #[test]
    fn attention_estimate_is_bounded_by_the_streaming_tiles() {
        let config = ArchConfig::PyramidAttention(PyramidAttentionConfig::new());
        let mib = estimate_forward_bytes(&config, 96, 96) as f64 / (1u64 << 20) as f64;
        // Streaming on the CPU: far below the 1.1 GiB whole score map, above the worker
        // scratch of one thread (measured peak growth on [1,64,96,96]: 197 MiB, 2 threads).
        assert!((100.0..1024.0).contains(&mib), "{mib}");
    }
}
