//! Exact pyramid attention in bounded memory, as a fused CPU kernel over plain `f32` slices.
//!
//! Written by hand because no crate computes it: burn's tensor ops would materialise the
//! `[H*W, L]` score map (or many copies of a chunk of it) and spend 9x the necessary GEMM work on
//! `k x k` blocks. The GEMMs themselves go to the `gemm` crate (the kernel burn's Flex backend
//! uses).
//!
//! ## The identity behind it (block size `k = 2r+1`, stride 1, "same" zero padding)
//!
//! With `f` the query map `[C', H, W]`, `g^s` the key map and `θ^s` the value map of level `s`
//! (`[C', h, w]`, `[C, h, w]`), offsets `o ∈ [-r, r]²`, and every map zero outside its grid:
//!
//! ```text
//!   scores    S[q, l] = a_l · Σ_o G[q+o, l+o],   G[q', l'] = Σ_c f[c, q'] g[c, l']
//!             a_l     = softmax_scale / max(‖g block at l‖, escape_NaN)
//!   weights   W[q, ·] = softmax over all levels of S[q, ·]        (or its 0/1 arg-max mask)
//!   pasting   out[c, p] = Σ_o Σ_l W[p-o, l] θ[c, l+o]
//!                       = Σ_l' θ[c, l'] · W̃[p, l'],   W̃[p, l'] = Σ_o W[p-o, l'-o]
//! ```
//!
//! So the block products (`C'·k²` and `C·k²` long) become pixel products (`C'` and `C` long)
//! plus two `k²`-term diagonal sums over the score map: about 9x fewer multiply-adds for
//! `k = 3`. `W̃` needs whole softmax rows of the neighbours of `p`, so the image is processed in
//! square query tiles: scores for the tile plus an `r`-pixel halo (every level, so each row's
//! softmax is exact), `G` for the tile plus a `2r` halo. Tiles run in parallel; each needs
//! `O((t+2r)² · L)` floats, never the whole map.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// One pyramid level: the key map `g^s` `[C', h, w]` and the value map `θ^s` `[C, h, w]`.
pub struct Level<'a> {
    pub height: usize,
    pub width: usize,
    pub keys: &'a [f32],
    pub values: &'a [f32],
}

/// How each row of scores becomes weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalisation {
    /// Softmax over every block of every level.
    Softmax,
    /// The 0/1 mask of the row's maxima (hard attention), as `softmax == max(softmax)`.
    ArgMax,
}

/// The attention problem of one sample.
pub struct Problem<'a> {
    /// `f(x)`: `[C', H, W]`.
    pub query: &'a [f32],
    pub height: usize,
    pub width: usize,
    /// `C'`, channels of query and keys.
    pub match_channels: usize,
    /// `C`, channels of the values.
    pub channels: usize,
    pub levels: Vec<Level<'a>>,
    /// Block size (odd).
    pub ksize: usize,
    pub softmax_scale: f32,
    /// Lower bound of key block norms.
    pub escape: f32,
    pub normalisation: Normalisation,
}

/// `Σ_l' θ[c, l'] W̃[p, l']` for every pixel `p`: the pasted, not yet divided by 4, attention
/// output `[C, H, W]`. Uses at most about `budget_bytes` of scores per worker thread (at least
/// one 1-pixel tile's worth).
pub fn attend_and_paste(problem: &Problem, budget_bytes: usize) -> Vec<f32> {
    let (height, width) = (problem.height, problem.width);
    let radius = problem.ksize / 2;
    assert!(problem.ksize % 2 == 1, "ksize must be odd");
    assert_eq!(problem.query.len(), problem.match_channels * height * width);
    let scales: Vec<Vec<f32>> = problem
        .levels
        .iter()
        .map(|level| key_scales(level, problem))
        .collect();
    let offsets: Vec<usize> = problem
        .levels
        .iter()
        .scan(0, |acc, level| {
            let start = *acc;
            *acc += level.height * level.width;
            Some(start)
        })
        .collect();
    let total: usize = problem.levels.iter().map(|l| l.height * l.width).sum();
    let side = tile_side(total, radius, budget_bytes).min(height.max(width));
    let tiles: Vec<Rect> = (0..height.div_ceil(side))
        .flat_map(|ty| {
            (0..width.div_ceil(side)).map(move |tx| Rect {
                y0: ty * side,
                y1: ((ty + 1) * side).min(height),
                x0: tx * side,
                x1: ((tx + 1) * side).min(width),
            })
        })
        .collect();
    let context = Context {
        problem,
        scales: &scales,
        offsets: &offsets,
        total,
        radius,
    };
    let results: Vec<(Rect, Vec<f32>)> = tiles
        .into_par_iter()
        .map_init(Buffers::default, |buffers, tile| {
            let out = context.tile(tile, buffers);
            (tile, out)
        })
        .collect();
    let channels = problem.channels;
    let mut out = vec![0.0f32; channels * height * width];
    for (tile, tile_out) in results {
        let tile_width = tile.x1 - tile.x0;
        for (i, row) in tile_out.chunks_exact(channels).enumerate() {
            let (y, x) = (tile.y0 + i / tile_width, tile.x0 + i % tile_width);
            for (c, &v) in row.iter().enumerate() {
                out[c * height * width + y * width + x] = v;
            }
        }
    }
    out
}

