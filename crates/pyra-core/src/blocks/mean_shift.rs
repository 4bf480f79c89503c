//! `common.MeanShift`: a frozen `1 x 1` convolution that subtracts (sign -1) or adds (sign +1)
//! the dataset's RGB mean, scaled by the RGB range, and divides by the std.

use burn::module::{Module, Param};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

/// DIV2K RGB mean used by every official model.
pub const RGB_MEAN: [f32; 3] = [0.4488, 0.4371, 0.4040];
/// The official std (no scaling).
pub const RGB_STD: [f32; 3] = [1.0, 1.0, 1.0];

#[derive(Module, Debug)]
pub struct MeanShift {
    /// `[3, 3, 1, 1]`, the identity divided by the std. Frozen.
    pub weight: Param<Tensor<4>>,
    /// `[3]`, `sign * rgb_range * mean / std`. Frozen.
    pub bias: Param<Tensor<1>>,
}

impl MeanShift {
    pub fn new(rgb_range: f32, sign: f32, device: &Device) -> Self {
        let mut weight = vec![0f32; 9];
        let mut bias = [0f32; 3];
        for c in 0..3 {
            weight[c * 3 + c] = 1.0 / RGB_STD[c];
            bias[c] = sign * rgb_range * RGB_MEAN[c] / RGB_STD[c];
        }
        let weight = Tensor::from_data(TensorData::new(weight, [3, 3, 1, 1]), device);
        let bias = Tensor::from_data(TensorData::new(bias.to_vec(), [3]), device);
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            bias: Param::from_tensor(bias).set_require_grad(false),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        )
    }
}
