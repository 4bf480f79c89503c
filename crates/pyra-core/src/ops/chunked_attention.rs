//! Pyramid attention in chunks of query pixels with nothing larger than a score chunk or a
//! level map, forward and backward, out of burn's own tensor operations: the bounded-memory
//! path for devices that do not have Pyra's streaming CPU kernel (the GPU backends), and for
//! strided keys.
//!
//! Algorithm. A block score is a sum over the `k²` offsets `o` of the block of pixel products,
//! `q_i·ĝ_j = Σ_o f(i+o)·g(j+o) / ‖g_δ(j)‖`, and the pasted output is a sum over offsets too,
//! `out(p) = Σ_o Σ_j φ_{p−o,j} θ(j+o)`. Laying every map out flat on a zero-padded *canvas*
//! (rows of one common width, each level's rows below the previous level's, at least `k/2`
//! zero rows and columns around each) turns every shift by an offset into a contiguous slice
//! of the canvas at a constant distance `dy·width + dx`, the same for all levels. So for a
//! chunk of `r` query positions and the `R` canvas positions of the keys:
//!
//! ```text
//!   raw   = Σ_o  F_oᵀ · G[· + o]                  [N, r, R]   k² matmuls of depth C/2
//!   S     = scale · raw ⊙ n⁻¹ (+ −∞ off the keys)  n_j = max(√(box_k(Σ_c g²))_j, escape)
//!   φ     = softmax over the row (every block of every level), or the arg-max mask
//!   out[· + o] += φ · Θ[· + o]ᵀ                    k² matmuls of depth R, pasted at o
//! ```
//!
//! where `F_o`, `G[· + o]`, `Θ[· + o]` are canvas slices (queries, keys, values shifted by
//! `o`). Canvas positions that are not key-block centres (padding; with key stride `s`, all
//! but every `s`-th centre) get weight 0, as do padding positions among the queries. The
//! backward recomputes each chunk's weights and runs the same slices the other way:
//!
//! ```text
//!   dφ = Σ_o G_outᵀ[· + o] · Θ[· + o]     dΘ[· + o] += G_out[· + o] · φ
//!   dS = φ ⊙ (dφ − Σ_row φ ⊙ dφ)          d raw = scale · dS ⊙ n⁻¹,  d n⁻¹ += scale · Σ_i dS ⊙ raw
//!   dF[· + o] += G[· + o] · d rawᵀ         dG[· + o] += F_o · d raw
//! ```
//!
//! and the key norms' share, `dG += 2 g ⊙ box_k(d n⁻¹ · (−½ n⁻³) · [‖·‖ > escape])`.
//!
//! Memory: the canvases (queries, keys, values, output: the level maps plus their zero
//! borders, about 1.2x with the paper's scales) and their gradients, and a few `[N, r, R]`
//! score arrays of one chunk, `r` chosen so that one holds [`ChunkSpec::budget_bytes`]. No
//! `[C·k², L]` block columns (the previous formulation of this path needed 9x the value maps
//! in one buffer, more than a Vulkan device allows in one allocation at [1, 64, 256, 256]).
//!
//! Why by hand: burn 0.22 has no memory-efficient attention for its GPU backends (its
//! `attention` op materialises the scores) and none with 3x3 block matching; the streaming
//! kernel of [`super::streaming_attention`] works on CPU slices only. Written against the
//! backend primitives, this runs on every backend; on Flex it is what the tests compare with
//! the official whole-map formulation.
//!
//! Speed: the multiply-adds of the official block products (9x the streaming kernel's pixel
//! products), in `2k²` matmuls per chunk. Measured on a 2-core AMD EPYC (Zen 3, AVX2 + FMA;
//! peak about 157 GFLOP/s at its 2.45 GHz base clock), `pyra profile --block pa --size 64
//! --device cpu` (94.5 GFLOP) with `PYRA_ATTENTION` alternating, beside a training run: this
//! path 4.7-6.0 s (16-20 GFLOP/s, about 12% of peak) and 212 MiB; the official whole map
//! through burn 2.3-2.4 s and 511 MiB; the streaming kernel 0.66-0.77 s and 74-78 MiB. On
//! the CPU it is a reference. On lavapipe (a Vulkan device on the same CPU) 2 of the 1,045
//! chunks of [1, 64, 256, 256] ran at 0.46 GFLOP/s, about the rate of lavapipe's plain matmul
//! (0.6-1.3 GFLOP/s measured); a real GPU was not available to measure.