/// How many worker threads the kernel runs on (rayon's pool: `RAYON_NUM_THREADS` or the cores).
pub fn workers() -> usize {
    rayon::current_num_threads()
}

/// Scratch bytes one worker thread holds: scores of the `r`-halo tile over all `total_blocks`,
/// pixel products of the `2r`-halo tile and spread weights of the tile over the largest level
/// (`largest_level` blocks), plus the tile's output rows (`channels` each).
pub fn worker_bytes(
    total_blocks: usize,
    largest_level: usize,
    channels: usize,
    ksize: usize,
    budget_bytes: usize,
) -> usize {
    let radius = ksize / 2;
    let t = tile_side(total_blocks, radius, budget_bytes);
    4 * ((t + 2 * radius).pow(2) * total_blocks
        + (t + 4 * radius).pow(2) * largest_level
        + t * t * (largest_level + channels))
}

/// The largest tile side (at most 16) whose halo-extended score rows fit the budget.
fn tile_side(total_blocks: usize, radius: usize, budget_bytes: usize) -> usize {
    let row_bytes = 4 * total_blocks.max(1);
    (1..=16)
        .rev()
        .find(|t| (t + 2 * radius).pow(2) * row_bytes <= budget_bytes)
        .unwrap_or(1)
}

/// `a_l = softmax_scale / max(‖g block at l‖₂, escape)` for every block centre of a level.
fn key_scales(level: &Level, problem: &Problem) -> Vec<f32> {
    let (h, w) = (level.height, level.width);
    let r = (problem.ksize / 2) as isize;
    let mut squares = vec![0.0f32; h * w];
    for channel in level.keys.chunks_exact(h * w) {
        for (s, v) in squares.iter_mut().zip(channel) {
            *s += v * v;
        }
    }
    let mut scales = vec![0.0f32; h * w];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let mut sum = 0.0f32;
            for dy in -r..=r {
                for dx in -r..=r {
                    let (yy, xx) = (y + dy, x + dx);
                    if yy >= 0 && yy < h as isize && xx >= 0 && xx < w as isize {
                        sum += squares[yy as usize * w + xx as usize];
                    }
                }
            }
            scales[y as usize * w + x as usize] =
                problem.softmax_scale / sum.sqrt().max(problem.escape);
        }
    }
    scales
}

#[derive(Clone, Copy, Debug)]
struct Rect {
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
}

impl Rect {
    fn grown(self, by: usize, height: usize, width: usize) -> Rect {
        Rect {
            y0: self.y0.saturating_sub(by),
            y1: (self.y1 + by).min(height),
            x0: self.x0.saturating_sub(by),
            x1: (self.x1 + by).min(width),
        }
    }
    fn len(&self) -> usize {
        (self.y1 - self.y0) * (self.x1 - self.x0)
    }
    fn contains(&self, y: isize, x: isize) -> bool {
        y >= self.y0 as isize
            && y < self.y1 as isize
            && x >= self.x0 as isize
            && x < self.x1 as isize
    }
    fn index(&self, y: isize, x: isize) -> usize {
        (y as usize - self.y0) * (self.x1 - self.x0) + (x as usize - self.x0)
    }
    fn pixels(self) -> impl Iterator<Item = (isize, isize)> {
        (self.y0..self.y1)
            .flat_map(move |y| (self.x0..self.x1).map(move |x| (y as isize, x as isize)))
    }
}

