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
    let context = Context::new(problem);
    let tiles = context.tiles(budget_bytes);
    let results: Vec<(Rect, Vec<f32>)> = tiles
        .into_par_iter()
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
            let mut partial = Partial::new(problem);
            let mut buffers = Buffers::default();
            for &tile in chunk {
                context.tile_backward(tile, grad_out, &mut buffers, &mut partial);
            }
            partial
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut total = partials.next().unwrap_or_else(|| Partial::new(problem));
    for partial in partials {
        total.add(partial);
    }
    let query = rows_to_planes(&total.query_rows, problem.match_channels, height, width);
    // a_l = scale / max(n_l, escape) with n_l the norm of key block l: where n_l > escape,
    // ∂a_l/∂g[c, l+o] = -a_l g[c, l+o] / n_l², so ∂g[c, l'] += g[c, l'] Σ_o κ[l'-o] with
    // κ_l = -∂a_l a_l / n_l².
    let mut keys = total.keys;
    for (s, level) in problem.levels.iter().enumerate() {
        let (h, w) = (level.height, level.width);
        let kappa: Vec<f32> = (0..h * w)
            .map(|l| {
                let norm = context.norms[s][l];
                if norm > problem.escape {
                    let a = context.scales[s][l];
                    -total.scales[s][l] * a / (norm * norm)
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
        values: total.values,
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

/// One worker's share of the backward: sums over its tiles.
struct Partial {
    /// `∂g^s`, `[C', h*w]` per level.
    keys: Vec<Vec<f32>>,
    /// `∂θ^s`, `[C, h*w]` per level.
    values: Vec<Vec<f32>>,
    /// `∂a^s`, `[h*w]` per level.
    scales: Vec<Vec<f32>>,
    /// `∂f` rows of each finished tile.
    query_rows: Vec<(Rect, Vec<f32>)>,
}

impl Partial {
    fn new(problem: &Problem) -> Partial {
        let sizes = problem.levels.iter().map(|l| l.height * l.width);
        Partial {
            keys: sizes
                .clone()
                .map(|b| vec![0.0; problem.match_channels * b])
                .collect(),
            values: sizes
                .clone()
                .map(|b| vec![0.0; problem.channels * b])
                .collect(),
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
    /// `G` (or `E`) of one level, `[2r-halo pixels, h*w]`.
    products: Vec<f32>,
    /// Scores, then weights, of the `r`-halo pixels over all levels, `[pixels, L]`.
    weights: Vec<f32>,
    /// `W̃` (or `∂G`) of one level, `[tile pixels, h*w]`.
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
    /// `‖g block‖` per level.
    norms: Vec<Vec<f32>>,
    /// `a_l` per level.
    scales: Vec<Vec<f32>>,
    /// First column of each level in a row of scores.
    offsets: Vec<usize>,
    /// `L`, blocks of all levels.
    total: usize,
    radius: usize,
}

impl<'a> Context<'a> {
    fn new(problem: &'a Problem<'a>) -> Context<'a> {
        assert!(problem.ksize % 2 == 1, "ksize must be odd");
        let pixels = problem.height * problem.width;
        assert_eq!(problem.query.len(), problem.match_channels * pixels);
        let radius = problem.ksize / 2;
        let norms: Vec<Vec<f32>> = problem
            .levels
            .iter()
            .map(|level| key_norms(level, radius))
            .collect();
        let scales = norms
            .iter()
            .map(|level| {
                level
                    .iter()
                    .map(|n| problem.softmax_scale / n.max(problem.escape))
                    .collect()
            })
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
        let total = problem.levels.iter().map(|l| l.height * l.width).sum();
        Context {
            problem,
            norms,
            scales,
            offsets,
            total,
            radius,
        }
    }

    /// Square query tiles covering the image, as large as `budget_bytes` of halo-extended
    /// score rows allow.
    fn tiles(&self, budget_bytes: usize) -> Vec<Rect> {
        let (height, width) = (self.problem.height, self.problem.width);
        let side = tile_side(self.total, self.radius, budget_bytes).min(height.max(width));
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
        gather_rows(&mut buffers.query, p.query, cq, halo2, width);

        // Scores S[q, l] for the r-halo pixels q, level by level.
        buffers.weights.clear();
        buffers.weights.resize(halo.len() * self.total, 0.0);
        for (s, level) in p.levels.iter().enumerate() {
            let (h, w) = (level.height, level.width);
            let blocks = h * w;
            buffers.products.resize(halo2.len() * blocks, 0.0);
            // G = f rows [pixels, C'] x g [C', h*w]
            matmul(
                (halo2.len(), blocks, cq),
                &mut buffers.products,
                (blocks, 1),
                false,
                &buffers.query,
                (cq, 1),
                level.keys,
                (blocks, 1),
            );
            let offset = self.offsets[s];
            gather_diagonal(
                &mut buffers.weights,
                self.total,
                offset,
                &buffers.products,
                halo,
                halo2,
                (h, w),
                self.radius,
            );
            scale_columns(&mut buffers.weights, self.total, offset, &self.scales[s]);
        }
        if keep_scores {
            buffers.scores.clear();
            for (y, x) in tile.pixels() {
                let at = halo.index(y, x) * self.total;
                buffers
                    .scores
                    .extend_from_slice(&buffers.weights[at..at + self.total]);
            }
        }
        for row in buffers.weights.chunks_exact_mut(self.total) {
            normalise(row, p.normalisation);
        }
        (halo, halo2)
    }

    /// The output rows `[tile pixels, C]` of one tile.
    fn tile(&self, tile: Rect, buffers: &mut Buffers) -> Vec<f32> {
        let p = self.problem;
        let (halo, _) = self.weights(tile, buffers, false);
        // W̃ per level, and out[p, c] += W̃ [tile, h*w] x θᵀ [h*w, C].
        let channels = p.channels;
        let mut out = vec![0.0f32; tile.len() * channels];
        for (s, level) in p.levels.iter().enumerate() {
            let (h, w) = (level.height, level.width);
            let blocks = h * w;
            spread_diagonal(
                &mut buffers.spread,
                &buffers.weights,
                self.total,
                self.offsets[s],
                tile,
                halo,
                (h, w),
                self.radius,
            );
            matmul(
                (tile.len(), channels, blocks),
                &mut out,
                (channels, 1),
                true,
                &buffers.spread,
                (blocks, 1),
                level.values,
                (1, blocks),
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

        // ∂θ^s += dOut[tile]ᵀ [C, tile] x W̃ [tile, h*w].
        for (s, level) in p.levels.iter().enumerate() {
            let (h, w) = (level.height, level.width);
            let blocks = h * w;
            spread_diagonal(
                &mut buffers.spread,
                &buffers.weights,
                total,
                self.offsets[s],
                tile,
                halo,
                (h, w),
                self.radius,
            );
            matmul(
                (channels, blocks, tile.len()),
                &mut partial.values[s],
                (blocks, 1),
                true,
                &grad_tile,
                (1, channels),
                &buffers.spread,
                (blocks, 1),
            );
        }
        if !soft {
            // The arg-max mask is constant: no gradient reaches f or g.
            return;
        }

        // ∂W for the r-halo pixels: D(E), E = dOut rows [2r-halo, C] x θ [C, h*w].
        buffers.grad_weights.clear();
        buffers.grad_weights.resize(halo.len() * total, 0.0);
        for (s, level) in p.levels.iter().enumerate() {
            let (h, w) = (level.height, level.width);
            let blocks = h * w;
            buffers.products.resize(halo2.len() * blocks, 0.0);
            matmul(
                (halo2.len(), blocks, channels),
                &mut buffers.products,
                (blocks, 1),
                false,
                &buffers.grad_rows,
                (channels, 1),
                level.values,
                (blocks, 1),
            );
            gather_diagonal(
                &mut buffers.grad_weights,
                total,
                self.offsets[s],
                &buffers.products,
                halo,
                halo2,
                (h, w),
                self.radius,
            );
        }
        // ∂S = W (∂W - ρ) through the softmax; ∂a from the tile's own rows; then a ⊙ ∂S.
        for (i, (y, x)) in halo.pixels().enumerate() {
            let weights = &buffers.weights[i * total..(i + 1) * total];
            let grads = &mut buffers.grad_weights[i * total..(i + 1) * total];
            let rho: f32 = weights.iter().zip(grads.iter()).map(|(w, g)| w * g).sum();
            for (g, w) in grads.iter_mut().zip(weights) {
                *g = w * (*g - rho);
            }
            let own = tile.contains(y, x).then(|| tile.index(y, x));
            for (s, scales) in self.scales.iter().enumerate() {
                let range = self.offsets[s]..self.offsets[s] + scales.len();
                let grads = &mut grads[range.clone()];
                if let Some(j) = own {
                    let scores = &buffers.scores[j * total..][range];
                    for (((da, g), score), a) in partial.scales[s]
                        .iter_mut()
                        .zip(grads.iter())
                        .zip(scores)
                        .zip(scales)
                    {
                        *da += g * score / a;
                    }
                }
                for (g, a) in grads.iter_mut().zip(scales) {
                    *g *= a;
                }
            }
        }
        // ∂G for the tile's pixels = Dᵀ(a ⊙ ∂S); ∂f += ∂G g^sᵀ; ∂g^s += f[tile]ᵀ ∂G.
        let query_tile = own_rows(&buffers.query, cq);
        let mut grad_query = vec![0.0f32; tile.len() * cq];
        for (s, level) in p.levels.iter().enumerate() {
            let (h, w) = (level.height, level.width);
            let blocks = h * w;
            spread_diagonal(
                &mut buffers.spread,
                &buffers.grad_weights,
                total,
                self.offsets[s],
                tile,
                halo,
                (h, w),
                self.radius,
            );
            matmul(
                (tile.len(), cq, blocks),
                &mut grad_query,
                (cq, 1),
                true,
                &buffers.spread,
                (blocks, 1),
                level.keys,
                (1, blocks),
            );
            matmul(
                (cq, blocks, tile.len()),
                &mut partial.keys[s],
                (blocks, 1),
                true,
                &query_tile,
                (1, cq),
                &buffers.spread,
                (blocks, 1),
            );
        }
        partial.query_rows.push((tile, grad_query));
    }
}

// The element-wise parts of the kernel, compiled for AVX-512, AVX2 + FMA and the baseline and
// picked at run time (`ops::isa`): the compiler vectorises each copy at its width.
crate::dispatch_isa! {
    #[allow(clippy::too_many_arguments)]
    fn gather_diagonal(
        dst: &mut [f32],
        stride: usize,
        offset: usize,
        src: &[f32],
        rows: Rect,
        from: Rect,
        level: (usize, usize),
        radius: usize,
    ) {
        gather_diagonal_impl(dst, stride, offset, src, rows, from, level, radius)
    }
}

crate::dispatch_isa! {
    #[allow(clippy::too_many_arguments)]
    fn spread_diagonal(
        dst: &mut Vec<f32>,
        src: &[f32],
        stride: usize,
        offset: usize,
        rows: Rect,
        from: Rect,
        level: (usize, usize),
        radius: usize,
    ) {
        spread_diagonal_impl(dst, src, stride, offset, rows, from, level, radius)
    }
}

crate::dispatch_isa! {
    fn scale_columns(rows: &mut [f32], stride: usize, offset: usize, scales: &[f32]) {
        scale_columns_impl(rows, stride, offset, scales)
    }
}

crate::dispatch_isa! {
    fn normalise(row: &mut [f32], normalisation: Normalisation) {
        normalise_impl(row, normalisation)
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

/// `dst[q, offset + l] += Σ_o src[q+o, l+o]` for the pixels `q` of `rows` and the blocks `l` of
/// one `h x w` level, with `o ∈ [-r, r]²`, `src` holding `[pixels of from, h*w]` and terms
/// outside the image (`q+o` not in `from`, which must contain `rows` grown by `r` clipped to
/// the image) or outside the level dropped: the `k x k` diagonal sum that turns pixel
/// products into block products.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gather_diagonal_impl(
    dst: &mut [f32],
    stride: usize,
    offset: usize,
    src: &[f32],
    rows: Rect,
    from: Rect,
    (h, w): (usize, usize),
    radius: usize,
) {
    let r = radius as isize;
    let blocks = h * w;
    for ky in 0..h as isize {
        for (i, (qy, qx)) in rows.pixels().enumerate() {
            let start = i * stride + offset + ky as usize * w;
            let row = &mut dst[start..start + w];
            for oy in -r..=r {
                if ky + oy < 0 || ky + oy >= h as isize {
                    continue;
                }
                for ox in -r..=r {
                    if !from.contains(qy + oy, qx + ox) {
                        continue;
                    }
                    let at = from.index(qy + oy, qx + ox) * blocks + (ky + oy) as usize * w;
                    add_shifted(row, &src[at..at + w], ox);
                }
            }
        }
    }
}

/// `dst[p, l'] += Σ_o src[p-o, offset + l'-o]` for the pixels `p` of `rows` and the blocks `l'`
/// of one level (`dst` is `[pixels of rows, h*w]`, `src` rows of `from` with `stride`): the
/// adjoint of [`gather_diagonal`], which spreads each block's weight over the pixels it covers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn spread_diagonal_impl(
    dst: &mut Vec<f32>,
    src: &[f32],
    stride: usize,
    offset: usize,
    rows: Rect,
    from: Rect,
    (h, w): (usize, usize),
    radius: usize,
) {
    let r = radius as isize;
    let blocks = h * w;
    dst.clear();
    dst.resize(rows.len() * blocks, 0.0);
    for ky in 0..h as isize {
        for (i, (py, px)) in rows.pixels().enumerate() {
            let start = i * blocks + ky as usize * w;
            let row = &mut dst[start..start + w];
            for oy in -r..=r {
                if ky - oy < 0 || ky - oy >= h as isize {
                    continue;
                }
                for ox in -r..=r {
                    if !from.contains(py - oy, px - ox) {
                        continue;
                    }
                    let at =
                        from.index(py - oy, px - ox) * stride + offset + (ky - oy) as usize * w;
                    add_shifted(row, &src[at..at + w], -ox);
                }
            }
        }
    }
}

/// Multiplies the columns `offset..offset + scales.len()` of every row by `scales`.
#[inline(always)]
fn scale_columns_impl(rows: &mut [f32], stride: usize, offset: usize, scales: &[f32]) {
    for row in rows.chunks_exact_mut(stride) {
        for (v, a) in row[offset..offset + scales.len()].iter_mut().zip(scales) {
            *v *= a;
        }
    }
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

/// `row[i] += from[i + shift]` wherever `i + shift` is inside `from` (both `row.len()` long).
#[inline(always)]
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
#[inline(always)]
fn normalise_impl(row: &mut [f32], normalisation: Normalisation) {
    const LANES: usize = 16;
    // Max and sum in 16 lanes (then the lanes in order): a sequential fold is one long
    // dependency chain that no compiler may reorder.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(*v);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for v in row.iter_mut() {
        *v = exp_non_positive(*v - max);
    }
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (s, v) in lanes.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    let sum: f32 = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
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
