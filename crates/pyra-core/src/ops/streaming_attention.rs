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
//!
//! ## Layout: padded grids, long vector adds
//!
//! Each level's keys and values are copied once onto a grid padded by `r` zero blocks on every
//! side (`(h+2r) x (w+2r)`), and scores, weights and pixel products live on that grid. An offset
//! `o` of a diagonal sum is then one flat shift `oy·(w+2r) + ox` of a whole row, and the zeros of
//! the pads stand for exactly the terms the definition drops, so the `k²` sums are long
//! contiguous vector adds in blocks of 512 (whose products stay in L2 while the `k²` pixels that
//! read them go by) instead of `w`-long adds with a bounds check each. Pad scores are `-inf`,
//! so their weights are exactly 0 and the GEMMs over the padded blocks add nothing for them.
//! The row maxima are taken while the scores are written, the scaling by `a_l` is fused into
//! the sums, and `W̃` is formed in 512 KiB chunks that the pasting GEMM consumes from L2.
//!
//! Measured (Intel Xeon family 6 model 167, AVX-512, 2 threads, `pyra bench-speed --torch
//! python3 --only pa-96`, `[1,64,96,96]`, 5.8e10 FLOP of useful work): 1.5-1.6 s, about 37
//! GFLOP/s or 14% of the machine's 256 GFLOP/s fp32 peak, against 6.9-7.0 s for PyTorch 2.15
//! running the official whole-map algorithm, and 2.5-3.2 s for this kernel before the padded
//! layout (`w`-long adds were bound by loop overhead: 57% of the time in the two diagonal
//! sums). Now the GEMMs take about a quarter of the time, the diagonal sums 40% and the
//! exponentials 12%.

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
    /// How many query tiles the map should be cut into where tiles of side 8 or more allow:
    /// enough to keep every worker busy. `16 x workers` for one map on its own; fewer when
    /// several maps (a batch) run side by side, so that a small map keeps large tiles, whose
    /// halos cost less.
    pub tiles_wanted: usize,
    pub softmax_scale: f32,
    /// Lower bound of key block norms.
    pub escape: f32,
    pub normalisation: Normalisation,
}

/// `Σ_l' θ[c, l'] W̃[p, l']` for every pixel `p`: the pasted, not yet divided by 4, attention
/// output `[C, H, W]`. Uses at most about `budget_bytes` of scores per worker thread (at least
/// one 1-pixel tile's worth).
pub fn attend_and_paste(problem: &Problem, budget_bytes: usize) -> Vec<f32> {
    let context = Context::new(problem);
    let tiles = context.tiles(budget_bytes);
    // At most about four jobs per worker, so few fresh sets of buffers are allocated (and
    // faulted in); tiles cost about the same, so that still balances.
    let min_len = (tiles.len() / (4 * workers())).max(1);
    let results: Vec<(Rect, Vec<f32>)> = tiles
        .into_par_iter()
        .with_min_len(min_len)
        .map_init(Buffers::default, |buffers, tile| {
            let out = context.tile(tile, buffers);
            (tile, out)
        })
        .collect();
    rows_to_planes(&results, problem.channels, problem.height, problem.width)
}

/// Gradients of a loss with respect to the inputs of [`attend_and_paste`].
pub struct Gradients {
    /// `∂/∂f`, `[C', H, W]`.
    pub query: Vec<f32>,
    /// `∂/∂g^s` per level, `[C', h, w]`.
    pub keys: Vec<Vec<f32>>,
    /// `∂/∂θ^s` per level, `[C, h, w]`.
    pub values: Vec<Vec<f32>>,
}

