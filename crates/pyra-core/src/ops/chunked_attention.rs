//! The core of pyramid attention, `out_i = Σ_j softmax_j(s · q_i·k_j) v_j`, computed a chunk
//! of query columns at a time, forward and backward, out of burn's own tensor operations: the
//! bounded-memory path for devices that do not have Pyra's streaming CPU kernel (the GPU
//! backends).
//!
//! Algorithm. Forward: for each chunk of `r` query columns, the scores `[N, L, r]`, their
//! softmax over the `L` keys (exact: the whole row is in the chunk), and `V · φ` `[N, E, r]`;
//! the chunks' outputs are concatenated. Nothing of a chunk survives it. Backward (recorded with
//! a hand-written `Backward`, since burn's autodiff would keep every chunk's weights, the whole
//! `O(P·L)` map): each chunk's weights are recomputed, then
//! `dV += G φᵀ`, `dφ = Vᵀ G`, `dS = s · φ ⊙ (dφ − Σ_L φ ⊙ dφ)`, `dQ = K dS`, `dK += Q dSᵀ`.
//! Peak memory is a few `[N, L, r]` score-sized arrays plus the inputs and gradients,
//! whatever `P`; `r` comes from a byte budget.
//!
//! Why by hand: burn 0.22 has no memory-efficient attention for its GPU backends (its
//! `attention` op materialises the scores), and the streaming kernel of
//! [`super::streaming_attention`] works on CPU slices only. Written against the backend
//! primitives, it runs on every backend; on Flex it is what the tests compare with the
//! official whole-map formulation.
//!
//! Speed: this formulation does the full block products (9x the multiply-adds of the streaming
//! kernel's pixel products) in burn's matmuls; on the CPU it is only a reference.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Flex, TensorMetadata};
use burn::tensor::{Shape, Slice, Tensor};

/// What the chunked attention is beyond its tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkSpec {
    /// The softmax temperature `s` (PANet: 10).
    pub scale: f32,
    /// Bytes of one `[N, L, r]` score array the chunk size is chosen for.
    pub budget_bytes: usize,
}

impl ChunkSpec {
    /// Query columns per chunk for `n` samples of `keys` blocks: at least one.
    pub fn rows(&self, n: usize, keys: usize, queries: usize) -> usize {
        (self.budget_bytes / (4 * n * keys).max(1)).clamp(1, queries.max(1))
    }
}

/// The chunked attention as a backend operation.
#[backend_extension(Flex, Cube: cfg(any(feature = "gpu", feature = "cuda")), Autodiff)]
pub trait ChunkedAttentionBackend: Backend {
    /// `query` `[N, D, P]`, `keys` `[N, D, L]`, `values` `[N, E, L]` to `[N, E, P]`:
    /// column `i` is `Σ_j softmax_j(scale · query_i · keys_j) values_j`.
    fn chunked_attention(
        query: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        spec: ChunkSpec,
    ) -> FloatTensor<Self>;
}