use std::ops::Range;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::PadMode;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Flex, TensorMetadata};
use burn::tensor::{Shape, Slice, Tensor, TensorData};

use super::fused_attention::AttentionSpec;
use super::patches::same_padding;
use super::streaming_attention::Normalisation;

/// The chunked attention: [`AttentionSpec`] (levels, block size, scale, escape, arg-max or
/// softmax, and the bytes of one `[N, r, R]` score chunk in `budget_bytes`) and the key stride.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkSpec {
    pub attention: AttentionSpec,
    /// Key/value blocks every `stride` pixels of each level ("same" padding, as
    /// `extract_patches` takes them); pasting stays on the query grid.
    pub stride: usize,
    /// `Some(n)`: compute only the first `n` chunks of the forward (the other query pixels'
    /// output stays zero). For measuring a forward too long to run whole on a slow device
    /// (`pyra profile --chunks`): every chunk allocates the same buffers, so the first chunks
    /// reach the whole forward's peak memory. `None` for results.
    pub first_chunks: Option<usize>,
}

impl ChunkSpec {
    /// Bytes of one score array.
    pub fn budget_bytes(&self) -> usize {
        self.attention.budget_bytes
    }

    /// The key canvas of this spec.
    fn key_canvas(&self) -> Canvas {
        Canvas::new(&self.attention.levels, self.attention.ksize / 2)
    }

    /// Query positions per chunk for `n` samples: at least one.
    pub fn rows(&self, n: usize) -> usize {
        let keys = self.key_canvas().span().len();
        (self.budget_bytes() / (4 * n * keys).max(1)).max(1)
    }

    /// How many chunks the forward of `n` samples of an `height x width` map takes.
    pub fn chunk_count(&self, n: usize, height: usize, width: usize) -> usize {
        let queries = Canvas::new(&[(height, width)], self.attention.ksize / 2)
            .span()
            .len();
        queries.div_ceil(self.rows(n))
    }

    /// The budget that makes chunks of `rows` query positions for `n` samples (tests).
    pub fn budget_for_rows(
        levels: &[(usize, usize)],
        ksize: usize,
        n: usize,
        rows: usize,
    ) -> usize {
        rows * n * Canvas::new(levels, ksize / 2).span().len() * 4
    }
}

/// Maps laid out flat on a zero canvas: every level's rows at `width` apart, level below
/// level, with `pad + 1` zero rows above the first and below the last, `pad` between levels,
/// and at least `pad` zero columns right of every row (which, flat, are also left of the next
/// row). Any `k x k` block around a level pixel then lies on the canvas, with zeros where it
/// leaves its level, and shifting by `(dy, dx)` is adding `dy·width + dx` to flat positions.
#[derive(Clone, Debug, PartialEq)]
struct Canvas {
    width: usize,
    rows: usize,
    pad: usize,
    /// `(first row, h, w)` of each level.
    regions: Vec<(usize, usize, usize)>,
}

impl Canvas {
    fn new(levels: &[(usize, usize)], pad: usize) -> Self {
        let width = levels.iter().map(|&(_, w)| w).max().unwrap_or(0) + pad;
        let mut row = pad + 1;
        let mut regions = Vec::with_capacity(levels.len());
        for &(h, w) in levels {
            regions.push((row, h, w));
            row += h + pad;
        }
        Canvas {
            width,
            rows: row + 1,
            pad,
            regions,
        }
    }

    fn len(&self) -> usize {
        self.rows * self.width
    }

    /// Flat positions from the first pixel of the first level to the last of the last.
    fn span(&self) -> Range<usize> {
        let (first, _, _) = self.regions[0];
        let &(row, h, w) = self.regions.last().expect("at least one level");
        first * self.width..(row + h - 1) * self.width + w
    }

