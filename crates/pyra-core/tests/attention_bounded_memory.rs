//! The two bounded-memory inference forwards of pyramid attention equal the whole-map forward
//! (#2's implementation, checked against the official code): the generic one that computes a
//! chunk of query rows at a time (soft and hard attention, several chunk sizes including
//! uneven last chunks, batches, key strides), and the fused streaming CPU kernel (soft and
//! hard, block sizes 3 and 5, tiles from 1 pixel to the whole image, odd sizes, batches, one
//! or five levels). The generic forward and the recomputing backward (the GPU's training
//! path) run on every device of `common::devices()`; the streaming kernel is the CPU's.

mod common;

use burn::tensor::{Distribution, Tensor};
use pyra_core::backend;
use pyra_core::blocks::{PyramidAttention, PyramidAttentionConfig};
use pyra_core::burn;
use pyra_core::weights::gradients_of;

fn max_difference(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// A random input `[n, c, h, w]` for `block`. For hard attention (an arg-max per pixel) the
/// input is redrawn until every pixel's best block beats its runner-up by a relative margin
/// of 1e-3 in softmax weight: two paths that round differently may otherwise pick different
/// maxima of a near tie, which is a property of the input, not an error of either path.
fn input_for(
    block: &PyramidAttention,
    dims: [usize; 4],
    device: &burn::tensor::Device,
) -> Tensor<4> {
    let mut soft = block.clone();
    soft.average = true;
    for _ in 0..50 {
        let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), device);
        if block.average {
            return x;
        }
        let weights = soft.attention_weights(x.clone());
        let [_, _, blocks] = weights.dims();
        let values = weights
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 weights");
        let well_posed = values.chunks(blocks).all(|row| {
            let (mut best, mut second) = (f32::MIN, f32::MIN);
            for &v in row {
                if v > best {
                    second = best;
                    best = v;
                } else if v > second {
                    second = v;
                }
            }
            best - second > 1e-3 * best
        });
        if well_posed {
            return x;
        }
    }
    panic!("no input without near-ties in 50 draws");
}

/// `a` and `b` agree to 1e-4 of the larger of 1 and `a`'s largest magnitude.
fn close_to(a: &[f32], b: &[f32], case: &str, what: &str) {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(d < 1e-4 * scale, "{case} {what}: {d} (scale {scale})");
}

#[test]
fn chunked_attention_equals_the_whole_map() {
    for device in common::devices() {
        chunked_attention_equals_the_whole_map_on(&device);
    }
}

fn chunked_attention_equals_the_whole_map_on(device: &burn::tensor::Device) {
    let device = device.clone();
    for (average, stride) in [(true, 1), (false, 1), (true, 2)] {
        let block = PyramidAttentionConfig::new()
            .with_channel(8)
            .with_average(average)
            .with_stride(stride)
            .init(&device);
        let x = input_for(&block, [2, 8, 13, 11], &device);
        let whole = block.forward_whole(x.clone());
        let [_, _, h, w] = x.dims();
        let blocks: usize = block
            .level_sizes(h, w)
            .iter()
            .map(|(a, b)| a.div_ceil(stride) * b.div_ceil(stride))
            .sum();
        // 1 row, 7 rows (uneven), 50 rows, and everything in one chunk.
        for rows in [1, 7, 50, h * w] {
            let chunked = block.forward_chunked(x.clone(), rows * blocks * 4 * 2);
            let d = max_difference(whole.clone(), chunked);
            assert!(
                d < 1e-4,
                "average={average} stride={stride} rows={rows}: {d}"
            );
        }
        assert!(max_difference(whole, block.forward(x)) < 1e-4);
    }
}

#[test]
fn streaming_kernel_equals_the_whole_map() {
    let device = backend::cpu();
    for (average, ksize, levels) in [(true, 3, 5), (false, 3, 5), (true, 5, 5), (true, 3, 1)] {
        let block = PyramidAttentionConfig::new()
            .with_channel(8)
            .with_average(average)
            .with_ksize(ksize)
            .with_res_scale(0.5)
            .with_levels(levels)
            .init(&device);
        let x = input_for(&block, [2, 8, 17, 12], &device);
        let whole = block.forward_whole(x.clone());
        let scale = whole.clone().abs().max().into_scalar::<f32>();
        let blocks: usize = block.level_sizes(17, 12).iter().map(|(a, b)| a * b).sum();
        let r = ksize / 2;
        // Tiles of side 1, 2, 5 and 16 (the whole image in few tiles).
        for side in [1usize, 2, 5, 16] {
            let budget = (side + 2 * r).pow(2) * blocks * 4;
            let streamed = block.forward_streaming(x.clone(), budget);
            let d = max_difference(whole.clone(), streamed);
            assert!(
                d < 1e-4 * scale.max(1.0),
                "average={average} ksize={ksize} levels={levels} side={side}: {d}"
            );
        }
        // The default CPU inference path is the streaming one.
        assert!(max_difference(whole, block.forward(x)) < 1e-4 * scale.max(1.0));
    }
}

