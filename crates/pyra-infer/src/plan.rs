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
//!
//! Tiles bound attention's cost, but they also cut every convolution's receptive field at
//! their borders, and the fastest tiling of a network with attention is one of small tiles
//! (a 4000x3000 photo through PANet-S: 30000 tiles of 24 pixels, ten minutes). Pyramid
//! attention can instead attend within windows of its input while the convolutions see whole
//! tiles ([`pyra_core::blocks::window`]): its cost per pixel is then `b·t²` for windows of
//! side `t`, against `a` for the rest of the network. [`attention_window`] takes the largest
//! `t` of 16, 24, ..., 48 (48 is the training patch of PANet and PA-EDSR, the field their
//! attention learned) whose attention costs about as much time as the rest of the network
//! (counted in FLOPs, so that the choice is the same on every machine and every run), so that
//! a plan costs about twice the network without attention. The window is printed with the
//! plan; `--attention-window` sets another. `--mode whole` stays the exact global computation.

use std::time::Instant;

use pyra_core::blocks::window::window_count;
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
    /// The quadratic work's rate when the attention runs in windows (many small maps side by
    /// side, which keep the workers busier than one large map does).
    pub windowed: f64,
}

impl Rates {
    /// Time the network on `channels x t x t` inputs (the faster of two runs each): after one
    /// untimed run, at 64 pixels (plus 96 when it has quadratic work, so both rates are
    /// measured), and
    /// when its attention can run in windows, at 128 pixels in the windows of
    /// [`attention_window`]. A second or two on a CPU. The network's attention is global
    /// afterwards.
    pub fn measure(
        network: &mut AnyNetwork,
        channels: usize,
        min_side: usize,
        device: &Device,
    ) -> Rates {
        let window = attention_window(network);
        network.set_attention_window(None);
        // The fastest of two runs: a shared machine's noise only ever adds time.
        let time = |network: &AnyNetwork, t: usize| -> f64 {
            (0..2)
                .map(|_| {
                    let x = Tensor::<4>::zeros([1, channels, t, t], device);
                    let started = Instant::now();
                    let _ = network.forward(x).into_data();
                    started.elapsed().as_secs_f64().max(1e-6)
                })
                .fold(f64::INFINITY, f64::min)
        };
        let small = 64.max(min_side);
        let large = 96.max(small + 16);
        time(network, small);
        let (l1, q1) = split_flops(network, small);
        let t1 = time(network, small);
        if q1 <= 0.01 * (l1 + q1) {
            let rate = (l1 + q1) / t1;
            return Rates {
                linear: rate,
                quadratic: rate,
                windowed: rate,
            };
        }
        let (l2, q2) = split_flops(network, large);
        let t2 = time(network, large);
        // t_i = l_i x + q_i y with x = 1/R_lin, y = 1/R_quad.
        let det = l1 * q2 - l2 * q1;
        let x = (t1 * q2 - t2 * q1) / det;
        let y = (l1 * t2 - l2 * t1) / det;
        let overall = (l2 + q2) / t2;
        let (linear, quadratic) = if det.abs() > 0.0 && x > 0.0 && y > 0.0 {
            (1.0 / x, 1.0 / y)
        } else {
            // Too noisy to separate: one rate for both.
            (overall, overall)
        };
        let mut rates = Rates {
            linear,
            quadratic,
            windowed: quadratic,
        };
        if let Some(t) = window {
            let side = 128.max(2 * t);
            if network.set_attention_window(Some(t)) {
                let t3 = time(network, side);
                network.set_attention_window(None);
                let (a, _) = flops_per_pixel(network);
                let linear_seconds = a * (side * side) as f64 / linear;
                // What the windows cost beyond the linear work (at least a fifth of the run,
                // should the timing be noisy).
                let rest = (t3 - linear_seconds).max(0.2 * t3);
                rates.windowed = windowed_flops(network, (side, side), t) / rest;
            }
        }
        rates
    }

    /// Estimated seconds of one forward on `t x t`, attention global.
    pub fn seconds(&self, network: &AnyNetwork, t: usize) -> f64 {
        self.seconds_on(network, (t, t), None)
    }

    /// Estimated seconds of one forward on `h x w` (whole image), attention global.
    pub fn seconds_whole(&self, network: &AnyNetwork, h: usize, w: usize) -> f64 {
        self.seconds_on(network, (h, w), None)
    }