    /// The flat distance of each block offset `(dy, dx)`, row-major: `dy·width + dx`.
    fn offsets(&self) -> Vec<isize> {
        let p = self.pad as isize;
        (-p..=p)
            .flat_map(|dy| (-p..=p).map(move |dx| dy * self.width as isize + dx))
            .collect()
    }

    /// `range` moved by `offset` (it stays on the canvas for offsets within the block).
    fn shifted(range: &Range<usize>, offset: isize) -> Range<usize> {
        let start = range.start as isize + offset;
        let end = range.end as isize + offset;
        debug_assert!(start >= 0);
        start as usize..end as usize
    }

    /// 1.0 at the positions of `span` that hold a block centre (every `stride`-th pixel of a
    /// level, placed as "same" padding places it), 0.0 elsewhere.
    fn centres(&self, stride: usize, ksize: usize) -> Vec<f32> {
        let span = self.span();
        let mut mask = vec![0.0f32; span.len()];
        for &(row, h, w) in &self.regions {
            let (top, _) = same_padding(h, ksize, stride);
            let (left, _) = same_padding(w, ksize, stride);
            let p = ksize / 2;
            for a in 0..h.div_ceil(stride) {
                let y = a * stride + p - top;
                assert!(y < h, "block centre off its level");
                for b in 0..w.div_ceil(stride) {
                    let x = b * stride + p - left;
                    assert!(x < w, "block centre off its level");
                    mask[(row + y) * self.width + x - span.start] = 1.0;
                }
            }
        }
        mask
    }

    /// `[N, C, Σ h·w]` (the levels flattened and concatenated) onto the canvas `[N, C, len]`.
    fn pack<B: Backend>(&self, maps: FloatTensor<B>) -> FloatTensor<B> {
        let [n, c, _] = dims3::<B>(&maps);
        let last = self.regions.len() - 1;
        let mut offset = 0;
        let mut parts = Vec::with_capacity(self.regions.len());
        for (l, &(_, h, w)) in self.regions.iter().enumerate() {
            let level = B::float_reshape(
                last_columns::<B>(maps.clone(), offset..offset + h * w),
                Shape::new([n, c, h, w]),
            );
            offset += h * w;
            let top = if l == 0 { self.pad + 1 } else { 0 };
            let bottom = if l == last { self.pad + 1 } else { self.pad };
            parts.push(B::float_pad(
                level,
                &[(0, 0), (0, 0), (top, bottom), (0, self.width - w)],
                PadMode::Constant(0.0),
            ));
        }
        B::float_reshape(B::float_cat(parts, 2), Shape::new([n, c, self.len()]))
    }

    /// The inverse of [`Canvas::pack`] (and its adjoint: what lies off the levels is dropped).
    fn unpack<B: Backend>(&self, canvas: FloatTensor<B>) -> FloatTensor<B> {
        let [n, c, _] = dims3::<B>(&canvas);
        let grid = B::float_reshape(canvas, Shape::new([n, c, self.rows, self.width]));
        let levels = self
            .regions
            .iter()
            .map(|&(row, h, w)| {
                let slices: [Slice; 4] = [
                    (..).into(),
                    (..).into(),
                    (row..row + h).into(),
                    (0..w).into(),
                ];
                B::float_reshape(
                    B::float_slice(grid.clone(), &slices),
                    Shape::new([n, c, h * w]),
                )
            })
            .collect();
        B::float_cat(levels, 2)
    }
}

/// The chunked attention as a backend operation.
#[backend_extension(Flex, Cube: cfg(any(feature = "gpu", feature = "cuda")), Autodiff)]
pub trait ChunkedAttentionBackend: Backend {
    /// `query` `[N, C', H, W]`, `keys` `[N, C', L]` and `values` `[N, C, L]` (the levels' maps
    /// flattened and concatenated, not normalised) to the pasted attention output
    /// `[N, C, H, W]`, not yet divided by 4: the numbers of
    /// [`super::fused_attention::FusedAttentionBackend::fused_pyramid_attention`].
    fn chunked_pyramid_attention(
        query: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        spec: ChunkSpec,
    ) -> FloatTensor<Self>;
}

