//! How an image goes through a network when the user did not say: by estimated time as well
//! as by memory.
//!
//! Global attention is quadratic in the pixels it sees: a whole-image pass that fits in memory
//! (the streaming kernel nearly always fits) can still take days on a photo. The planner
//! models the time of one forward on a `t x t` input as
//!
//! ```text
//!   T(t) = F_lin(t) / R_lin + F_quad(t) / R_quad
//! ```
//!
//! with `F = F_lin + F_quad` the FLOPs `networks::cost` counts, split into the part linear in
//! the pixels (convolutions, embeddings) and the part quadratic in them (attention's matching
//! and pasting), and `R_lin`, `R_quad` the rates this machine reaches, measured by timing the
//! network itself on one or two small inputs ([`Rates::measure`]). It then compares one whole
//! pass with every tiling (square tiles of 16-512 pixels, multiples of 8, overlap
//! [`tile_overlap`], tiles batched as memory allows) whose memory fits the budget, and takes
//! the fastest; the whole pass is kept when it is within 25% of that, since it is the exact
//! computation. Batched tiles run faster than the single-tile rate measured, so the ETA errs
//! on the long side.

use std::time::Instant;

use pyra_core::burn::tensor::{Device, Tensor};
use pyra_core::networks::cost::forward_flops;
use pyra_core::networks::{AnyNetwork, ArchConfig};

use crate::memory::estimate_forward_bytes;
use crate::tile::{tile_starts, TileOptions};

/// FLOPs of one forward on `t x t`, split into the part linear and the part quadratic in the
/// pixels `p = t²`, from the counts at two sizes (`F(p) = a p + b p²` solved exactly).
pub fn split_flops(network: &AnyNetwork, t: usize) -> (f64, f64) {
    let (t1, t2) = (64usize, 128usize);
    let (p1, p2) = ((t1 * t1) as f64, (t2 * t2) as f64);
    let (f1, f2) = (
        forward_flops(network, t1, t1) as f64,
        forward_flops(network, t2, t2) as f64,
    );
    let b = ((f2 / p2 - f1 / p1) / (p2 - p1)).max(0.0);
    let p = (t * t) as f64;
    let total = forward_flops(network, t, t) as f64;
    let quadratic = (b * p * p).min(total);
    (total - quadratic, quadratic)
}

/// The rates (FLOP/s) this machine reaches on a network's linear and quadratic work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub linear: f64,
    pub quadratic: f64,
}

impl Rates {
    /// Time the network on `channels x t x t` inputs: after one untimed run, one run at 64
    /// pixels (plus one at 96 when it has quadratic work, so both rates are measured). A
    /// second or two on a CPU.
    pub fn measure(
        network: &AnyNetwork,
        channels: usize,
        min_side: usize,
        device: &Device,
    ) -> Rates {
        let time = |t: usize| -> f64 {
            let x = Tensor::<4>::zeros([1, channels, t, t], device);
            let started = Instant::now();
            let _ = network.forward(x).into_data();
            started.elapsed().as_secs_f64().max(1e-6)
        };
        let small = 64.max(min_side);
        let large = 96.max(small + 16);
        time(small);
        let (l1, q1) = split_flops(network, small);
        let t1 = time(small);
        if q1 <= 0.01 * (l1 + q1) {
            let rate = (l1 + q1) / t1;
            return Rates {
                linear: rate,
                quadratic: rate,
            };
        }
        let (l2, q2) = split_flops(network, large);
        let t2 = time(large);
        // t_i = l_i x + q_i y with x = 1/R_lin, y = 1/R_quad.
        let det = l1 * q2 - l2 * q1;
        let x = (t1 * q2 - t2 * q1) / det;
        let y = (l1 * t2 - l2 * t1) / det;
        let overall = (l2 + q2) / t2;
        if det.abs() > 0.0 && x > 0.0 && y > 0.0 {
            Rates {
                linear: 1.0 / x,
                quadratic: 1.0 / y,
            }
        } else {
            // Too noisy to separate: one rate for both.
            Rates {
                linear: overall,
                quadratic: overall,
            }
        }
    }

    /// Estimated seconds of one forward on `t x t`.
    pub fn seconds(&self, network: &AnyNetwork, t: usize) -> f64 {
        let (linear, quadratic) = split_flops(network, t);
        linear / self.linear + quadratic / self.quadratic
    }

    /// Estimated seconds of one forward on `h x w` (whole image).
    pub fn seconds_whole(&self, network: &AnyNetwork, h: usize, w: usize) -> f64 {
        // Attention's quadratic term in pixels: scale the square estimate by (hw / t²)².
        let t = 64usize;
        let (l, q) = split_flops(network, t);
        let ratio = (h * w) as f64 / (t * t) as f64;
        l * ratio / self.linear + q * ratio * ratio / self.quadratic
    }
}

/// What the planner chose, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// `None`: one whole-image pass.
    pub tiles: Option<TileOptions>,
    /// Forwards it takes.
    pub passes: usize,
    /// Estimated seconds.
    pub seconds: f64,
    /// Estimated seconds of a whole-image pass (whether or not it fits).
    pub whole_seconds: f64,
    /// Estimated peak bytes of one forward.
    pub bytes: u64,
}

/// The overlap of tiles of side `tile` when `requested` is asked for: at most an eighth of
/// the tile, at least 4 pixels (a quarter would make every tiling cost 4x its pixels).
pub fn tile_overlap(tile: usize, requested: usize) -> usize {
    requested
        .min((tile / 8).max(4))
        .min(tile.saturating_sub(1) / 2)
}

