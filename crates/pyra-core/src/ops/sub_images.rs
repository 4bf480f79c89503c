//! FFDNet's reversible downsampling: an image and its 2x2 sub-images (pixel unshuffle), and
//! the one-line reflection that makes odd sides even.

use burn::tensor::Tensor;

/// `[N, C, H, W]` (even sides) to its 2x2 sub-images `[N, 4C, H/2, W/2]`, channel `4c + k`.
pub fn to_sub_images(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h / 2, 2, w / 2, 2])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([n, 4 * c, h / 2, w / 2])
}

/// The inverse of [`to_sub_images`].
pub fn from_sub_images(x: Tensor<4>) -> Tensor<4> {
    let [n, c4, h2, w2] = x.dims();
    let c = c4 / 4;
    x.reshape([n, c, 2, 2, h2, w2])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([n, c, 2 * h2, 2 * w2])
}

/// Reflect-pad one row at the bottom (`dim` 2) or one column at the right (`dim` 3): the
/// added line repeats the one before the last (PyTorch's `reflect`).
pub fn reflect_one(x: Tensor<4>, dim: usize) -> Tensor<4> {
    let size = x.dims()[dim];
    let line = x.clone().narrow(dim, size - 2, 1);
    Tensor::cat(vec![x, line], dim)
}

/// `x` with odd sides made even by [`reflect_one`] (at the bottom and the right).
pub fn pad_to_even(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let mut padded = x;
    if h % 2 == 1 {
        padded = reflect_one(padded, 2);
    }
    if w % 2 == 1 {
        padded = reflect_one(padded, 3);
    }
    padded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn sub_images_take_every_other_pixel_and_invert() {
        let device = backend::cpu();
        let x = Tensor::<4>::from_data(
            TensorData::new((0..16).map(|v| v as f32).collect::<Vec<_>>(), [1, 1, 4, 4]),
            &device,
        );
        // Channel k = 2 dy + dx holds pixels (2i + dy, 2j + dx).
        let sub = to_sub_images(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(&sub[..4], &[0.0, 2.0, 8.0, 10.0]);
        assert_eq!(&sub[4..8], &[1.0, 3.0, 9.0, 11.0]);
        assert_eq!(&sub[12..], &[5.0, 7.0, 13.0, 15.0]);
        let y = Tensor::<4>::random([2, 3, 6, 8], Distribution::Default, &device);
        let back = from_sub_images(to_sub_images(y.clone()));
        assert_eq!(back.into_data(), y.into_data());
        assert_eq!(
            pad_to_even(Tensor::<4>::zeros([1, 1, 5, 7], &device)).dims(),
            [1, 1, 6, 8]
        );
    }
}