/// See [`ChunkedAttentionBackend::chunked_pyramid_attention`]; differentiable with respect to
/// all three inputs on an autodiff device, in the memory of a chunk. Hard attention's arg-max
/// mask is constant, so there queries and keys get no gradient.
pub fn chunked_pyramid_attention(
    query: Tensor<4>,
    keys: Tensor<3>,
    values: Tensor<3>,
    spec: ChunkSpec,
) -> Tensor<4> {
    let (query, keys) = match spec.attention.normalisation {
        Normalisation::Softmax => (query, keys),
        Normalisation::ArgMax => (query.detach(), keys.detach()),
    };
    let out = <burn::backend::Dispatch as ChunkedAttentionBackend>::chunked_pyramid_attention(
        query.into_dispatch(),
        keys.into_dispatch(),
        values.into_dispatch(),
        spec,
    );
    Tensor::from_dispatch(out)
}

fn dims3<B: Backend>(tensor: &FloatTensor<B>) -> [usize; 3] {
    let shape = tensor.shape();
    [shape[0], shape[1], shape[2]]
}

/// Positions `range` of the last dimension of `[N, X, P]`.
fn last_columns<B: Backend>(tensor: FloatTensor<B>, range: Range<usize>) -> FloatTensor<B> {
    let slices: [Slice; 3] = [(..).into(), (..).into(), range.into()];
    B::float_slice(tensor, &slices)
}

/// `tensor[.., .., range] += value`.
fn add_columns<B: Backend>(
    tensor: FloatTensor<B>,
    range: Range<usize>,
    value: FloatTensor<B>,
) -> FloatTensor<B> {
    let slices: [Slice; 3] = [(..).into(), (..).into(), range.into()];
    let sum = B::float_add(B::float_slice(tensor.clone(), &slices), value);
    B::float_slice_assign(tensor, &slices, sum)
}

fn swap<B: Backend>(tensor: FloatTensor<B>) -> FloatTensor<B> {
    B::float_swap_dims(tensor, 1, 2)
}

/// `[1, 1, len]` holding `values`, on `like`'s device.
fn row<B: Backend>(values: Vec<f32>, like: &FloatTensor<B>) -> FloatTensor<B> {
    let len = values.len();
    let data = TensorData::new(values, [1, 1, len]).convert_dtype(like.dtype());
    B::float_from_data(data, &like.device())
}

fn expand<B: Backend>(tensor: FloatTensor<B>, dims: [usize; 3]) -> FloatTensor<B> {
    B::float_expand(tensor, Shape::new(dims))
}

/// Everything a chunk needs, laid out on canvases.
struct Layout<B: Backend> {
    n: usize,
    /// The query grid (one level, `H x W`) and the key grid (every level).
    queries: Canvas,
    keys: Canvas,
    /// `f`, `g`, `θ` on their canvases: `[N, C', Lq]`, `[N, C', Lk]`, `[N, C, Lk]`.
    query: FloatTensor<B>,
    key: FloatTensor<B>,
    value: FloatTensor<B>,
    /// `scale / n_j` at block centres, 0 elsewhere: `[N, 1, R]` over the key span.
    inverse_norms: FloatTensor<B>,
    /// The key norms before the clamp, `√box(Σ_c g²)`, `[N, 1, R]` (for the backward).
    norms: FloatTensor<B>,
    /// 0 at block centres, −1e30 elsewhere: `[1, 1, R]`.
    bias: FloatTensor<B>,
    /// 1.0 at the query canvas positions that are pixels, 0 elsewhere: `[1, Lq, 1]`.
    query_mask: FloatTensor<B>,
    /// The block offsets on each canvas.
    query_offsets: Vec<isize>,
    key_offsets: Vec<isize>,
    rows: usize,
}