/// The backward of [`attend_and_paste`], given `grad_out = ∂loss/∂out` `[C, H, W]`, recomputing
/// the weights tile by tile (as FlashAttention does) instead of storing them. With
/// `E = dOutᵀ θ` (pixel products) and `D` the diagonal sum of the forward:
///
/// ```text
///   ∂θ[c, l']  = Σ_p dOut[c, p] W̃[p, l']
///   ∂W[q, l]   = Σ_o E[q+o, l+o]                                  (= D(E))
///   ∂S[q, l]   = W[q, l] (∂W[q, l] - Σ_l'' W[q, l''] ∂W[q, l''])   (softmax; 0 for hard attention)
///   ∂G[q', l'] = Σ_o (a ⊙ ∂S)[q'-o, l'-o]                          (= Dᵀ(a ⊙ ∂S))
///   ∂f = ∂G · gᵀ,   ∂g = fᵀ · ∂G + the norm term of a,   ∂a_l = Σ_q ∂S[q, l] S[q, l] / a_l
/// ```
///
/// Each worker sums its tiles' contributions to `∂g`, `∂θ` and `∂a` in tile order and the
/// workers' sums are added in worker order, so the result is the same on every run with the
/// same number of threads.
pub fn attend_and_paste_backward(
    problem: &Problem,
    grad_out: &[f32],
    budget_bytes: usize,
) -> Gradients {
    let (height, width) = (problem.height, problem.width);
    assert_eq!(grad_out.len(), problem.channels * height * width);
    let context = Context::new(problem);
    // Three score-sized maps per tile (scores, weights, their gradient): a third of the budget
    // each.
    let tiles = context.tiles(budget_bytes / 3);
    let groups = workers().clamp(1, tiles.len().max(1));
    let per_group = tiles.len().div_ceil(groups).max(1);
    let partials: Vec<Partial> = tiles
        .par_chunks(per_group)
        .map(|chunk| {
            let mut partial = Partial::new(&context);
            let mut buffers = Buffers::default();
            for &tile in chunk {
                context.tile_backward(tile, grad_out, &mut buffers, &mut partial);
            }
            partial
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut total = partials.next().unwrap_or_else(|| Partial::new(&context));
    for partial in partials {
        total.add(partial);
    }
    let query = rows_to_planes(&total.query_rows, problem.match_channels, height, width);
    let grids = &context.grids;
    let mut keys: Vec<Vec<f32>> = (total.keys.iter().zip(grids))
        .map(|(padded, grid)| grid.unpad(padded))
        .collect();
    let values = (total.values.iter().zip(grids))
        .map(|(padded, grid)| grid.unpad(padded))
        .collect();
    // a_l = scale / max(n_l, escape) with n_l the norm of key block l: where n_l > escape,
    // ∂a_l/∂g[c, l+o] = -a_l g[c, l+o] / n_l², so ∂g[c, l'] += g[c, l'] Σ_o κ[l'-o] with
    // κ_l = -∂a_l a_l / n_l².
    for (s, level) in problem.levels.iter().enumerate() {
        let (h, w) = (level.height, level.width);
        let grad_scales = grids[s].unpad(&total.scales[s]);
        let kappa: Vec<f32> = (0..h * w)
            .map(|l| {
                let norm = context.norms[s][l];
                if norm > problem.escape {
                    let a = context.scales[s][l];
                    -grad_scales[l] * a / (norm * norm)
                } else {
                    0.0
                }
            })
            .collect();
        let spread = box_sum(&kappa, h, w, context.radius);
        for (grad, key) in keys[s]
            .chunks_exact_mut(h * w)
            .zip(level.keys.chunks_exact(h * w))
        {
            for ((d, g), k) in grad.iter_mut().zip(key).zip(&spread) {
                *d += g * k;
            }
        }
    }
    Gradients {
        query,
        keys,
        values,
    }
}

/// Tile rows `[tile pixels, channels]` to planes `[channels, height, width]`.
fn rows_to_planes(
    tiles: &[(Rect, Vec<f32>)],
    channels: usize,
    height: usize,
    width: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; channels * height * width];
    for (tile, rows) in tiles {
        let tile_width = tile.x1 - tile.x0;
        for (i, row) in rows.chunks_exact(channels).enumerate() {
            let (y, x) = (tile.y0 + i / tile_width, tile.x0 + i % tile_width);
            for (c, &v) in row.iter().enumerate() {
                out[c * height * width + y * width + x] = v;
            }
        }
    }
    out
}

/// One worker's share of the backward: sums over its tiles, on the padded grids.
struct Partial {
    /// `∂g^s`, `[C', hp*wp]` per level.
    keys: Vec<Vec<f32>>,
    /// `∂θ^s`, `[C, hp*wp]` per level.
    values: Vec<Vec<f32>>,
    /// `∂a^s`, `[hp*wp]` per level (pad entries unused).
    scales: Vec<Vec<f32>>,
    /// `∂f` rows of each finished tile.
    query_rows: Vec<(Rect, Vec<f32>)>,
}

impl Partial {
    fn new(context: &Context) -> Partial {
        let p = context.problem;
        let sizes = context.grids.iter().map(Grid::padded);
        Partial {
            keys: sizes
                .clone()
                .map(|b| vec![0.0; p.match_channels * b])
                .collect(),
            values: sizes.clone().map(|b| vec![0.0; p.channels * b]).collect(),
            scales: sizes.map(|b| vec![0.0; b]).collect(),
            query_rows: Vec::new(),
        }
    }

    fn add(&mut self, other: Partial) {
        let pairs = self
            .keys
            .iter_mut()
            .zip(other.keys)
            .chain(self.values.iter_mut().zip(other.values))
            .chain(self.scales.iter_mut().zip(other.scales));
        for (mine, theirs) in pairs {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        self.query_rows.extend(other.query_rows);
    }
}

/// `Σ_o v[l+o]` over the `k x k` window of every position of an `h x w` map (zero outside).
fn box_sum(values: &[f32], h: usize, w: usize, radius: usize) -> Vec<f32> {
    let r = radius as isize;
    let mut out = vec![0.0f32; h * w];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let mut sum = 0.0f32;
            for dy in -r..=r {
                for dx in -r..=r {
                    let (yy, xx) = (y + dy, x + dx);
                    if yy >= 0 && yy < h as isize && xx >= 0 && xx < w as isize {
                        sum += values[yy as usize * w + xx as usize];
                    }
                }
            }
            out[y as usize * w + x as usize] = sum;
        }
    }
    out
}

