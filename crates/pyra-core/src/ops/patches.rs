//! Patch extraction with TensorFlow-style "same" padding, as the official
//! `extract_image_patches(..., padding='same')` does it.

use burn::tensor::module::{fold4d, unfold4d};
use burn::tensor::ops::{PadMode, UnfoldOptions};
use burn::tensor::Tensor;

/// `(before, after)` zero padding of TensorFlow's "same" for one dimension: the total
/// `max(0, (ceil(len / stride) - 1) * stride + ksize - len)` split with the smaller half first.
pub fn same_padding(len: usize, ksize: usize, stride: usize) -> (usize, usize) {
    let out = len.div_ceil(stride);
    let total = ((out - 1) * stride + ksize).saturating_sub(len);
    (total / 2, total - total / 2)
}

/// All `ksize x ksize` patches of `[N, C, H, W]` taken every `stride` pixels with "same"
/// padding, as columns `[N, C*ksize*ksize, L]` (channel-major, then row, then column within a
/// patch; patches row-major over their centres).
pub fn extract_patches(x: Tensor<4>, ksize: usize, stride: usize) -> Tensor<3> {
    let [_, _, h, w] = x.dims();
    let (top, bottom) = same_padding(h, ksize, stride);
    let (left, right) = same_padding(w, ksize, stride);
    let padded = x.pad((left, right, top, bottom), PadMode::Constant(0.0));
    unfold4d(
        padded,
        [ksize, ksize],
        UnfoldOptions::new([stride, stride], [0, 0], [1, 1]),
    )
}

/// Overlap-add of per-pixel patch columns `[N, C*ksize*ksize, H*W]` back onto an `[N, C, H, W]`
/// map (odd `ksize`, stride 1): output pixel (i, j) sums entry (c, u, v) of the patch at
/// (i + r - u, j + r - v), r = ksize / 2. This is the official `conv_transpose2d(A, P,
/// padding=1)` pasting written per sample.
pub fn paste_patches(columns: Tensor<3>, height: usize, width: usize, ksize: usize) -> Tensor<4> {
    let pad = ksize / 2;
    fold4d(
        columns,
        [height, width],
        [ksize, ksize],
        UnfoldOptions::new([1, 1], [pad, pad], [1, 1]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(17, 3, 1), (1, 1));
        assert_eq!(same_padding(10, 4, 1), (1, 2));
        assert_eq!(same_padding(10, 3, 2), (0, 1));
        assert_eq!(same_padding(9, 3, 2), (1, 1));
    }
}