#[test]
fn streaming_backward_equals_the_whole_map_backward() {
    let device = backend::with_autodiff(backend::cpu());
    for (average, ksize, levels) in [(true, 3, 5), (false, 3, 5), (true, 5, 5), (true, 3, 2)] {
        let block = PyramidAttentionConfig::new()
            .with_channel(8)
            .with_average(average)
            .with_ksize(ksize)
            .with_res_scale(0.5)
            .with_levels(levels)
            .init(&device);
        let x = input_for(&block, [2, 8, 11, 9], &device).require_grad();
        let weights = Tensor::<4>::random([2, 8, 11, 9], Distribution::Normal(0.0, 1.0), &device);
        // The loss sum(out * R), its input gradient and every parameter gradient.
        let run = |out: Tensor<4>| {
            let value = (out.clone() * weights.clone()).sum();
            let grads = value.backward();
            let input = x.grad(&grads).expect("input gradient");
            (out, input, gradients_of(&block, &grads))
        };
        let (whole, whole_input, whole_params) = run(block.forward_whole(x.clone()));
        let blocks: usize = block.level_sizes(11, 9).iter().map(|(a, b)| a * b).sum();
        let r = ksize / 2;
        // Backward tiles (a third of the budget) of side 1, 2 and the whole image.
        for side in [1usize, 2, 16] {
            let budget = 3 * (side + 2 * r).pow(2) * blocks * 4;
            let (out, input, params) = run(block.forward_streaming(x.clone(), budget));
            let case = format!("average={average} ksize={ksize} levels={levels} side={side}");
            let close = |a: Vec<f32>, b: Vec<f32>, what: &str| close_to(&a, &b, &case, what);
            let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().expect("f32");
            close(values(whole.clone()), values(out), "output");
            close(values(whole_input.clone()), values(input), "input gradient");
            assert_eq!(
                whole_params.len(),
                params.len(),
                "{case}: {:?}",
                params.names().collect::<Vec<_>>()
            );
            for reference in &whole_params.tensors {
                let ours = params
                    .get(&reference.name)
                    .unwrap_or_else(|| panic!("{case}: no gradient for {}", reference.name));
                close(reference.to_f32(), ours.to_f32(), &reference.name);
            }
        }
    }
}

/// The chunked forward with recomputed weights (the GPU's training path, written in burn's
/// tensor operations) against the whole-map forward that burn's autodiff differentiates:
/// output, input gradient and every parameter gradient, for chunks of 1 row, 7 rows (uneven)
/// and the whole map, key strides 1 and 2, one and five levels.
#[test]
fn recomputed_backward_equals_the_whole_map_backward() {
    for device in common::devices() {
        recomputed_backward_equals_the_whole_map_backward_on(&device);
    }
}

fn recomputed_backward_equals_the_whole_map_backward_on(base: &burn::tensor::Device) {
    let device = backend::with_autodiff(base.clone());
    for (stride, levels) in [(1, 5), (2, 5), (1, 1)] {
        let block = PyramidAttentionConfig::new()
            .with_channel(8)
            .with_stride(stride)
            .with_res_scale(0.5)
            .with_levels(levels)
            .init(&device);
        let x = input_for(&block, [2, 8, 11, 9], &device).require_grad();
        let weights = Tensor::<4>::random([2, 8, 11, 9], Distribution::Normal(0.0, 1.0), &device);
        let run = |out: Tensor<4>| {
            let value = (out.clone() * weights.clone()).sum();
            let grads = value.backward();
            let input = x.grad(&grads).expect("input gradient");
            (out, input, gradients_of(&block, &grads))
        };
        let (whole, whole_input, whole_params) = run(block.forward_whole(x.clone()));
        let blocks: usize = block
            .level_sizes(11, 9)
            .iter()
            .map(|(a, b)| a.div_ceil(stride) * b.div_ceil(stride))
            .sum();
        for rows in [1usize, 7, 99] {
            let budget = 2 * rows * blocks * 4;
            let (out, input, params) = run(block.forward_recomputed(x.clone(), budget));
            let case = format!("stride={stride} levels={levels} rows={rows}");
            let close = |a: Vec<f32>, b: Vec<f32>, what: &str| close_to(&a, &b, &case, what);
            let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().expect("f32");
            close(values(whole.clone()), values(out), "output");
            close(values(whole_input.clone()), values(input), "input gradient");
            assert_eq!(whole_params.len(), params.len(), "{case}");
            for reference in &whole_params.tensors {
                let ours = params
                    .get(&reference.name)
                    .unwrap_or_else(|| panic!("{case}: no gradient for {}", reference.name));
                close(reference.to_f32(), ours.to_f32(), &reference.name);
            }
        }
    }
}