/// How many worker threads the kernel runs on (rayon's pool: `RAYON_NUM_THREADS` or the cores).
pub fn workers() -> usize {
    rayon::current_num_threads()
}

/// Scratch bytes one worker thread holds: scores of the `r`-halo tile over all `total_blocks`
/// (padded by `r` on every side of every level: `padded_blocks`), the pixel products of the
/// `2r`-halo tile over the largest padded level (`largest_level`), one chunk of spread weights,
/// and the tile's output rows (`channels` each).
pub fn worker_bytes(
    total_blocks: usize,
    padded_blocks: usize,
    largest_level: usize,
    channels: usize,
    ksize: usize,
    budget_bytes: usize,
) -> usize {
    let radius = ksize / 2;
    let t = tile_side(padded_blocks.max(total_blocks), radius, budget_bytes);
    4 * ((t + 2 * radius).pow(2) * (padded_blocks + 1)
        + (t + 4 * radius).pow(2) * largest_level
        + SPREAD_CHUNK_FLOATS.max(t * t * 16)
        + t * t * channels)
}

/// The largest tile side (at most 16) whose halo-extended score rows fit the budget.
fn tile_side(total_blocks: usize, radius: usize, budget_bytes: usize) -> usize {
    let row_bytes = 4 * total_blocks.max(1);
    (1..=16)
        .rev()
        .find(|t| (t + 2 * radius).pow(2) * row_bytes <= budget_bytes)
        .unwrap_or(1)
}

/// `‖g block at l‖₂` for every block centre of a level (zero outside the level).
fn key_norms(level: &Level, radius: usize) -> Vec<f32> {
    let (h, w) = (level.height, level.width);
    let mut squares = vec![0.0f32; h * w];
    for channel in level.keys.chunks_exact(h * w) {
        for (s, v) in squares.iter_mut().zip(channel) {
            *s += v * v;
        }
    }
    box_sum(&squares, h, w, radius)
        .into_iter()
        .map(f32::sqrt)
        .collect()
}

/// A level's blocks on a grid padded by `r` zero rows and columns on every side
/// (`hp = h + 2r`, `wp = w + 2r`), so that the offset `o` of the diagonal sums is one flat shift
/// `oy·wp + ox` of a whole padded row: keys and values are zero in the pads, so a shifted read
/// that leaves the level reads zeros, exactly the terms the definition drops, and the `k²`
/// sums become long contiguous vector adds instead of `w`-long ones with bounds per row.
#[derive(Clone, Copy, Debug)]
struct Grid {
    h: usize,
    w: usize,
    r: usize,
}

impl Grid {
    fn wp(&self) -> usize {
        self.w + 2 * self.r
    }
    /// Blocks of the padded grid.
    fn padded(&self) -> usize {
        (self.h + 2 * self.r) * self.wp()
    }
    /// Where a padded row's sums are formed: from the first real block to the last one, so
    /// every shift `j ± (r·wp + r)` of it stays inside the padded grid.
    fn active(&self) -> std::ops::Range<usize> {
        let (r, wp) = (self.r, self.wp());
        r * wp + r..(r + self.h) * wp - r
    }
    /// The padded index of real block row `y`'s first block.
    fn real_row(&self, y: usize) -> usize {
        (self.r + y) * self.wp() + self.r
    }
    /// `[channels, h*w]` planes on the padded grid, zero in the pads.
    fn pad(&self, planes: &[f32], channels: usize) -> Vec<f32> {
        let (h, w, n) = (self.h, self.w, self.padded());
        let mut out = vec![0.0f32; channels * n];
        for (c, plane) in planes.chunks_exact(h * w).enumerate().take(channels) {
            for y in 0..h {
                out[c * n + self.real_row(y)..][..w].copy_from_slice(&plane[y * w..][..w]);
            }
        }
        out
    }
    /// The real blocks of padded planes (any number of them) back as `[channels, h*w]`.
    fn unpad(&self, padded: &[f32]) -> Vec<f32> {
        let (h, w, n) = (self.h, self.w, self.padded());
        let mut out = Vec::with_capacity(padded.len() / n * h * w);
        for plane in padded.chunks_exact(n) {
            for y in 0..h {
                out.extend_from_slice(&plane[self.real_row(y)..][..w]);
            }
        }
        out
    }
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
    /// `G` (or `E`) of one padded level, `[2r-halo pixels, hp*wp]`.
    products: Vec<f32>,
    /// One block of a row of diagonal sums.
    acc: Vec<f32>,
    /// Scores, then weights, of the `r`-halo pixels over all padded levels, `[pixels, L]`.
    weights: Vec<f32>,
    /// The largest score of each `r`-halo pixel.
    maxes: Vec<f32>,
    /// `W̃` (or `∂G`) of one chunk of padded blocks, `[tile pixels, chunk]`.
    spread: Vec<f32>,
    /// Backward only: the scores of the tile's own pixels, `[tile pixels, L]`.
    scores: Vec<f32>,
    /// Backward only: `∂W`, then `a ⊙ ∂S`, of the `r`-halo pixels, `[pixels, L]`.
    grad_weights: Vec<f32>,
    /// Backward only: `∂out` at the `2r` halo pixels, `[pixels, C]`.
    grad_rows: Vec<f32>,
}