    /// Estimated seconds of one forward on `h x w` with attention in windows of `window`
    /// (`None`: global): `a·hw / R_lin + b·Σ (window pixels)² / R_quad`.
    pub fn seconds_on(
        &self,
        network: &AnyNetwork,
        (h, w): (usize, usize),
        window: Option<usize>,
    ) -> f64 {
        let (a, b) = flops_per_pixel(network);
        let pixels = (h * w) as f64;
        let quadratic = match window {
            Some(t) if t < h.max(w) => windowed_flops(network, (h, w), t) / self.windowed,
            _ => b * pixels * pixels / self.quadratic,
        };
        a * pixels / self.linear + quadratic
    }
}

/// The quadratic FLOPs of `network` on `h x w` with the attention in windows of `t`.
pub fn windowed_flops(network: &AnyNetwork, (h, w): (usize, usize), t: usize) -> f64 {
    let (_, b) = flops_per_pixel(network);
    let inside = (t.min(h) * t.min(w)) as f64;
    window_count(h, w, t) as f64 * b * inside * inside
}

/// `(a, b)` of `F(p) = a p + b p²`, the network's FLOPs on `p` pixels (from [`split_flops`]
/// at 64x64).
pub fn flops_per_pixel(network: &AnyNetwork) -> (f64, f64) {
    let t = 64usize;
    let p = (t * t) as f64;
    let (linear, quadratic) = split_flops(network, t);
    (linear / p, quadratic / (p * p))
}

/// The attention windows the planner chooses from.
pub const WINDOWS: [usize; 5] = [16, 24, 32, 40, 48];

/// Attention FLOPs per pixel (as [`pyra_core::networks::cost`] counts them) the planner
/// allows per FLOP of the rest of the network: see [`attention_window`].
pub const ATTENTION_FLOPS_PER_REST: f64 = 4.0;

/// The attention window (side in pixels) the planner uses for `network`, `None` for a
/// network whose attention cannot run in windows or that has none: the largest of
/// [`WINDOWS`] with `b·t² <= 4a`, the smallest when none is. The cost model counts block
/// products (9 multiply-adds per pixel pair and channel); the streaming kernel does a ninth of
/// those at a third to a half of the convolutions' rate, so in time the rule lets the attention
/// take about as long as the rest of the network. It depends on the network only, so the same
/// photo gives the same pixels on every machine and every run.
pub fn attention_window(network: &AnyNetwork) -> Option<usize> {
    if !network.supports_attention_window() {
        return None;
    }
    let (a, b) = flops_per_pixel(network);
    if b <= 0.0 {
        return None;
    }
    let fits = |t: usize| b * (t * t) as f64 <= ATTENTION_FLOPS_PER_REST * a;
    Some(
        WINDOWS
            .iter()
            .rev()
            .copied()
            .find(|&t| fits(t))
            .unwrap_or(WINDOWS[0]),
    )
}

/// What the planner chose, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// `None`: one whole-image pass.
    pub tiles: Option<TileOptions>,
    /// The attention window (`None`: global attention).
    pub window: Option<usize>,
    /// Forwards it takes.
    pub passes: usize,
    /// Estimated seconds.
    pub seconds: f64,
    /// Estimated seconds of a whole-image pass (whether or not it fits).
    pub whole_seconds: f64,
    /// Estimated peak bytes of one forward (of all the tiles it takes at once).
    pub bytes: u64,
}

/// The overlap of tiles of side `tile` when `requested` is asked for: at most an eighth of
/// the tile, at least 4 pixels (a quarter would make every tiling cost 4x its pixels).
pub fn tile_overlap(tile: usize, requested: usize) -> usize {
    requested
        .min((tile / 8).max(4))
        .min(tile.saturating_sub(1) / 2)
}

/// Tiles per forward: as many as fit `budget` together, at most 16 and at most a 256x256
/// input's worth of pixels: small tiles then spend less on per-call overhead, and large ones,
/// which gain nothing from company, do not hold several tiles' memory at once.
pub fn batch_for(config: &ArchConfig, tile: usize, budget: u64) -> usize {
    let one = estimate_forward_bytes(config, tile, tile).max(1);
    let by_pixels = (256 * 256 / (tile * tile).max(1)).max(1) as u64;
    (budget / one).clamp(1, 16).min(by_pixels) as usize
}

/// Tiles of side `tile` (with `overlap`) an `h x w` image needs.
pub fn tile_count(h: usize, w: usize, options: TileOptions) -> usize {
    let th = options.tile.min(h);
    let tw = options.tile.min(w);
    tile_starts(h, th, options.overlap).len() * tile_starts(w, tw, options.overlap).len()
}

