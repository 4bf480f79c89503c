//! The inference forward of pyramid attention, computed a chunk of query rows at a time,
//! equals the whole-map forward (soft and hard attention, several chunk sizes including
//! uneven last chunks, batches, key strides).

use burn::tensor::{Distribution, Tensor};
use pyra_core::backend;
use pyra_core::blocks::PyramidAttentionConfig;
use pyra_core::burn;

fn max_difference(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
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
        let x = Tensor::<4>::random([2, 8, 13, 11], Distribution::Normal(0.0, 1.0), &device);
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
        // The default inference path is the chunked one.
        assert!(max_difference(whole, block.forward(x)) < 1e-4);
    }
}