/// What every tile of one problem shares.
struct Context<'a> {
    problem: &'a Problem<'a>,
    /// Each level's padded grid.
    grids: Vec<Grid>,
    /// Keys and values of each level on its padded grid.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// `‖g block‖` per level (real blocks).
    norms: Vec<Vec<f32>>,
    /// `a_l` per level (real blocks).
    scales: Vec<Vec<f32>>,
    /// `a_l` per padded block (0 in the pads), and what is added after scaling: 0 at real
    /// blocks, `-inf` in the pads, whose weights are then exactly 0.
    padded_scales: Vec<Vec<f32>>,
    pad_bias: Vec<Vec<f32>>,
    /// First column of each padded level in a row of scores.
    offsets: Vec<usize>,
    /// `L`, padded blocks of all levels.
    total: usize,
    radius: usize,
}

impl<'a> Context<'a> {
    fn new(problem: &'a Problem<'a>) -> Context<'a> {
        assert!(problem.ksize % 2 == 1, "ksize must be odd");
        let pixels = problem.height * problem.width;
        assert_eq!(problem.query.len(), problem.match_channels * pixels);
        let radius = problem.ksize / 2;
        let grids: Vec<Grid> = problem
            .levels
            .iter()
            .map(|l| Grid {
                h: l.height,
                w: l.width,
                r: radius,
            })
            .collect();
        let norms: Vec<Vec<f32>> = problem
            .levels
            .iter()
            .map(|level| key_norms(level, radius))
            .collect();
        let scales: Vec<Vec<f32>> = norms
            .iter()
            .map(|level| {
                level
                    .iter()
                    .map(|n| problem.softmax_scale / n.max(problem.escape))
                    .collect()
            })
            .collect();
        let padded_scales = scales
            .iter()
            .zip(&grids)
            .map(|(a, grid)| grid.pad(a, 1))
            .collect();
        let pad_bias = grids
            .iter()
            .map(|grid| {
                let ones = vec![1.0f32; grid.h * grid.w];
                grid.pad(&ones, 1)
                    .into_iter()
                    .map(|real| if real == 1.0 { 0.0 } else { f32::NEG_INFINITY })
                    .collect()
            })
            .collect();
        let keys = (problem.levels.iter().zip(&grids))
            .map(|(level, grid)| grid.pad(level.keys, problem.match_channels))
            .collect();
        let values = (problem.levels.iter().zip(&grids))
            .map(|(level, grid)| grid.pad(level.values, problem.channels))
            .collect();
        let offsets: Vec<usize> = grids
            .iter()
            .scan(0, |acc, grid| {
                let start = *acc;
                *acc += grid.padded();
                Some(start)
            })
            .collect();
        let total = grids.iter().map(Grid::padded).sum();
        Context {
            problem,
            grids,
            keys,
            values,
            norms,
            scales,
            padded_scales,
            pad_bias,
            offsets,
            total,
            radius,
        }
    }

    /// Square query tiles covering the image, as large as `budget_bytes` of halo-extended
    /// score rows allow, and small enough that there are [`Problem::tiles_wanted`] of them
    /// where the image allows (sides down to 8): a small map on its own (PA-EDSR's 48x48)
    /// then keeps all workers busy with a third of the scratch per worker, and a large one is
    /// unaffected.
    fn tiles(&self, budget_bytes: usize) -> Vec<Rect> {
        let (height, width) = (self.problem.height, self.problem.width);
        let mut side = tile_side(self.total, self.radius, budget_bytes).min(height.max(width));
        let wanted = self.problem.tiles_wanted.max(1);
        while side > 8 && height.div_ceil(side) * width.div_ceil(side) < wanted {
            side -= 1;
        }
        (0..height.div_ceil(side))
            .flat_map(|ty| {
                (0..width.div_ceil(side)).map(move |tx| Rect {
                    y0: ty * side,
                    y1: ((ty + 1) * side).min(height),
                    x0: tx * side,
                    x1: ((tx + 1) * side).min(width),
                })
            })
            .collect()
    }

    /// The weights `W` of the tile's `r`-halo pixels over all levels in `buffers.weights`
    /// (from scores made of `f` at the `2r`-halo pixels, left in `buffers.query`); with
    /// `keep_scores`, the scores of the tile's own pixels also in `buffers.scores`. Returns
    /// the `r` and `2r` halo rectangles.
    fn weights(&self, tile: Rect, buffers: &mut Buffers, keep_scores: bool) -> (Rect, Rect) {
        let p = self.problem;
        let (height, width) = (p.height, p.width);
        let halo = tile.grown(self.radius, height, width);
        let halo2 = tile.grown(2 * self.radius, height, width);
        let cq = p.match_channels;
        let Buffers {
            query,
            products,
            acc,
            weights,
            maxes,
            scores,
            ..
        } = buffers;
        gather_rows(query, p.query, cq, halo2, width);

        // Scores S[q, l] for the r-halo pixels q, level by level: G = f rows [pixels, C'] x
        // g [C', hp*wp], then a ⊙ D(G) with the row maxima on the side.
        weights.resize(halo.len() * self.total, 0.0);
        maxes.clear();
        maxes.resize(halo.len(), f32::NEG_INFINITY);
        for (s, grid) in self.grids.iter().enumerate() {
            let blocks = grid.padded();
            products.resize(halo2.len() * blocks, 0.0);
            matmul(
                (halo2.len(), blocks, cq),
                products,
                (blocks, 1),
                false,
                query,
                (cq, 1),
                &self.keys[s],
                (blocks, 1),
            );
            diagonal_sums(
                weights,
                (self.total, self.offsets[s]),
                Some((&self.padded_scales[s], &self.pad_bias[s])),
                Some(maxes),
                products,
                *grid,
                (halo, halo2),
                acc,
            );
        }
        if keep_scores {
            scores.clear();
            for (y, x) in tile.pixels() {
                let at = halo.index(y, x) * self.total;
                scores.extend_from_slice(&weights[at..at + self.total]);
            }
        }
        for (row, &max) in weights.chunks_exact_mut(self.total).zip(maxes.iter()) {
            normalise(row, max, p.normalisation);
        }
        (halo, halo2)
    }

    /// The output rows `[tile pixels, C]` of one tile.
    fn tile(&self, tile: Rect, buffers: &mut Buffers) -> Vec<f32> {
        let p = self.problem;
        let (halo, _) = self.weights(tile, buffers, false);
        // W̃ per level, a chunk of blocks at a time: out[p, c] += W̃ [tile, chunk] x θᵀ [chunk, C].
        let channels = p.channels;
        let mut out = vec![0.0f32; tile.len() * channels];
        for (s, grid) in self.grids.iter().enumerate() {
            let values = &self.values[s];
            spread_chunks(
                &mut buffers.spread,
                (&buffers.weights, self.total, self.offsets[s]),
                *grid,
                (tile, halo),
                |start, cols, chunk| {
                    matmul(
                        (tile.len(), channels, cols),
                        &mut out,
                        (channels, 1),
                        true,
                        chunk,
                        (cols, 1),
                        &values[start..],
                        (1, grid.padded()),
                    );
                },
            );
        }
        out
    }

    /// Adds one tile's contributions to the gradients (see [`attend_and_paste_backward`]).
    fn tile_backward(
        &self,
        tile: Rect,
        grad_out: &[f32],
        buffers: &mut Buffers,
        partial: &mut Partial,
    ) {
        let p = self.problem;
        let soft = p.normalisation == Normalisation::Softmax;
        let (halo, halo2) = self.weights(tile, buffers, soft);
        let (cq, channels, total) = (p.match_channels, p.channels, self.total);
        gather_rows(&mut buffers.grad_rows, grad_out, channels, halo2, p.width);
        let own_rows = |rows: &[f32], width: usize| -> Vec<f32> {
            tile.pixels()
                .flat_map(|(y, x)| {
                    let at = halo2.index(y, x) * width;
                    rows[at..at + width].iter().copied()
                })
                .collect()
        };
        let grad_tile = own_rows(&buffers.grad_rows, channels);

        // ∂θ^s += dOut[tile]ᵀ [C, tile] x W̃ [tile, hp*wp], a chunk of blocks at a time.
        for (s, grid) in self.grids.iter().enumerate() {
            let blocks = grid.padded();
            let values = &mut partial.values[s];
            spread_chunks(
                &mut buffers.spread,
                (&buffers.weights, total, self.offsets[s]),
                *grid,
                (tile, halo),
                |start, cols, chunk| {
                    matmul(
                        (channels, cols, tile.len()),
                        &mut values[start..],
                        (blocks, 1),
                        true,
                        &grad_tile,
                        (1, channels),
                        chunk,
                        (cols, 1),
                    );
                },
            );
        }
        if !soft {
            // The arg-max mask is constant: no gradient reaches f or g.
            return;
        }

        // ∂W for the r-halo pixels: D(E), E = dOut rows [2r-halo, C] x θ [C, hp*wp].
        buffers.grad_weights.resize(halo.len() * total, 0.0);
        for (s, grid) in self.grids.iter().enumerate() {
            let blocks = grid.padded();
            buffers.products.resize(halo2.len() * blocks, 0.0);
            matmul(
                (halo2.len(), blocks, channels),
                &mut buffers.products,
                (blocks, 1),
                false,
                &buffers.grad_rows,
                (channels, 1),
                &self.values[s],
                (blocks, 1),
            );
            diagonal_sums(
                &mut buffers.grad_weights,
                (total, self.offsets[s]),
                None,
                None,
                &buffers.products,
                *grid,
                (halo, halo2),
                &mut buffers.acc,
            );
        }
        // ∂S = W (∂W - ρ) through the softmax (0 in the pads, where W is 0); ∂a from the
        // tile's own rows; then a ⊙ ∂S.
        for (i, (y, x)) in halo.pixels().enumerate() {
            let weights = &buffers.weights[i * total..(i + 1) * total];
            let grads = &mut buffers.grad_weights[i * total..(i + 1) * total];
            let rho: f32 = weights.iter().zip(grads.iter()).map(|(w, g)| w * g).sum();
            for (g, w) in grads.iter_mut().zip(weights) {
                *g = w * (*g - rho);
            }
            let own = tile.contains(y, x).then(|| tile.index(y, x));
            for (s, grid) in self.grids.iter().enumerate() {
                let at = self.offsets[s];
                let scales = &self.padded_scales[s];
                if let Some(j) = own {
                    let scores = &buffers.scores[j * total + at..][..grid.padded()];
                    let grads = &grads[at..at + grid.padded()];
                    for y in 0..grid.h {
                        let row = grid.real_row(y)..grid.real_row(y) + grid.w;
                        for (((da, g), score), a) in partial.scales[s][row.clone()]
                            .iter_mut()
                            .zip(&grads[row.clone()])
                            .zip(&scores[row.clone()])
                            .zip(&scales[row])
                        {
                            *da += g * score / a;
                        }
                    }
                }
                for (g, a) in grads[at..at + grid.padded()].iter_mut().zip(scales) {
                    *g *= a;
                }
            }
        }
        // ∂G for the tile's pixels = Dᵀ(a ⊙ ∂S); ∂f += ∂G g^sᵀ; ∂g^s += f[tile]ᵀ ∂G.
        let query_tile = own_rows(&buffers.query, cq);
        let mut grad_query = vec![0.0f32; tile.len() * cq];
        for (s, grid) in self.grids.iter().enumerate() {
            let blocks = grid.padded();
            let level_keys = &self.keys[s];
            let keys = &mut partial.keys[s];
            spread_chunks(
                &mut buffers.spread,
                (&buffers.grad_weights, total, self.offsets[s]),
                *grid,
                (tile, halo),
                |start, cols, chunk| {
                    matmul(
                        (tile.len(), cq, cols),
                        &mut grad_query,
                        (cq, 1),
                        true,
                        chunk,
                        (cols, 1),
                        &level_keys[start..],
                        (1, blocks),
                    );
                    matmul(
                        (cq, cols, tile.len()),
                        &mut keys[start..],
                        (blocks, 1),
                        true,
                        &query_tile,
                        (1, cq),
                        chunk,
                        (cols, 1),
                    );
                },
            );
        }
        partial.query_rows.push((tile, grad_query));
    }
}