/// Per-thread scratch, reused across tiles.
#[derive(Default)]
struct Buffers {
    /// `f` at the pixels of the `2r` halo tile, `[pixels, C']`.
    query: Vec<f32>,
    /// `G` of one level, `[2r-halo pixels, h*w]`.
    products: Vec<f32>,
    /// Scores, then weights, of the `r`-halo pixels over all levels, `[pixels, L]`.
    weights: Vec<f32>,
    /// `W̃` of one level, `[tile pixels, h*w]`.
    spread: Vec<f32>,
}

struct Context<'a> {
    problem: &'a Problem<'a>,
    scales: &'a [Vec<f32>],
    offsets: &'a [usize],
    total: usize,
    radius: usize,
}

impl Context<'_> {
    /// The output rows `[tile pixels, C]` of one tile.
    fn tile(&self, tile: Rect, buffers: &mut Buffers) -> Vec<f32> {
        let p = self.problem;
        let (height, width) = (p.height, p.width);
        let halo = tile.grown(self.radius, height, width);
        let halo2 = tile.grown(2 * self.radius, height, width);
        let r = self.radius as isize;

        // f at the 2r-halo pixels, as rows.
        let cq = p.match_channels;
        buffers.query.clear();
        buffers.query.resize(halo2.len() * cq, 0.0);
        for (i, (y, x)) in halo2.pixels().enumerate() {
            let pixel = y as usize * width + x as usize;
            for c in 0..cq {
                buffers.query[i * cq + c] = p.query[c * height * width + pixel];
            }
        }

        // Scores S[q, l] for the r-halo pixels q, level by level.
        buffers.weights.clear();
        buffers.weights.resize(halo.len() * self.total, 0.0);
        for (s, level) in p.levels.iter().enumerate() {
            let (h, w) = (level.height, level.width);
            let blocks = h * w;
            buffers.products.clear();
            buffers.products.resize(halo2.len() * blocks, 0.0);
            // G = f_rows [pixels, C'] x g [C', h*w]
            // SAFETY: the pointers cover the buffers' lengths with the given row strides.
            unsafe {
                gemm(
                    halo2.len(),
                    blocks,
                    cq,
                    buffers.products.as_mut_ptr(),
                    1,
                    blocks as isize,
                    false,
                    buffers.query.as_ptr(),
                    1,
                    cq as isize,
                    level.keys.as_ptr(),
                    1,
                    blocks as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            let scale = &self.scales[s];
            let offset = self.offsets[s];
            for ky in 0..h as isize {
                for (i, (qy, qx)) in halo.pixels().enumerate() {
                    let start = i * self.total + offset + ky as usize * w;
                    let row = &mut buffers.weights[start..start + w];
                    for oy in -r..=r {
                        if ky + oy < 0 || ky + oy >= h as isize {
                            continue;
                        }
                        for ox in -r..=r {
                            if !halo2.contains(qy + oy, qx + ox) {
                                continue;
                            }
                            let from =
                                halo2.index(qy + oy, qx + ox) * blocks + (ky + oy) as usize * w;
                            add_shifted(row, &buffers.products[from..from + w], ox);
                        }
                    }
                    for (v, a) in row.iter_mut().zip(&scale[ky as usize * w..][..w]) {
                        *v *= a;
                    }
                }
            }
        }
        for row in buffers.weights.chunks_exact_mut(self.total) {
            normalise(row, p.normalisation);
        }

        // W̃ per level, and out[p, c] += W̃ [tile, h*w] x θᵀ [h*w, C].
        let channels = p.channels;
        let mut out = vec![0.0f32; tile.len() * channels];
        for (s, level) in p.levels.iter().enumerate() {
            let (h, w) = (level.height, level.width);
            let blocks = h * w;
            let offset = self.offsets[s];
            buffers.spread.clear();
            buffers.spread.resize(tile.len() * blocks, 0.0);
            for ky in 0..h as isize {
                for (i, (py, px)) in tile.pixels().enumerate() {
                    let start = i * blocks + ky as usize * w;
                    let row = &mut buffers.spread[start..start + w];
                    for oy in -r..=r {
                        if ky - oy < 0 || ky - oy >= h as isize {
                            continue;
                        }
                        for ox in -r..=r {
                            if !halo.contains(py - oy, px - ox) {
                                continue;
                            }
                            let from = halo.index(py - oy, px - ox) * self.total
                                + offset
                                + (ky - oy) as usize * w;
                            add_shifted(row, &buffers.weights[from..from + w], -ox);
                        }
                    }
                }
            }
            // SAFETY: as above; θ is read as [h*w, C] through its strides.
            unsafe {
                gemm(
                    tile.len(),
                    channels,
                    blocks,
                    out.as_mut_ptr(),
                    1,
                    channels as isize,
                    true,
                    buffers.spread.as_ptr(),
                    1,
                    blocks as isize,
                    level.values.as_ptr(),
                    blocks as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
        out
    }
}

/// `row[i] += from[i + shift]` wherever `i + shift` is inside `from` (both `row.len()` long).
fn add_shifted(row: &mut [f32], from: &[f32], shift: isize) {
    let n = row.len() as isize;
    let lo = (-shift).clamp(0, n);
    let hi = (n - shift).clamp(lo, n);
    if lo == hi {
        return;
    }
    let (lo, hi) = (lo as usize, hi as usize);
    let src = &from[(lo as isize + shift) as usize..(hi as isize + shift) as usize];
    for (d, s) in row[lo..hi].iter_mut().zip(src) {
        *d += *s;
    }
}

/// One row of scores to weights, in place: `e = exp(s - max)`, `w = e / Σe`; hard attention
/// keeps `w == max w` as 1 and the rest as 0 (what `softmax(..) == max(softmax(..))` gives).
fn normalise(row: &mut [f32], normalisation: Normalisation) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in row.iter_mut() {
        *v = exp_non_positive(*v - max);
    }
    let sum: f32 = row.iter().sum();
    match normalisation {
        Normalisation::Softmax => {
            for v in row.iter_mut() {
                *v /= sum;
            }
        }
        Normalisation::ArgMax => {
            let best = 1.0 / sum;
            for v in row.iter_mut() {
                *v = if *v / sum == best { 1.0 } else { 0.0 };
            }
        }
    }
}

/// `exp(x)` for `x <= 0`, branch-free so that the loop over a row vectorises (the C library's
/// `expf` is a scalar call per element, the largest cost of the softmax): Cody-Waite range
/// reduction `x = n ln2 + r`, `|r| <= ln2/2`, and Cephes' degree-6 polynomial for `exp(r)`,
/// within 2 ulp of `f32::exp`. Below -87 (where the result would leave the normal range) it
/// returns `exp(-87)` ≈ 1.6e-38, which no softmax row can tell from 0.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer, which the low mantissa bits then hold.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let n_bits = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let exp_r = p * r * r + r + 1.0;
    exp_r * f32::from_bits(((n_bits + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_adds_stay_inside_the_row() {
        let from = [1.0, 2.0, 3.0, 4.0];
        let mut row = [0.0; 4];
        add_shifted(&mut row, &from, 1);
        assert_eq!(row, [2.0, 3.0, 4.0, 0.0]);
        let mut row = [0.0; 4];
        add_shifted(&mut row, &from, -2);
        assert_eq!(row, [0.0, 0.0, 1.0, 2.0]);
        let mut row = [0.0; 4];
        add_shifted(&mut row, &from, 5);
        assert_eq!(row, [0.0; 4]);
    }

    #[test]
    fn vectorisable_exp_matches_the_library_exp() {
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (ours, lib) = (exp_non_positive(x) as f64, x.exp() as f64);
            worst = worst.max((ours - lib).abs() / lib);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_non_positive(0.0), 1.0);
        assert!(exp_non_positive(-1000.0) < 2e-38);
    }

    #[test]
    fn tiles_shrink_with_the_budget() {
        assert_eq!(tile_side(100, 1, 1 << 30), 16);
        assert_eq!(tile_side(1000, 1, 4 * 1000 * 36), 4);
        assert_eq!(tile_side(1000, 1, 1), 1);
    }
}
