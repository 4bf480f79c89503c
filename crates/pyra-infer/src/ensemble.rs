//! Self-ensemble x8 (Lim et al., EDSR): run the network on the 8 flips/transpositions of the
//! input, undo each on its output, and average.

use pyra_core::burn::tensor::Tensor;

/// One of the 8 dihedral transforms: optional transpose, then optional flips.
#[derive(Debug, Clone, Copy)]
struct Transform {
    transpose: bool,
    flip_h: bool,
    flip_w: bool,
}

impl Transform {
    fn all() -> impl Iterator<Item = Self> {
        (0..8).map(|i| Self {
            transpose: i & 4 != 0,
            flip_h: i & 2 != 0,
            flip_w: i & 1 != 0,
        })
    }

    fn apply(self, mut x: Tensor<4>) -> Tensor<4> {
        if self.transpose {
            x = x.swap_dims(2, 3);
        }
        if self.flip_h {
            x = x.flip([2]);
        }
        if self.flip_w {
            x = x.flip([3]);
        }
        x
    }

    fn invert(self, mut x: Tensor<4>) -> Tensor<4> {
        if self.flip_w {
            x = x.flip([3]);
        }
        if self.flip_h {
            x = x.flip([2]);
        }
        if self.transpose {
            x = x.swap_dims(2, 3);
        }
        x
    }
}

/// The mean of `network` over the 8 transforms of `x`.
pub fn self_ensemble(x: Tensor<4>, network: &dyn Fn(Tensor<4>) -> Tensor<4>) -> Tensor<4> {
    let mut total: Option<Tensor<4>> = None;
    for t in Transform::all() {
        let y = t.invert(network(t.apply(x.clone())));
        total = Some(match total {
            Some(acc) => acc + y,
            None => y,
        });
    }
    total.expect("eight outputs").div_scalar(8.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyra_core::backend;
    use pyra_core::burn::tensor::Distribution;

    #[test]
    fn equivariant_network_is_unchanged_and_transforms_invert() {
        let device = backend::cpu();
        let x = Tensor::<4>::random([1, 2, 7, 5], Distribution::Uniform(0.0, 1.0), &device);
        for t in Transform::all() {
            let back = t.invert(t.apply(x.clone()));
            assert_eq!(back.dims(), x.dims());
            assert_eq!((back - x.clone()).abs().max().into_scalar::<f32>(), 0.0);
        }
        let y = self_ensemble(x.clone(), &|t| t.mul_scalar(3.0));
        assert!((y - x.mul_scalar(3.0)).abs().max().into_scalar::<f32>() < 1e-6);
    }
}