/// Blocks of a padded row one pass of [`diagonal_sums`] handles: the products of every halo
/// pixel over this many blocks (`|2r-halo| x 512` floats, 800 KiB for 16-pixel tiles) stay in
/// L2 while the `k²` pixels that read each of them go by.
const SUM_BLOCK: usize = 512;

/// Floats of the chunks [`spread_chunks`] hands to its GEMM (512 KiB): a chunk stays in L2
/// between the diagonal sums that write it and the GEMM that reads it.
const SPREAD_CHUNK_FLOATS: usize = 1 << 17;

/// `dst[q, offset + j] = scale_j · Σ_o P[q+o, j + oy·wp + ox] + bias_j` (without `scale_bias`:
/// the plain sum) for the pixels `q` of `rows` and the padded blocks `j` of one level, where
/// `P` (`products`, `[pixels of from, hp*wp]`) are pixel products on the padded grid, zero in
/// its pads, `o ∈ [-r, r]²`, and the terms outside the image (`q+o` not in `from`, which must
/// contain `rows` grown by `r` clipped to the image) are dropped: the `k x k` diagonal sum that
/// turns pixel products into block products. Blocks outside [`Grid::active`] get `bias` (or
/// 0). With `maxes`, also `maxes[q] = max(maxes[q], dst[q, ..])`.
#[allow(clippy::too_many_arguments)]
fn diagonal_sums(
    dst: &mut [f32],
    (stride, offset): (usize, usize),
    scale_bias: Option<(&[f32], &[f32])>,
    mut maxes: Option<&mut Vec<f32>>,
    products: &[f32],
    grid: Grid,
    (rows, from): (Rect, Rect),
    acc: &mut Vec<f32>,
) {
    let n = grid.padded();
    let active = grid.active();
    for i in 0..rows.len() {
        let row = &mut dst[i * stride + offset..][..n];
        let outside = match scale_bias {
            Some(_) => f32::NEG_INFINITY,
            None => 0.0,
        };
        row[..active.start].fill(outside);
        row[active.end..].fill(outside);
    }
    acc.resize(SUM_BLOCK, 0.0);
    for start in active.clone().step_by(SUM_BLOCK) {
        let len = SUM_BLOCK.min(active.end - start);
        sum_block(
            dst,
            (stride, offset + start),
            scale_bias.map(|(a, b)| (&a[start..start + len], &b[start..start + len])),
            maxes.as_deref_mut().map(Vec::as_mut_slice),
            (products, n, start),
            grid,
            (rows, from),
            &mut acc[..len],
        );
    }
}