/// See [`ChunkedAttentionBackend::chunked_attention`]; differentiable with respect to all three
/// inputs on an autodiff device, in the memory of a chunk.
pub fn chunked_attention(
    query: Tensor<3>,
    keys: Tensor<3>,
    values: Tensor<3>,
    spec: ChunkSpec,
) -> Tensor<3> {
    let out = <burn::backend::Dispatch as ChunkedAttentionBackend>::chunked_attention(
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

/// Columns `start..end` of a `[N, X, P]` tensor.
fn columns<B: Backend>(tensor: FloatTensor<B>, start: usize, end: usize) -> FloatTensor<B> {
    let slices: [Slice; 3] = [(..).into(), (..).into(), (start..end).into()];
    B::float_slice(tensor, &slices)
}

/// `softmax(scale · scores)` over dimension 1 of `[N, L, r]`.
fn softmax_keys<B: Backend>(scores: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    let shape = scores.shape();
    let scores = B::float_mul_scalar(scores, scale.into());
    let max = B::float_expand(B::float_max_dim(scores.clone(), 1), shape.clone());
    let exp = B::float_exp(B::float_sub(scores, max));
    let sum = B::float_expand(B::float_sum_dim(exp.clone(), 1), shape);
    B::float_div(exp, sum)
}

/// The weights `[N, L, r]` of query columns `start..end`.
fn weights<B: Backend>(
    keys_t: &FloatTensor<B>,
    query: &FloatTensor<B>,
    start: usize,
    end: usize,
    scale: f32,
) -> FloatTensor<B> {
    let scores = B::float_matmul(keys_t.clone(), columns::<B>(query.clone(), start, end));
    softmax_keys::<B>(scores, scale)
}

/// The forward on any backend.
pub fn forward<B: Backend>(
    query: FloatTensor<B>,
    keys: FloatTensor<B>,
    values: FloatTensor<B>,
    spec: ChunkSpec,
) -> FloatTensor<B> {
    let [n, _, queries] = dims3::<B>(&query);
    let [_, _, blocks] = dims3::<B>(&keys);
    let rows = spec.rows(n, blocks, queries);
    let keys_t = B::float_swap_dims(keys, 1, 2);
    let chunks: Vec<FloatTensor<B>> = (0..queries)
        .step_by(rows)
        .map(|start| {
            let end = (start + rows).min(queries);
            let phi = weights::<B>(&keys_t, &query, start, end, spec.scale);
            B::float_matmul(values.clone(), phi)
        })
        .collect();
    B::float_cat(chunks, 2)
}

/// Gradients of query, keys and values for the output gradient `grad` `[N, E, P]`, each
/// chunk's weights recomputed.
pub fn backward<B: Backend>(
    query: FloatTensor<B>,
    keys: FloatTensor<B>,
    values: FloatTensor<B>,
    grad: FloatTensor<B>,
    spec: ChunkSpec,
) -> [FloatTensor<B>; 3] {
    let [n, _, queries] = dims3::<B>(&query);
    let [_, _, blocks] = dims3::<B>(&keys);
    let rows = spec.rows(n, blocks, queries);
    let keys_t = B::float_swap_dims(keys.clone(), 1, 2);
    let values_t = B::float_swap_dims(values.clone(), 1, 2);
    let device = values.device();
    let mut grad_values = B::float_zeros(values.shape(), &device, values.dtype().into());
    let mut grad_keys = B::float_zeros(keys.shape(), &device, keys.dtype().into());
    let mut grad_query = Vec::with_capacity(queries.div_ceil(rows));
    for start in (0..queries).step_by(rows) {
        let end = (start + rows).min(queries);
        let phi = weights::<B>(&keys_t, &query, start, end, spec.scale); // [N, L, r]
        let g = columns::<B>(grad.clone(), start, end); // [N, E, r]
                                                        // dV += G φᵀ
        grad_values = B::float_add(
            grad_values,
            B::float_matmul(g.clone(), B::float_swap_dims(phi.clone(), 1, 2)),
        );
        // dφ = Vᵀ G; dS = s · φ ⊙ (dφ − Σ_L φ ⊙ dφ)
        let d_phi = B::float_matmul(values_t.clone(), g);
        let shape: Shape = d_phi.shape();
        let dot = B::float_expand(
            B::float_sum_dim(B::float_mul(phi.clone(), d_phi.clone()), 1),
            shape,
        );
        let d_scores = B::float_mul_scalar(
            B::float_mul(phi, B::float_sub(d_phi, dot)),
            spec.scale.into(),
        );
        // dQ = K dS; dK += Q dSᵀ
        grad_query.push(B::float_matmul(keys.clone(), d_scores.clone()));
        let q = columns::<B>(query.clone(), start, end);
        grad_keys = B::float_add(
            grad_keys,
            B::float_matmul(q, B::float_swap_dims(d_scores, 1, 2)),
        );
    }
    [B::float_cat(grad_query, 2), grad_keys, grad_values]
}

impl ChunkedAttentionBackend for Flex {
    fn chunked_attention(
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
    fn chunked_attention(
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
    fn chunked_attention(
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
                let state = (query.clone(), keys.clone(), values.clone(), spec);
                let out = B::chunked_attention(query, keys, values, spec);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::chunked_attention(query, keys, values, spec))
            }
        }
    }
}