impl<B: Backend> Layout<B> {
    fn new(
        query: FloatTensor<B>,
        keys: FloatTensor<B>,
        values: FloatTensor<B>,
        spec: &ChunkSpec,
    ) -> Self {
        let attention = &spec.attention;
        assert!(attention.ksize % 2 == 1, "ksize must be odd");
        let shape = query.shape();
        let [n, match_channels, height, width] = [shape[0], shape[1], shape[2], shape[3]];
        let pad = attention.ksize / 2;
        let queries = Canvas::new(&[(height, width)], pad);
        let key_canvas = spec.key_canvas();
        assert_eq!(
            attention.levels.iter().map(|(h, w)| h * w).sum::<usize>(),
            dims3::<B>(&keys)[2],
            "levels and key columns disagree"
        );
        let query = queries.pack::<B>(B::float_reshape(
            query,
            Shape::new([n, match_channels, height * width]),
        ));
        let key = key_canvas.pack::<B>(keys);
        let value = key_canvas.pack::<B>(values);
        let span = key_canvas.span();
        let key_offsets = key_canvas.offsets();
        // n_j² = the k x k box sum of Σ_c g² around each canvas position.
        let squares = B::float_sum_dim(B::float_mul(key.clone(), key.clone()), 1);
        let box_sum = key_offsets
            .iter()
            .map(|&o| last_columns::<B>(squares.clone(), Canvas::shifted(&span, o)))
            .reduce(B::float_add)
            .expect("at least one offset");
        let norms = B::float_sqrt(box_sum);
        let centres = row::<B>(key_canvas.centres(spec.stride, attention.ksize), &norms);
        let r = span.len();
        let inverse_norms = B::float_mul(
            B::float_mul_scalar(
                B::float_recip(B::float_clamp_min(norms.clone(), attention.escape.into())),
                attention.softmax_scale.into(),
            ),
            expand::<B>(centres.clone(), [n, 1, r]),
        );
        // −1e30 off the centres: exp of it is exactly 0 after the row maximum is taken.
        let bias = B::float_mul_scalar(B::float_sub_scalar(centres, 1.0.into()), 1e30.into());
        let mut query_mask = vec![0.0f32; queries.len()];
        let (row0, _, _) = queries.regions[0];
        for y in 0..height {
            let start = (row0 + y) * queries.width;
            query_mask[start..start + width].fill(1.0);
        }
        let query_mask = B::float_reshape(
            row::<B>(query_mask, &norms),
            Shape::new([1, queries.len(), 1]),
        );
        let query_offsets = queries.offsets();
        let rows = spec.rows(n);
        Layout {
            n,
            queries,
            keys: key_canvas,
            query,
            key,
            value,
            inverse_norms,
            norms,
            bias,
            query_mask,
            query_offsets,
            key_offsets,
            rows,
        }
    }

    /// The query chunks: flat ranges of the query canvas from its first pixel to its last.
    fn chunks(&self) -> Vec<Range<usize>> {
        let span = self.queries.span();
        (span.start..span.end)
            .step_by(self.rows)
            .map(|start| start..(start + self.rows).min(span.end))
            .collect()
    }

    /// `Σ_o X[chunk + o]ᵀ · Y[span + o]`: block products of the chunk's blocks of `x` (query
    /// canvas) with every key block of `y` (key canvas), `[N, r, R]`.
    fn block_products(
        &self,
        x: &FloatTensor<B>,
        y: &FloatTensor<B>,
        chunk: &Range<usize>,
    ) -> FloatTensor<B> {
        let span = self.keys.span();
        self.query_offsets
            .iter()
            .zip(&self.key_offsets)
            .map(|(&oq, &ok)| {
                B::float_matmul(
                    swap::<B>(last_columns::<B>(x.clone(), Canvas::shifted(chunk, oq))),
                    last_columns::<B>(y.clone(), Canvas::shifted(&span, ok)),
                )
            })
            .reduce(B::float_add)
            .expect("at least one offset")
    }

    /// The chunk's raw block products `[N, r, R]` and its weights (softmax or arg-max mask,
    /// zero off the key centres and on padding queries).
    fn weights(
        &self,
        chunk: &Range<usize>,
        normalisation: Normalisation,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let raw = self.block_products(&self.query, &self.key, chunk);
        let dims = [self.n, chunk.len(), self.keys.span().len()];
        let scores = B::float_add(
            B::float_mul(raw.clone(), expand::<B>(self.inverse_norms.clone(), dims)),
            expand::<B>(self.bias.clone(), dims),
        );
        let max = expand::<B>(B::float_max_dim(scores.clone(), 2), dims);
        let exp = B::float_exp(B::float_sub(scores, max));
        let sum = expand::<B>(B::float_sum_dim(exp.clone(), 2), dims);
        let mut phi = B::float_div(exp, sum);
        if normalisation == Normalisation::ArgMax {
            // 1 where the weight is its row's maximum: 1 − sign(max − φ), max − φ >= 0.
            let best = expand::<B>(B::float_max_dim(phi.clone(), 2), dims);
            phi = B::float_neg(B::float_sub_scalar(
                B::float_sign(B::float_sub(best, phi)),
                1.0.into(),
            ));
            // Off-centre positions have φ = 0 < max, so the mask is 0 there already.
        }
        let mask = last_columns::<B>(swap::<B>(self.query_mask.clone()), chunk.clone());
        let phi = B::float_mul(phi, expand::<B>(swap::<B>(mask), dims));
        (raw, phi)
    }
}