/// For chunks `start..start + cols` of a level's active padded blocks:
/// `chunk[p, j - start] = Σ_o src[p-o, offset + j - oy·wp - ox]` for the pixels `p` of `rows`
/// (`src` holds rows of `from` with `stride`; weights are zero in the pads), and
/// `consume(start, cols, chunk)` while the chunk (`[rows pixels, cols]`) is in L2: the adjoint
/// of [`diagonal_sums`], which spreads each block's weight over the pixels it covers.
fn spread_chunks(
    chunk: &mut Vec<f32>,
    (src, stride, offset): (&[f32], usize, usize),
    grid: Grid,
    (rows, from): (Rect, Rect),
    mut consume: impl FnMut(usize, usize, &[f32]),
) {
    let active = grid.active();
    let per_chunk = (SPREAD_CHUNK_FLOATS / rows.len().max(1)).max(16);
    for start in active.clone().step_by(per_chunk) {
        let cols = per_chunk.min(active.end - start);
        chunk.resize(rows.len() * cols, 0.0);
        spread_block(chunk, (src, stride, offset + start), grid, (rows, from));
        consume(start, cols, chunk);
    }
}

// The element-wise parts of the kernel, compiled for AVX-512, AVX2 + FMA and the baseline and
// picked at run time (`ops::isa`): the compiler vectorises each copy at its width.
crate::dispatch_isa! {
    #[allow(clippy::too_many_arguments)]
    fn sum_block(
        dst: &mut [f32],
        place: (usize, usize),
        scale_bias: Option<(&[f32], &[f32])>,
        maxes: Option<&mut [f32]>,
        products: (&[f32], usize, usize),
        grid: Grid,
        rects: (Rect, Rect),
        acc: &mut [f32],
    ) {
        sum_block_impl(dst, place, scale_bias, maxes, products, grid, rects, acc)
    }
}

