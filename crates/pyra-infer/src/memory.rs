//! How much memory a whole-image forward needs, and how much the machine has.
//!
//! The pyramid attention dominates. On the CPU its streaming kernel holds, per worker thread,
//! the scores of one query tile over all `L` blocks (at most `STREAM_TILE_BYTES`) and a few
//! level-sized buffers, plus the embedded maps of every level. Elsewhere (GPU) the chunked
//! forward holds one `SCORE_CHUNK_BYTES` chunk of scores and its softmax, plus the block columns
//! of keys and values (`9 x` the maps).

use pyra_core::blocks::pyramid_attention::{SCORE_CHUNK_BYTES, STREAM_TILE_BYTES};
use pyra_core::networks::ArchConfig;
use pyra_core::ops::bicubic::scaled_len;
use pyra_core::ops::streaming_attention;

/// Estimated peak bytes of one forward of `config` on an `height x width` input.
pub fn estimate_forward_bytes(config: &ArchConfig, height: usize, width: usize) -> u64 {
    let pixels = (height * width) as u64;
    let (features, scales): (u64, Option<&[f64]>) = match config {
        ArchConfig::PyramidAttention(c) => (c.channel as u64, Some(&c.scales)),
        ArchConfig::PaNet(c) => (
            c.n_feats as u64,
            c.with_attention.then_some(c.attention.scales.as_slice()),
        ),
        ArchConfig::PaEdsr(c) => (c.n_feats as u64, Some(&c.attention.scales)),
        ArchConfig::Edsr(c) => (c.n_feats as u64, None),
        ArchConfig::Dncnn(c) => (c.n_channels as u64, None),
        ArchConfig::Pnen(c) => (c.n_feats as u64, None),
        // Dense blocks keep G0 + C*G channels alive; MemNet's gates R + M blocks.
        ArchConfig::Rdn(c) => ((c.g0 + c.n_layers * c.growth) as u64, None),
        ArchConfig::MemNet(c) => (
            ((c.n_resblocks + c.n_memblocks) * c.n_feats) as u64 / 4,
            None,
        ),
    };
    let scale = config.scale() as u64;
    // Feature maps at input size (a few alive at once) and the upsampler's at output size.
    let activations = 8 * features * pixels * 4 + 4 * features * pixels * scale * scale * 4;
    let attention = scales.map_or(0, |scales| {
        let levels: Vec<u64> = scales
            .iter()
            .map(|&s| (scaled_len(height, s) * scaled_len(width, s)) as u64)
            .collect();
        let blocks: u64 = levels.iter().sum();
        let largest = levels.iter().copied().max().unwrap_or(0);
        if !pyra_core::backend::default_is_cpu() {
            // One chunk of scores and its softmax, plus the block columns of keys and values.
            (SCORE_CHUNK_BYTES as u64).min(pixels * blocks * 4) * 22 / 10
                + blocks * features * 9 * 4 * 2
        } else {
            let worker = streaming_attention::worker_bytes(
                blocks as usize,
                largest as usize,
                features as usize,
                3,
                STREAM_TILE_BYTES,
            ) as u64;
            // Workers' scratch; the level maps (keys and values) as tensors and as slices.
            streaming_attention::workers() as u64 * worker + blocks * features * 2 * 4 * 2
        }
    });
    activations + attention + non_local_bytes(config, height, width) + (64 << 20)
}

/// PNEN's non-local score maps (one group's alive at a time: map and softmax, 2.2 maps):
/// `[HW, keys]` with keys = HW/4 + HW/16 + ... for the PNB, HW for the NLB, Σ s² for APNB.
fn non_local_bytes(config: &ArchConfig, height: usize, width: usize) -> u64 {
    use pyra_core::blocks::NonLocalKind;
    let (kind, scales) = match config {
        ArchConfig::Pnen(c) => (c.non_local, c.scales),
        ArchConfig::Rdn(c) => match c.non_local {
            Some(kind) => (kind, c.scales),
            None => return 0,
        },
        ArchConfig::MemNet(c) => match c.non_local {
            Some(kind) => (kind, c.scales),
            None => return 0,
        },
        _ => return 0,
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

    #[test]
    fn attention_estimate_is_bounded_by_the_streaming_tiles() {
        let config = ArchConfig::PyramidAttention(PyramidAttentionConfig::new());
        let mib = estimate_forward_bytes(&config, 96, 96) as f64 / (1u64 << 20) as f64;
        // Streaming on the CPU: far below the 1.1 GiB whole score map, above the worker
        // scratch of one thread (measured peak growth on [1,64,96,96]: 197 MiB, 2 threads).
        assert!((100.0..1024.0).contains(&mib), "{mib}");
    }
}