/// The forward on any backend.
pub fn forward<B: Backend>(
    query: FloatTensor<B>,
    keys: FloatTensor<B>,
    values: FloatTensor<B>,
    spec: ChunkSpec,
) -> FloatTensor<B> {
    let shape = query.shape();
    let [height, width] = [shape[2], shape[3]];
    let channels = dims3::<B>(&values)[1];
    let layout = Layout::<B>::new(query, keys, values, &spec);
    let span = layout.keys.span();
    let device = layout.value.device();
    let mut out = B::float_zeros(
        Shape::new([layout.n, channels, layout.queries.len()]),
        &device,
        layout.value.dtype().into(),
    );
    let chunks = layout.chunks();
    let computed = spec.first_chunks.unwrap_or(chunks.len()).min(chunks.len());
    for chunk in chunks.into_iter().take(computed) {
        let (_, phi) = layout.weights(&chunk, spec.attention.normalisation);
        for (&oq, &ok) in layout.query_offsets.iter().zip(&layout.key_offsets) {
            // Σ_j φ_ij θ(j + o), pasted at i + o: [N, C, R] · [N, R, r].
            let pasted = B::float_matmul(
                last_columns::<B>(layout.value.clone(), Canvas::shifted(&span, ok)),
                swap::<B>(phi.clone()),
            );
            out = add_columns::<B>(out, Canvas::shifted(&chunk, oq), pasted);
        }
    }
    B::float_reshape(
        layout.queries.unpack::<B>(out),
        Shape::new([layout.n, channels, height, width]),
    )
}