crate::dispatch_isa! {
    fn spread_block(
        dst: &mut [f32],
        src: (&[f32], usize, usize),
        grid: Grid,
        rects: (Rect, Rect),
    ) {
        spread_block_impl(dst, src, grid, rects)
    }
}

crate::dispatch_isa! {
    fn normalise(row: &mut [f32], max: f32, normalisation: Normalisation) {
        normalise_impl(row, max, normalisation)
    }
}

/// `rows[i, c] = planes[c, pixel i of rect]`: the pixels of `rect` as rows of `channels`.
fn gather_rows(rows: &mut Vec<f32>, planes: &[f32], channels: usize, rect: Rect, width: usize) {
    let plane = planes.len() / channels.max(1);
    rows.clear();
    rows.resize(rect.len() * channels, 0.0);
    for (i, (y, x)) in rect.pixels().enumerate() {
        let pixel = y as usize * width + x as usize;
        for c in 0..channels {
            rows[i * channels + c] = planes[c * plane + pixel];
        }
    }
}

/// One block of [`diagonal_sums`]: `acc.len()` padded blocks from `start` (of `products`, rows
/// of `n`), written at `dst[i * stride + column ..]` for the pixels `i` of `rows`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn sum_block_impl(
    dst: &mut [f32],
    (stride, column): (usize, usize),
    scale_bias: Option<(&[f32], &[f32])>,
    mut maxes: Option<&mut [f32]>,
    (products, n, start): (&[f32], usize, usize),
    grid: Grid,
    (rows, from): (Rect, Rect),
    acc: &mut [f32],
) {
    let (r, wp) = (grid.r as isize, grid.wp() as isize);
    let len = acc.len();
    for (i, (qy, qx)) in rows.pixels().enumerate() {
        acc.fill(0.0);
        for oy in -r..=r {
            for ox in -r..=r {
                if !from.contains(qy + oy, qx + ox) {
                    continue;
                }
                let at = from.index(qy + oy, qx + ox) * n;
                let shifted = (start as isize + oy * wp + ox) as usize;
                for (a, v) in acc.iter_mut().zip(&products[at + shifted..][..len]) {
                    *a += v;
                }
            }
        }
        let out = &mut dst[i * stride + column..][..len];
        match scale_bias {
            Some((scales, bias)) => {
                for (((o, a), s), b) in out.iter_mut().zip(acc.iter()).zip(scales).zip(bias) {
                    *o = s * a + b;
                }
            }
            None => out.copy_from_slice(acc),
        }
        if let Some(maxes) = maxes.as_deref_mut() {
            maxes[i] = maxes[i].max(max_of(out));
        }
    }
}

