//! The two bounded-memory formulations of pyramid attention equal the whole-map forward
//! (#2's implementation, checked against the official code): the generic one that computes a
//! chunk of query pixels at a time on canvases (soft and hard attention, several chunk sizes
//! including uneven last chunks, batches, key strides, block sizes 3 and 5), and the fused
//! streaming CPU kernel (soft and hard, block sizes 3 and 5, tiles from 1 pixel to the whole
//! image, odd sizes, batches, one or five levels). The generic forward and its recomputing
//! backward (the GPU's path) run on every device of `common::devices()`; the streaming kernel
//! is the CPU's.

mod common;

use burn::tensor::{Distribution, Tensor};
use pyra_core::backend;
use pyra_core::blocks::{PyramidAttention, PyramidAttentionConfig};
use pyra_core::burn;
use pyra_core::ops::chunked_attention::ChunkSpec;
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
    for (average, stride, ksize) in [(true, 1, 3), (false, 1, 3), (true, 2, 3), (true, 1, 5)] {
        let block = PyramidAttentionConfig::new()
            .with_channel(8)
            .with_average(average)
            .with_stride(stride)
            .with_ksize(ksize)
            .init(&device);
        let x = input_for(&block, [2, 8, 13, 11], &device);
        let whole = block.forward_whole(x.clone());
        let [n, _, h, w] = x.dims();
        let levels = block.level_sizes(h, w);
        // 1 query position, 7 (uneven), 50, and everything in one chunk; on a GPU (the same
        // code, launched per chunk: lavapipe spends seconds per launch) 50 (four chunks, the
        // last one partial) and all.
        let rows: &[usize] = if backend::is_cpu(&device) {
            &[1, 7, 50, h * w * 2]
        } else {
            &[50, h * w * 2]
        };
        for &rows in rows {
            let budget = ChunkSpec::budget_for_rows(&levels, ksize, n, rows);
            let chunked = block.forward_chunked(x.clone(), budget);
            let d = max_difference(whole.clone(), chunked);
            assert!(
                d < 1e-4,
                "average={average} stride={stride} ksize={ksize} rows={rows}: {d}"
            );
            // The profiler's sample: all chunks are the whole forward; one chunk is not.
            let (sample, total) = block.forward_chunked_sample(x.clone(), budget, usize::MAX);
            let queries = h * (w + ksize / 2) - ksize / 2;
            assert_eq!(total, queries.div_ceil(rows.min(queries)), "rows={rows}");
            assert!(max_difference(whole.clone(), sample) < 1e-4);
            if total > 1 {
                let (first, _) = block.forward_chunked_sample(x.clone(), budget, 1);
                assert!(max_difference(whole.clone(), first) > 1e-3);
            }
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

/// The chunked forward with recomputed weights (the GPU's path, written in burn's tensor
/// operations) against the whole-map forward that burn's autodiff differentiates: output,
/// input gradient and every parameter gradient, for chunks of 1 query position, 7 (uneven)
/// and the whole map; key strides 1 and 2, one and five levels, block size 5, and hard
/// attention (whose mask passes no gradient, so only the values and the skip get one).
#[test]
fn chunked_backward_equals_the_whole_map_backward() {
    for device in common::devices() {
        chunked_backward_equals_the_whole_map_backward_on(&device);
    }
}

fn chunked_backward_equals_the_whole_map_backward_on(base: &burn::tensor::Device) {
    let device = backend::with_autodiff(base.clone());
    for (average, stride, levels, ksize) in [
        (true, 1, 5, 3),
        (true, 2, 5, 3),
        (true, 1, 1, 3),
        (true, 1, 5, 5),
        (false, 1, 5, 3),
    ] {
        let block = PyramidAttentionConfig::new()
            .with_channel(8)
            .with_average(average)
            .with_stride(stride)
            .with_ksize(ksize)
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
        let sizes = block.level_sizes(11, 9);
        // As in the forward test: short chunks on the CPU only; on a GPU 40 positions (three
        // chunks, the last one partial) and all.
        let rows: &[usize] = if backend::is_cpu(base) {
            &[1, 7, 99 * 3]
        } else {
            &[40, 99 * 3]
        };
        for &rows in rows {
            let budget = ChunkSpec::budget_for_rows(&sizes, ksize, 2, rows);
            let (out, input, params) = run(block.forward_chunked(x.clone(), budget));
            let case = format!(
                "average={average} stride={stride} levels={levels} ksize={ksize} rows={rows}"
            );
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
