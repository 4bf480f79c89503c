//! The two bounded-memory inference forwards of pyramid attention equal the whole-map forward
//! (#2's implementation, checked against the official code): the generic one that computes a
//! chunk of query rows at a time (soft and hard attention, several chunk sizes including
//! uneven last chunks, batches, key strides), and the fused streaming CPU kernel (soft and
//! hard, block sizes 3 and 5, tiles from 1 pixel to the whole image, odd sizes, batches, one
//! or five levels).

use burn::tensor::{Distribution, Tensor};
use pyra_core::backend;
use pyra_core::blocks::{PyramidAttention, PyramidAttentionConfig};
use pyra_core::burn;

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

#[test]
fn chunked_attention_equals_the_whole_map() {
    let device = backend::cpu();
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
fn factored_forward_equals_the_whole_map_forward_and_backward() {
    let device = backend::with_autodiff(backend::cpu());
    for (average, ksize) in [(true, 3), (false, 3), (true, 5)] {
        let block = PyramidAttentionConfig::new()
            .with_channel(8)
            .with_average(average)
            .with_ksize(ksize)
            .with_res_scale(0.5)
            .init(&device);
        let x = input_for(&block, [2, 8, 11, 9], &device).require_grad();
        let weights = Tensor::<4>::random([2, 8, 11, 9], Distribution::Normal(0.0, 1.0), &device);
        let whole = block.forward_whole(x.clone());
        let factored = block.forward_factored(x.clone());
        let scale = whole.clone().abs().max().into_scalar::<f32>();
        let d = max_difference(whole.clone(), factored.clone());
        assert!(
            d < 1e-4 * scale.max(1.0),
            "average={average} ksize={ksize}: {d}"
        );
        // Gradients of sum(out * R) with respect to the input agree too.
        let grad = |out: Tensor<4>| {
            let grads = (out * weights.clone()).sum().backward();
            x.grad(&grads).expect("input gradient")
        };
        let (a, b) = (grad(whole), grad(factored));
        let scale = a.clone().abs().max().into_scalar::<f32>();
        let d = (a - b).abs().max().into_scalar::<f32>();
        assert!(
            d < 1e-4 * scale.max(1.0),
            "grad average={average} ksize={ksize}: {d}"
        );
    }
}