/// One chunk of [`spread_chunks`]: `dst[i, j] = Σ_o src[(p-o) row, column + j - oy·wp - ox]`
/// for the pixels `p` (index `i`) of `rows`, `dst` being `[rows pixels, cols]`.
#[inline(always)]
fn spread_block_impl(
    dst: &mut [f32],
    (src, src_stride, column): (&[f32], usize, usize),
    grid: Grid,
    (rows, from): (Rect, Rect),
) {
    let (r, wp) = (grid.r as isize, grid.wp() as isize);
    let cols = dst.len() / rows.len().max(1);
    for (row, (py, px)) in dst.chunks_exact_mut(cols).zip(rows.pixels()) {
        row.fill(0.0);
        for oy in -r..=r {
            for ox in -r..=r {
                if !from.contains(py - oy, px - ox) {
                    continue;
                }
                let at = from.index(py - oy, px - ox) * src_stride;
                let shifted = (column as isize - oy * wp - ox) as usize;
                for (d, v) in row.iter_mut().zip(&src[at + shifted..][..cols]) {
                    *d += v;
                }
            }
        }
    }
}

/// The largest element (`-inf` for none), in 16 lanes: a sequential fold is one long dependency
/// chain that no compiler may reorder.
#[inline(always)]
fn max_of(row: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(*v);
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` with `accumulate`) for an `m x k` and a `k x n`
/// matrix, each given by its slice, row stride and column stride; single-threaded (the
/// kernel parallelises over tiles).
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, n, dst_rs, dst_cs) < dst.len());
    if k > 0 {
        assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len());
        assert!(last(k, n, rhs_rs, rhs_cs) < rhs.len());
    }
    // SAFETY: the asserts above keep every index the strides reach inside the slices, and
    // `dst` is borrowed mutably, so it overlaps neither input.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// One row of scores to weights, in place, given the row's largest score `max`:
/// `e = exp(s - max)`, `w = e / Σe`; hard attention keeps `w == max w` as 1 and the rest as 0
/// (what `softmax(..) == max(softmax(..))` gives).
#[inline(always)]
fn normalise_impl(row: &mut [f32], max: f32, normalisation: Normalisation) {
    const LANES: usize = 16;
    // The exponentials and their sum in one pass, the sum in 16 lanes (then the lanes in order).
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *v = exp_non_positive(*v - max);
            *s += *v;
        }
    }
    let mut rest: f32 = 0.0;
    for v in chunks.into_remainder() {
        *v = exp_non_positive(*v - max);
        rest += *v;
    }
    let sum = lanes.iter().sum::<f32>() + rest;
    match normalisation {
        Normalisation::Softmax => {
            let inverse = 1.0 / sum;
            for v in row.iter_mut() {
                *v *= inverse;
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
/// returns 0, so the `-inf` scores of the grid's pads get weight exactly 0.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer, which the low mantissa bits then hold.
    const ROUND: f32 = 12_582_912.0;
    let underflow = x < -87.0;
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
    let value = exp_r * f32::from_bits(((n_bits + 127) << 23) as u32);
    if underflow {
        0.0
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(exp_non_positive(-88.0), 0.0);
        assert_eq!(exp_non_positive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn tiles_shrink_with_the_budget() {
        assert_eq!(tile_side(100, 1, 1 << 30), 16);
        assert_eq!(tile_side(1000, 1, 4 * 1000 * 36), 4);
        assert_eq!(tile_side(1000, 1, 1), 1);
    }

    #[test]
    fn padding_round_trips_and_shifts_stay_inside() {
        let grid = Grid { h: 3, w: 4, r: 1 };
        let planes: Vec<f32> = (0..24).map(|v| v as f32 + 1.0).collect();
        let padded = grid.pad(&planes, 2);
        assert_eq!(padded.len(), 2 * 5 * 6);
        assert_eq!(padded.iter().filter(|v| **v == 0.0).count(), 2 * (30 - 12));
        assert_eq!(grid.unpad(&padded), planes);
        let active = grid.active();
        let reach = grid.r * grid.wp() + grid.r;
        assert_eq!(active.start, reach);
        assert_eq!(active.end + reach, grid.padded());
        for y in 0..grid.h {
            assert!(active.contains(&grid.real_row(y)));
            assert!(active.contains(&(grid.real_row(y) + grid.w - 1)));
        }
    }
}
