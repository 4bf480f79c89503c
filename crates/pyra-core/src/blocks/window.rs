//! Running a global block (attention) on windows of its input instead of the whole map.
//!
//! Global attention costs the square of the pixels it sees: on a 12-megapixel photo a single
//! pass would take weeks. Cutting the *image* into tiles bounds that, but it also cuts every
//! convolution's receptive field at the tile borders. Windows cut only the attention: the
//! block's input `[N, C, H, W]` is split into `t x t` windows, which run through the block as
//! one batch (`[N·windows, C, t, t]`), and every output pixel is taken from the window that
//! owns it. Windows start at `0, t, 2t, ...`; the last one in each direction is moved back to
//! end at the border (so all have the same size and the batch is one tensor), and pixels it
//! shares with its neighbour stay with the neighbour. A map no larger than `t` runs whole.

use burn::tensor::Tensor;

/// Window starts along a side of `len` pixels for windows of `size` (`size <= len`): `0,
/// size, 2·size, ...`, the last one at `len - size`.
pub fn window_starts(len: usize, size: usize) -> Vec<usize> {
    assert!(size > 0 && size <= len, "window {size} on a side of {len}");
    let count = len.div_ceil(size);
    (0..count).map(|i| (i * size).min(len - size)).collect()
}

/// The pixels window `i` of `starts` owns, in the window's own coordinates: `[i·size,
/// min((i+1)·size, len))` of the image.
fn owned(starts: &[usize], i: usize, size: usize, len: usize) -> std::ops::Range<usize> {
    let begin = i * size - starts[i];
    let end = ((i + 1) * size).min(len) - starts[i];
    begin..end
}

/// How many windows of side `size` cover an `h x w` map (1 when it fits in one).
pub fn window_count(h: usize, w: usize, size: usize) -> usize {
    h.div_ceil(size.min(h).max(1)) * w.div_ceil(size.min(w).max(1))
}

/// `block` applied to each `size x size` window of `x` (`[N, C, H, W]`) as one batch, the
/// outputs (same shape as their inputs) assembled from the pixels each window owns.
pub fn windowed(x: Tensor<4>, size: usize, block: impl Fn(Tensor<4>) -> Tensor<4>) -> Tensor<4> {
    let [n, _, height, width] = x.dims();
    let (th, tw) = (size.min(height), size.min(width));
    if th == height && tw == width {
        return block(x);
    }
    let (rows, cols) = (window_starts(height, th), window_starts(width, tw));
    let windows: Vec<Tensor<4>> = rows
        .iter()
        .flat_map(|&y| {
            let x = &x;
            cols.iter().map(move |&x0| {
                x.clone()
                    .slice([0..n, 0..x.dims()[1], y..y + th, x0..x0 + tw])
            })
        })
        .collect();
    let out = block(Tensor::cat(windows, 0));
    let [_, channels, _, _] = out.dims();
    let bands: Vec<Tensor<4>> = (0..rows.len())
        .map(|i| {
            let ys = owned(&rows, i, th, height);
            let pieces: Vec<Tensor<4>> = (0..cols.len())
                .map(|j| {
                    let window = (i * cols.len() + j) * n;
                    let xs = owned(&cols, j, tw, width);
                    out.clone()
                        .slice([window..window + n, 0..channels, ys.clone(), xs])
                })
                .collect();
            Tensor::cat(pieces, 3)
        })
        .collect();
    Tensor::cat(bands, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn windows_cover_the_side_and_end_at_the_border() {
        assert_eq!(window_starts(10, 4), vec![0, 4, 6]);
        assert_eq!(window_starts(8, 4), vec![0, 4]);
        assert_eq!(window_starts(5, 5), vec![0]);
        assert_eq!(window_count(10, 8, 4), 6);
        assert_eq!(window_count(3, 3, 16), 1);
        // Every pixel is owned by exactly one window.
        let starts = window_starts(10, 4);
        let owned: Vec<usize> = (0..starts.len())
            .flat_map(|i| {
                owned(&starts, i, 4, 10)
                    .map(|p| p + starts[i])
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(owned, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn each_pixel_comes_from_the_window_that_owns_it() {
        let device = backend::cpu();
        let x = Tensor::<4>::random([2, 3, 11, 9], Distribution::Default, &device);
        // A block that is not pointwise: every pixel minus its window's mean. The result at
        // a pixel then depends on which window computed it.
        let block = |t: Tensor<4>| {
            let mean = t.clone().mean_dim(2).mean_dim(3);
            t - mean
        };
        let got = windowed(x.clone(), 4, block);
        assert_eq!(got.dims(), [2, 3, 11, 9]);
        // Pixel (9, 5) of sample 1: rows owned by the window starting at 7 (11 - 4), columns
        // by the one starting at 4.
        let window = x.clone().slice([1..2, 0..3, 7..11, 4..8]);
        let expected = block(window).slice([0..1, 0..3, 2..3, 1..2]);
        got.clone()
            .slice([1..2, 0..3, 9..10, 5..6])
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
        // A map that fits one window runs whole.
        let whole = windowed(x.clone(), 16, block);
        whole
            .into_data()
            .assert_approx_eq::<f32>(&block(x).into_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn windowed_pyramid_attention_is_the_attention_of_the_window() {
        use crate::blocks::PyramidAttentionConfig;
        let device = backend::cpu();
        let mut attention = PyramidAttentionConfig::new().with_channel(8).init(&device);
        let x = Tensor::<4>::random([1, 8, 20, 20], Distribution::Default, &device);
        attention.window = Some(12);
        let windowed = attention.forward(x.clone());
        // Rows and columns 12..20 belong to the windows starting at 8.
        let crop = x.clone().slice([0..1, 0..8, 8..20, 8..20]);
        let expected = attention
            .forward_global(crop)
            .slice([0..1, 0..8, 4..12, 4..12]);
        windowed
            .clone()
            .slice([0..1, 0..8, 12..20, 12..20])
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        // And it is not the global attention (the windows see less).
        let global = attention.forward_global(x);
        let difference = (global - windowed).abs().max().into_scalar::<f32>();
        assert!(difference > 1e-4, "{difference}");
    }
}