/// Tiles per forward: as many as fit `budget` together (at most 16): small tiles then spend
/// less on per-call overhead.
pub fn batch_for(config: &ArchConfig, tile: usize, budget: u64) -> usize {
    let one = estimate_forward_bytes(config, tile, tile).max(1);
    (budget / one).clamp(1, 16) as usize
}

/// Tiles of side `tile` (with `overlap`) an `h x w` image needs.
pub fn tile_count(h: usize, w: usize, options: TileOptions) -> usize {
    let th = options.tile.min(h);
    let tw = options.tile.min(w);
    tile_starts(h, th, options.overlap).len() * tile_starts(w, tw, options.overlap).len()
}

/// The fastest way through the network for an `h x w` image within `budget` bytes: a whole
/// pass, or tiles of 16..=512 pixels (multiples of 8, at least `min_side`) with an overlap of
/// [`tile_overlap`]. `None` when not even the smallest tile fits.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    config: &ArchConfig,
    network: &AnyNetwork,
    rates: &Rates,
    (h, w): (usize, usize),
    budget: u64,
    overlap: usize,
    min_side: usize,
) -> Option<Plan> {
    let whole_bytes = estimate_forward_bytes(config, h, w);
    let whole_seconds = rates.seconds_whole(network, h, w);
    let whole = Plan {
        tiles: None,
        passes: 1,
        seconds: whole_seconds,
        whole_seconds,
        bytes: whole_bytes,
    };
    let best_tiles = (2..=64)
        .map(|k| k * 8)
        .filter(|&t| t >= min_side && t < h.max(w))
        .filter_map(|t| {
            let bytes = estimate_forward_bytes(config, t, t);
            if bytes > budget {
                return None;
            }
            let options = TileOptions {
                tile: t,
                overlap: tile_overlap(t, overlap),
                batch: batch_for(config, t, budget),
            };
            let passes = tile_count(h, w, options);
            let side = (t.min(h), t.min(w));
            let seconds = passes as f64 * rates.seconds(network, side.0.max(side.1));
            Some(Plan {
                tiles: Some(options),
                passes,
                seconds,
                whole_seconds,
                bytes,
            })
        })
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
    match best_tiles {
        Some(tiles) if whole_bytes > budget || whole_seconds > 1.25 * tiles.seconds => Some(tiles),
        _ if whole_bytes <= budget => Some(whole),
        other => other,
    }
}

/// `1h 02m`, `3m 05s`, `12.3 s`.
pub fn format_seconds(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "forever".into();
    }
    let s = seconds.round() as u64;
    match s {
        _ if seconds < 60.0 => format!("{seconds:.1} s"),
        _ if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ if s < 86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{:.1} days", seconds / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyra_core::backend;
    use pyra_core::networks::PaNetConfig;

    #[test]
    fn attention_flops_split_into_linear_and_quadratic() {
        let device = backend::cpu();
        let with = ArchConfig::PaNet(PaNetConfig::small()).init(&device);
        let (l, q) = split_flops(&with, 96);
        assert!(q > 0.0 && l > 0.0);
        // Doubling the side: the linear part about x4, the quadratic part about x16 (the
        // rounded sizes of the pyramid levels make neither exact).
        let (l2, q2) = split_flops(&with, 192);
        assert!((l2 / l / 4.0 - 1.0).abs() < 0.15, "{}", l2 / l);
        assert!((q2 / q / 16.0 - 1.0).abs() < 0.15, "{}", q2 / q);
        let without =
            ArchConfig::PaNet(PaNetConfig::small().with_with_attention(false)).init(&device);
        assert_eq!(split_flops(&without, 96).1, 0.0);
    }

    #[test]
    fn a_quadratic_network_is_tiled_and_a_linear_one_is_not() {
        let device = backend::cpu();
        let rates = Rates {
            linear: 1e11,
            quadratic: 3e10,
        };
        let budget = 64u64 << 30;
        let config = ArchConfig::PaNet(PaNetConfig::small());
        let network = config.init(&device);
        let p = plan(&config, &network, &rates, (3000, 4000), budget, 32, 48).unwrap();
        let tiles = p.tiles.expect("tiles");
        assert!(
            tiles.tile < 512 && p.seconds < p.whole_seconds / 100.0,
            "{p:?}"
        );
        assert_eq!(p.passes, tile_count(3000, 4000, tiles));
        let config = ArchConfig::PaNet(PaNetConfig::small().with_with_attention(false));
        let network = config.init(&device);
        let p = plan(&config, &network, &rates, (300, 400), budget, 32, 1).unwrap();
        assert_eq!(p.tiles, None, "{p:?}");
    }

    #[test]
    fn overlaps_stay_small_against_the_tile() {
        assert_eq!(tile_overlap(32, 32), 4);
        assert_eq!(tile_overlap(64, 32), 8);
        assert_eq!(tile_overlap(256, 32), 32);
        assert_eq!(tile_overlap(128, 32), 16);
        assert_eq!(tile_overlap(512, 4), 4);
        assert!(tile_overlap(12, 32) * 2 < 12);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_seconds(12.34), "12.3 s");
        assert_eq!(format_seconds(185.0), "3m 05s");
        assert_eq!(format_seconds(3720.0), "1h 02m");
        assert_eq!(format_seconds(3.0 * 86_400.0), "3.0 days");
    }
}