/// The fastest way through the network for an `h x w` image within `budget` bytes, its
/// attention in windows of `window` (`None`: global): a whole pass, or tiles of 16..=512
/// pixels (multiples of 8, at least `min_side` and four windows) with an overlap of
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
    window: Option<usize>,
) -> Option<Plan> {
    let whole_bytes = estimate_forward_bytes(config, h, w);
    let whole_seconds = rates.seconds_whole(network, h, w);
    let whole = Plan {
        tiles: None,
        window,
        passes: 1,
        seconds: rates.seconds_on(network, (h, w), window),
        whole_seconds,
        bytes: whole_bytes,
    };
    let best_tiles = (2..=64)
        .map(|k| k * 8)
        // With windows, tiles are only for memory: smaller than four windows, they would cut
        // the windows (and small tiles are what windows are there to avoid).
        .filter(|&t| t >= min_side.max(window.map_or(0, |t| 4 * t)) && t < h.max(w))
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
            let bytes = bytes * options.batch as u64;
            let passes = tile_count(h, w, options);
            let seconds = passes as f64 * rates.seconds_on(network, (t.min(h), t.min(w)), window);
            Some(Plan {
                tiles: Some(options),
                window,
                passes,
                seconds,
                whole_seconds,
                bytes,
            })
        })
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
    match best_tiles {
        Some(tiles) if whole_bytes > budget || whole.seconds > 1.25 * tiles.seconds => Some(tiles),
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
            windowed: 3e10,
        };
        let budget = 64u64 << 30;
        let config = ArchConfig::PaNet(PaNetConfig::small());
        let network = config.init(&device);
        let p = plan(
            &config,
            &network,
            &rates,
            (3000, 4000),
            budget,
            32,
            48,
            None,
        )
        .unwrap();
        let tiles = p.tiles.expect("tiles");
        assert!(
            tiles.tile < 512 && p.seconds < p.whole_seconds / 100.0,
            "{p:?}"
        );
        assert_eq!(p.passes, tile_count(3000, 4000, tiles));
        let config = ArchConfig::PaNet(PaNetConfig::small().with_with_attention(false));
        let network = config.init(&device);
        let p = plan(&config, &network, &rates, (300, 400), budget, 32, 1, None).unwrap();
        assert_eq!(p.tiles, None, "{p:?}");
    }

    #[test]
    fn attention_windows_follow_the_flops_of_the_rest() {
        let device = backend::cpu();
        let small = ArchConfig::PaNet(PaNetConfig::small()).init(&device);
        let full = ArchConfig::PaNet(PaNetConfig::new()).init(&device);
        for network in [&small, &full] {
            let t = attention_window(network).unwrap();
            let (a, b) = flops_per_pixel(network);
            let fits = |t: usize| b * (t * t) as f64 <= ATTENTION_FLOPS_PER_REST * a;
            // The largest window within the allowance.
            assert!(t == WINDOWS[0] || fits(t), "{t}");
            if let Some(&next) = WINDOWS.iter().find(|&&w| w > t) {
                assert!(!fits(next), "{t}");
            }
        }
        // PANet-S: 8 res-blocks leave room for 24-pixel windows; PANet's 80 for the largest.
        assert_eq!(attention_window(&small), Some(24));
        assert_eq!(attention_window(&full), Some(48));
        // No attention, no window.
        let without =
            ArchConfig::PaNet(PaNetConfig::small().with_with_attention(false)).init(&device);
        assert_eq!(attention_window(&without), None);
    }

    #[test]
    fn windowed_attention_lets_the_convolutions_see_large_tiles() {
        let device = backend::cpu();
        let rates = Rates {
            linear: 1e11,
            quadratic: 3e10,
            windowed: 3e10,
        };
        let budget = 4u64 << 30;
        let config = ArchConfig::PaNet(PaNetConfig::small());
        let network = config.init(&device);
        let window = Some(16);
        let global = plan(
            &config,
            &network,
            &rates,
            (3000, 4000),
            budget,
            32,
            48,
            None,
        )
        .unwrap();
        let windowed = plan(
            &config,
            &network,
            &rates,
            (3000, 4000),
            budget,
            32,
            48,
            window,
        )
        .unwrap();
        assert_eq!(windowed.window, Some(16));
        assert!(windowed.tiles.is_none_or(|t| t.tile >= 64), "{windowed:?}");
        let (global_tile, windowed_tile) = (
            global.tiles.unwrap().tile,
            windowed.tiles.map_or(4000, |t| t.tile),
        );
        assert!(windowed_tile >= 4 * global_tile, "{global:?} {windowed:?}");
        assert!(
            windowed.seconds < global.seconds / 2.0,
            "{global:?} {windowed:?}"
        );
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
