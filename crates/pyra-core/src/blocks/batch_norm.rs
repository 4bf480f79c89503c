//! `nn.BatchNorm2d` with the official key names (`weight`, `bias`, `running_mean`,
//! `running_var`; burn's own BatchNorm calls them gamma/beta). Inference uses the running
//! statistics: `(x - running_mean) / sqrt(running_var + eps) * weight + bias`.
//!
//! The state dict's `num_batches_tracked` counter is accepted by the loader next to
//! `running_mean` and not modelled (inference never reads it).

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

#[derive(Module, Debug)]
pub struct BatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    /// Frozen statistics.
    pub running_mean: Param<Tensor<1>>,
    pub running_var: Param<Tensor<1>>,
    /// Not stored in state dicts: DnCNN uses 1e-4, PyTorch's default is 1e-5.
    pub eps: f64,
}

impl BatchNorm {
    pub fn new(channels: usize, eps: f64, device: &Device) -> Self {
        let frozen = |v: f32| {
            Param::from_tensor(Tensor::full([channels], v, device)).set_require_grad(false)
        };
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: frozen(0.0),
            running_var: frozen(1.0),
            eps,
        }
    }

    /// Inference-mode normalisation with the running statistics.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [c] = self.weight.dims();
        let scale = self.weight.val() / self.running_var.val().add_scalar(self.eps).sqrt();
        let shift = self.bias.val() - self.running_mean.val() * scale.clone();
        x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1])
    }
}