/// Gradients of query, keys and values for the output gradient `grad` `[N, C, H, W]`, each
/// chunk's weights recomputed.
pub fn backward<B: Backend>(
    query: FloatTensor<B>,
    keys: FloatTensor<B>,
    values: FloatTensor<B>,
    grad: FloatTensor<B>,
    spec: ChunkSpec,
) -> [FloatTensor<B>; 3] {
    let query_shape = query.shape();
    let keys_shape = keys.shape();
    let values_shape = values.shape();
    let [n, channels, height, width] = [
        values_shape[0],
        values_shape[1],
        query_shape[2],
        query_shape[3],
    ];
    let layout = Layout::<B>::new(query, keys, values, &spec);
    let span = layout.keys.span();
    let r = span.len();
    let device = layout.value.device();
    let dtype = layout.value.dtype();
    let zeros = |dims: [usize; 3]| B::float_zeros(Shape::new(dims), &device, dtype.into());
    let grad_out = layout.queries.pack::<B>(B::float_reshape(
        grad,
        Shape::new([n, channels, height * width]),
    ));
    let match_channels = query_shape[1];
    let mut grad_query = zeros([n, match_channels, layout.queries.len()]);
    let mut grad_key = zeros([n, match_channels, layout.keys.len()]);
    let mut grad_value = zeros([n, channels, layout.keys.len()]);
    let mut grad_inverse = zeros([n, 1, r]);
    assert!(
        spec.first_chunks.is_none(),
        "a sampled forward (first_chunks) has no backward"
    );
    let soft = spec.attention.normalisation == Normalisation::Softmax;
    let pairs: Vec<(isize, isize)> = layout
        .query_offsets
        .iter()
        .copied()
        .zip(layout.key_offsets.iter().copied())
        .collect();
    for chunk in layout.chunks() {
        let (raw, phi) = layout.weights(&chunk, spec.attention.normalisation);
        // dΘ[span + o] += G_out[chunk + o] · φ
        for &(oq, ok) in &pairs {
            let g = last_columns::<B>(grad_out.clone(), Canvas::shifted(&chunk, oq));
            grad_value = add_columns::<B>(
                grad_value,
                Canvas::shifted(&span, ok),
                B::float_matmul(g, phi.clone()),
            );
        }
        if !soft {
            continue;
        }
        let dims = [n, chunk.len(), r];
        // dφ = Σ_o G_out[chunk + o]ᵀ · Θ[span + o]; dS = φ ⊙ (dφ − Σ_row φ ⊙ dφ)
        let d_phi = layout.block_products(&grad_out, &layout.value, &chunk);
        let dot = expand::<B>(
            B::float_sum_dim(B::float_mul(phi.clone(), d_phi.clone()), 2),
            dims,
        );
        let d_scores = B::float_mul(phi, B::float_sub(d_phi, dot));
        // d(scale/n) += Σ_i dS ⊙ raw; d raw = dS ⊙ scale/n
        grad_inverse = B::float_add(
            grad_inverse,
            B::float_sum_dim(B::float_mul(d_scores.clone(), raw), 1),
        );
        let d_raw = B::float_mul(d_scores, expand::<B>(layout.inverse_norms.clone(), dims));
        for &(oq, ok) in &pairs {
            let keys = last_columns::<B>(layout.key.clone(), Canvas::shifted(&span, ok));
            let queries = last_columns::<B>(layout.query.clone(), Canvas::shifted(&chunk, oq));
            // dF[chunk + o] += G[span + o] · d rawᵀ;  dG[span + o] += F[chunk + o] · d raw
            grad_query = add_columns::<B>(
                grad_query,
                Canvas::shifted(&chunk, oq),
                B::float_matmul(keys, swap::<B>(d_raw.clone())),
            );
            grad_key = add_columns::<B>(
                grad_key,
                Canvas::shifted(&span, ok),
                B::float_matmul(queries, d_raw.clone()),
            );
        }
    }
    if soft {
        // inverse = scale · c / max(norm, escape) (c: centre mask). Where norm > escape,
        // d inverse / d box = −½ · scale · c / norm³ = −½ · inverse³ / scale²; else 0.
        let scale = spec.attention.softmax_scale;
        let inverse = layout.inverse_norms.clone();
        let above = B::float_clamp_min(
            B::float_sign(B::float_sub_scalar(
                layout.norms.clone(),
                spec.attention.escape.into(),
            )),
            0.0.into(),
        );
        let cubed = B::float_mul(B::float_mul(inverse.clone(), inverse.clone()), inverse);
        let d_box = B::float_mul(
            B::float_mul(
                grad_inverse,
                B::float_mul_scalar(cubed, (-0.5 / (scale * scale)).into()),
            ),
            above,
        );
        // The box sum's adjoint: every position of a block gets its centre's d_box.
        let mut d_squares = zeros([n, 1, layout.keys.len()]);
        for &ok in &layout.key_offsets {
            d_squares = add_columns::<B>(d_squares, Canvas::shifted(&span, ok), d_box.clone());
        }
        let dims = [n, match_channels, layout.keys.len()];
        grad_key = B::float_add(
            grad_key,
            B::float_mul(
                B::float_mul_scalar(layout.key.clone(), 2.0.into()),
                expand::<B>(d_squares, dims),
            ),
        );
    }
    [
        B::float_reshape(layout.queries.unpack::<B>(grad_query), query_shape),
        B::float_reshape(layout.keys.unpack::<B>(grad_key), keys_shape),
        B::float_reshape(layout.keys.unpack::<B>(grad_value), values_shape),
    ]
}

impl ChunkedAttentionBackend for Flex {
    fn chunked_pyramid_attention(
        query: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        spec: ChunkSpec,
    ) -> FloatTensor<Self> {
        forward::<Self>(query, keys, values, spec)
    }
}

#[cfg(any(feature = "gpu", feature = "cuda"))]
impl ChunkedAttentionBackend for burn::backend::Cube {
    fn chunked_pyramid_attention(
        query: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        spec: ChunkSpec,
    ) -> FloatTensor<Self> {
        forward::<Self>(query, keys, values, spec)
    }
}

