//! The fused pyramid attention of [`super::streaming_attention`] as one differentiable burn
//! operation: the forward runs the streaming kernel, the backward its tiled backward (weights
//! recomputed tile by tile), so training never holds the `[H*W, L]` map either.
//!
//! burn 0.22 routes a custom operation through a backend extension: the trait below is
//! implemented for the Flex CPU backend (the kernels work on `f32` slices) and for
//! `Autodiff<Flex>`, which records the operation with its hand-written backward. Other
//! backends do not have it; [`supports`] says whether a device does.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Flex};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use super::streaming_attention::{self, Level, Normalisation, Problem};

/// Everything about the attention that is not a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    /// `(h, w)` of every level, in the order their blocks are concatenated.
    pub levels: Vec<(usize, usize)>,
    /// Block size `k` (odd).
    pub ksize: usize,
    pub softmax_scale: f32,
    /// Lower bound of the key block norms.
    pub escape: f32,
    pub normalisation: Normalisation,
    /// Scratch bytes of scores per worker thread.
    pub budget_bytes: usize,
}

/// The fused attention as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait FusedAttentionBackend: Backend {
    /// `query` `[N, C', H, W]`, `keys` `[N, C', L]` and `values` `[N, C, L]` (the levels' maps
    /// flattened and concatenated) to the pasted attention output `[N, C, H, W]`, not yet
    /// divided by 4.
    fn fused_pyramid_attention(
        query: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> FloatTensor<Self>;
}

/// Whether [`fused_pyramid_attention`] runs on `device` (the Flex CPU backend, with or without
/// autodiff) and `PYRA_ATTENTION=whole` does not turn it off.
pub fn supports(device: &Device) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled =
        *ENABLED.get_or_init(|| !matches!(std::env::var("PYRA_ATTENTION").as_deref(), Ok("whole")));
    enabled && (device == &Device::flex() || device == &Device::flex().autodiff())
}

/// See [`FusedAttentionBackend::fused_pyramid_attention`]; differentiable with respect to all
/// three inputs on an autodiff device. Hard attention's arg-max mask is constant, so there
/// (like the whole-map forward's detached mask) queries and keys get no gradient at all.
pub fn fused_pyramid_attention(
    query: Tensor<4>,
    keys: Tensor<3>,
    values: Tensor<3>,
    spec: AttentionSpec,
) -> Tensor<4> {
    let (query, keys) = match spec.normalisation {
        Normalisation::Softmax => (query, keys),
        Normalisation::ArgMax => (query.detach(), keys.detach()),
    };
    let out = <burn::backend::Dispatch as FusedAttentionBackend>::fused_pyramid_attention(
        query.into_dispatch(),
        keys.into_dispatch(),
        values.into_dispatch(),
        spec,
    );
    Tensor::from_dispatch(out)
}

/// A Flex tensor's values (f32) and shape.
pub(crate) fn to_vec(tensor: FloatTensor<Flex>) -> (Vec<f32>, Vec<usize>) {
    let data = tensor.into_data().convert::<f32>();
    let shape = data.shape().to_vec();
    (data.try_into_vec::<f32>().expect("f32 tensor"), shape)
}

/// A Flex tensor of `values` with `shape`.
pub(crate) fn from_vec(values: Vec<f32>, shape: Vec<usize>) -> FloatTensor<Flex> {
    Flex::float_from_data(TensorData::new(values, shape), &Default::default())
}

/// The per-sample problems over the flattened inputs, handed to `run`, the results in sample
/// order. A batch runs its samples side by side (each on fewer, larger query tiles), so a
/// batch of small maps (windows of a large image, or training patches) keeps every worker busy
/// without cutting each map into halo-heavy 8-pixel tiles; one map runs alone on all workers.
fn for_each_sample<T: Send>(
    query: &[f32],
    query_shape: &[usize],
    keys: &[f32],
    values: &[f32],
    values_shape: &[usize],
    spec: &AttentionSpec,
    run: impl Fn(usize, &Problem) -> T + Sync,
) -> Vec<T> {
    let [n, match_channels, height, width] = query_shape else {
        panic!("query must be [N, C', H, W], got {query_shape:?}");
    };
    let (channels, total) = (values_shape[1], values_shape[2]);
    let (n, match_channels, height, width) = (*n, *match_channels, *height, *width);
    assert_eq!(
        spec.levels.iter().map(|(h, w)| h * w).sum::<usize>(),
        total,
        "levels and key columns disagree"
    );
    // Each level's maps are columns of the concatenated [C, L]: copy them out contiguous.
    let columns = |all: &[f32], rows: usize, sample: usize| -> Vec<Vec<f32>> {
        let base = &all[sample * rows * total..][..rows * total];
        let mut offset = 0;
        spec.levels
            .iter()
            .map(|(h, w)| {
                let blocks = h * w;
                let level = (0..rows)
                    .flat_map(|c| base[c * total + offset..][..blocks].iter().copied())
                    .collect();
                offset += blocks;
                level
            })
            .collect()
    };
    let tiles_wanted = (16 * streaming_attention::workers()).div_ceil(n.max(1));
    (0..n)
        .into_par_iter()
        .map(|sample| {
            let level_keys = columns(keys, match_channels, sample);
            let level_values = columns(values, channels, sample);
            let plane = match_channels * height * width;
            let problem = Problem {
                query: &query[sample * plane..][..plane],
                height,
                width,
                match_channels,
                channels,
                levels: spec
                    .levels
                    .iter()
                    .zip(level_keys.iter().zip(&level_values))
                    .map(|(&(h, w), (keys, values))| Level {
                        height: h,
                        width: w,
                        keys,
                        values,
                    })
                    .collect(),
                ksize: spec.ksize,
                softmax_scale: spec.softmax_scale,
                escape: spec.escape,
                normalisation: spec.normalisation,
                tiles_wanted,
            };
            run(sample, &problem)
        })
        .collect()
}

