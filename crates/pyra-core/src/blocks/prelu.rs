//! `nn.PReLU()`: one learnable slope (or one per channel) for the negative part.
//!
//! burn's own PReLU names its parameter `alpha`; the official checkpoints call it `weight`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

#[derive(Module, Debug)]
pub struct Prelu {
    /// Slopes `[num_parameters]` (1 for the official blocks), initialised to 0.25.
    pub weight: Param<Tensor<1>>,
}

impl Prelu {
    /// One shared slope, 0.25, as `nn.PReLU()`.
    pub fn new(device: &Device) -> Self {
        Self::with_parameters(1, device)
    }

    /// `nn.PReLU(num_parameters)`.
    pub fn with_parameters(num_parameters: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::full([num_parameters], 0.25, device)),
        }
    }

    /// `max(0, x) + weight * min(0, x)`, the slope broadcast over channels.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [slopes] = self.weight.dims();
        let weight = self.weight.val().reshape([1, slopes, 1, 1]);
        x.clone().clamp_min(0.0) + x.clamp_max(0.0) * weight
    }
}