/// The recorded operation; its state is the three inputs and the spec.
#[derive(Debug)]
struct ChunkedAttentionBackward;

impl<B: ChunkedAttentionBackend> Backward<B, 3> for ChunkedAttentionBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, ChunkSpec);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [query_node, keys_node, values_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (query, keys, values, spec) = ops.state;
        let [grad_query, grad_keys, grad_values] = backward::<B>(query, keys, values, grad, spec);
        if let Some(node) = query_node {
            grads.register::<B>(node.id, grad_query);
        }
        if let Some(node) = keys_node {
            grads.register::<B>(node.id, grad_keys);
        }
        if let Some(node) = values_node {
            grads.register::<B>(node.id, grad_values);
        }
    }
}

impl<B: ChunkedAttentionBackend, C: CheckpointStrategy> ChunkedAttentionBackend for Autodiff<B, C> {
    fn chunked_pyramid_attention(
        query: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        spec: ChunkSpec,
    ) -> FloatTensor<Self> {
        let (query, query_node) = query.into_parts();
        let (keys, keys_node) = keys.into_parts();
        let (values, values_node) = values.into_parts();
        match ChunkedAttentionBackward
            .prepare::<C>([query_node, keys_node, values_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (query.clone(), keys.clone(), values.clone(), spec.clone());
                let out = B::chunked_pyramid_attention(query, keys, values, spec);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::chunked_pyramid_attention(query, keys, values, spec))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_around_level_pixels_stay_on_the_canvas_and_levels_do_not_touch() {
        let levels = [(5, 7), (4, 6), (2, 3)];
        let canvas = Canvas::new(&levels, 1);
        assert_eq!(canvas.width, 8);
        // Rows: 2 zero, 5, 1 zero, 4, 1 zero, 2, 2 zero.
        assert_eq!(canvas.rows, 2 + 5 + 1 + 4 + 1 + 2 + 2);
        assert_eq!(canvas.regions, vec![(2, 5, 7), (8, 4, 6), (13, 2, 3)]);
        let span = canvas.span();
        assert_eq!(span, 16..14 * 8 + 3);
        // Every offset of every block of the span stays on the canvas.
        let offsets = canvas.offsets();
        assert_eq!(offsets.len(), 9);
        for &o in &offsets {
            let moved = Canvas::shifted(&span, o);
            assert!(moved.end <= canvas.len());
        }
        // The centres are the level pixels, and nothing else.
        let centres = canvas.centres(1, 3);
        assert_eq!(
            centres.iter().filter(|&&c| c == 1.0).count(),
            5 * 7 + 4 * 6 + 2 * 3
        );
        // A pixel's 3x3 neighbours on the canvas are either its level's neighbours or
        // zero-padding: no position of one level is within a block of another's.
        let owner = |position: usize| {
            let (y, x) = (position / canvas.width, position % canvas.width);
            canvas
                .regions
                .iter()
                .position(|&(row, h, w)| y >= row && y < row + h && x < w)
        };
        for position in span.clone() {
            let Some(level) = owner(position) else {
                continue;
            };
            for &o in &offsets {
                let neighbour = (position as isize + o) as usize;
                assert!(owner(neighbour).is_none_or(|l| l == level));
            }
        }
    }

    #[test]
    fn strided_centres_are_where_same_padding_puts_them() {
        // 10 wide at stride 2: "same" pads (0, 1), blocks start at 0, 2, .., centres at 1, 3, ..
        // 9 high: pads (1, 1), centres at 0, 2, .., 8.
        let canvas = Canvas::new(&[(9, 10)], 1);
        let centres = canvas.centres(2, 3);
        let span = canvas.span();
        let at =
            |y: usize, x: usize| centres[(canvas.regions[0].0 + y) * canvas.width + x - span.start];
        assert_eq!(at(0, 1), 1.0);
        assert_eq!(at(0, 0), 0.0);
        assert_eq!(at(8, 9), 1.0);
        assert_eq!(at(1, 1), 0.0);
        assert_eq!(centres.iter().filter(|&&c| c == 1.0).count(), 5 * 5);
    }
}