impl FusedAttentionBackend for Flex {
    fn fused_pyramid_attention(
        query: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> FloatTensor<Self> {
        let (query, query_shape) = to_vec(query);
        let (keys, _) = to_vec(keys);
        let (values, values_shape) = to_vec(values);
        let out: Vec<f32> = for_each_sample(
            &query,
            &query_shape,
            &keys,
            &values,
            &values_shape,
            &spec,
            |_, problem| streaming_attention::attend_and_paste(problem, spec.budget_bytes),
        )
        .concat();
        let shape = vec![
            query_shape[0],
            values_shape[1],
            query_shape[2],
            query_shape[3],
        ];
        from_vec(out, shape)
    }
}

/// The recorded operation; its state is the three inputs and the spec.
#[derive(Debug)]
struct FusedAttentionBackward;

impl Backward<Flex, 3> for FusedAttentionBackward {
    type State = (
        FloatTensor<Flex>,
        FloatTensor<Flex>,
        FloatTensor<Flex>,
        AttentionSpec,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [query_node, keys_node, values_node] = ops.parents;
        let grad_out = grads.consume::<Flex>(&ops.node);
        let (query, keys, values, spec) = ops.state;
        let (query, query_shape) = to_vec(query);
        let (keys, keys_shape) = to_vec(keys);
        let (values, values_shape) = to_vec(values);
        let (grad_out, _) = to_vec(grad_out);
        let plane = values_shape[1] * query_shape[2] * query_shape[3];
        let per_sample = for_each_sample(
            &query,
            &query_shape,
            &keys,
            &values,
            &values_shape,
            &spec,
            |sample, problem| {
                streaming_attention::attend_and_paste_backward(
                    problem,
                    &grad_out[sample * plane..][..plane],
                    spec.budget_bytes,
                )
            },
        );
        // Per-level gradients back into the concatenated [N, C, L] layout.
        let concatenate = |levels: &dyn Fn(&streaming_attention::Gradients) -> &Vec<Vec<f32>>,
                           rows: usize| {
            let total = keys_shape[2];
            let mut out = vec![0.0f32; per_sample.len() * rows * total];
            for (sample, gradients) in per_sample.iter().enumerate() {
                let mut offset = 0;
                for (level, &(h, w)) in levels(gradients).iter().zip(&spec.levels) {
                    let blocks = h * w;
                    for (c, row) in level.chunks_exact(blocks).enumerate() {
                        out[(sample * rows + c) * total + offset..][..blocks].copy_from_slice(row);
                    }
                    offset += blocks;
                }
            }
            out
        };
        if let Some(node) = values_node {
            let grad = concatenate(&|g| &g.values, values_shape[1]);
            grads.register::<Flex>(node.id, from_vec(grad, values_shape.clone()));
        }
        if let Some(node) = keys_node {
            let grad = concatenate(&|g| &g.keys, keys_shape[1]);
            grads.register::<Flex>(node.id, from_vec(grad, keys_shape));
        }
        if let Some(node) = query_node {
            let grad: Vec<f32> = per_sample.into_iter().flat_map(|g| g.query).collect();
            grads.register::<Flex>(node.id, from_vec(grad, query_shape));
        }
    }
}

impl<C: CheckpointStrategy> FusedAttentionBackend for Autodiff<Flex, C> {
    fn fused_pyramid_attention(
        query: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> FloatTensor<Self> {
        let (query, query_node) = query.into_parts();
        let (keys, keys_node) = keys.into_parts();
        let (values, values_node) = values.into_parts();
        match FusedAttentionBackward
            .prepare::<C>([query_node, keys_node, values_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (query.clone(), keys.clone(), values.clone(), spec.clone());
                let out = Flex::fused_pyramid_attention(query, keys, values, spec);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::fused_pyramid_attention(query, keys, values, spec))
            }
        }
    }
}
