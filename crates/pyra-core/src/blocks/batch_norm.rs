//! `nn.BatchNorm2d` with the official key names (`weight`, `bias`, `running_mean`,
//! `running_var`; burn's own BatchNorm calls them gamma/beta).
//!
//! - Inference: `(x - running_mean) / sqrt(running_var + eps) * weight + bias`.
//! - Training (the input lives on an autodiff device, as burn's own BatchNorm decides): the
//!   batch's per-channel mean and biased variance normalise, and the running statistics move
//!   as PyTorch moves them: `running = (1 - momentum) * running + momentum * batch`, with the
//!   unbiased batch variance. They are [`RunningState`]s, so they travel with the weights
//!   (state dicts, checkpoints) under their official names without being trained.
//!
//! The state dict's `num_batches_tracked` counter is accepted by the loader next to
//! `running_mean` and not modelled (it only matters for `momentum=None`, which no official
//! model uses).

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor};

/// PyTorch's default momentum of the running statistics.
pub const MOMENTUM: f64 = 0.1;

#[derive(Module, Debug)]
pub struct BatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    /// Not stored in state dicts: DnCNN uses 1e-4, PyTorch's default is 1e-5.
    pub eps: f64,
}

impl BatchNorm {
    pub fn new(channels: usize, eps: f64, device: &Device) -> Self {
        let frozen =
            |v: f32| RunningState::new(Tensor::full([channels], v, device).set_require_grad(false));
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: frozen(0.0),
            running_var: frozen(1.0),
            eps,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if x.device().is_autodiff() {
            self.forward_train(x)
        } else {
            self.forward_inference(x)
        }
    }

    /// Normalisation with the running statistics.
    pub fn forward_inference(&self, x: Tensor<4>) -> Tensor<4> {
        let [c] = self.weight.dims();
        let scale = self.weight.val() / self.running_var.value().add_scalar(self.eps).sqrt();
        let shift = self.bias.val() - self.running_mean.value() * scale.clone();
        x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1])
    }

    /// Normalisation with the batch statistics; updates the running statistics.
    pub fn forward_train(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let count = n * h * w;
        // [C, N*H*W]: statistics per channel over batch and space.
        let per_channel = x.clone().swap_dims(0, 1).reshape([c, count]);
        let mean = per_channel.clone().mean_dim(1); // [C, 1]
        let centred = per_channel - mean.clone();
        let var = centred.clone().square().mean_dim(1); // biased, [C, 1]

        let unbiased = var.clone().detach() * (count as f64 / (count.max(2) - 1) as f64);
        let blend = |running: &RunningState<Tensor<1>>, batch: Tensor<2>| {
            let updated = running.value_sync().mul_scalar(1.0 - MOMENTUM)
                + batch.reshape([c]).mul_scalar(MOMENTUM);
            running.update(updated.set_require_grad(false));
            running.value_sync();
        };
        blend(&self.running_mean, mean.detach());
        blend(&self.running_var, unbiased);

        let normalised = centred / var.add_scalar(self.eps).sqrt();
        let y = normalised * self.weight.val().reshape([c, 1]) + self.bias.val().reshape([c, 1]);
        y.reshape([c, n, h, w]).swap_dims(0, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn training_normalises_the_batch_and_moves_the_running_statistics_like_pytorch() {
        let device = backend::with_autodiff(backend::cpu());
        let bn = BatchNorm::new(2, 1e-5, &device);
        let x = Tensor::<4>::random([3, 2, 4, 5], Distribution::Normal(2.0, 3.0), &device);
        let y = bn.forward(x.clone());
        let values: Vec<f32> = x.to_data().try_into_vec::<f32>().unwrap();
        let out: Vec<f32> = y.to_data().try_into_vec::<f32>().unwrap();
        let running_mean: Vec<f32> = bn
            .running_mean
            .value()
            .to_data()
            .try_into_vec::<f32>()
            .unwrap();
        let running_var: Vec<f32> = bn
            .running_var
            .value()
            .to_data()
            .try_into_vec::<f32>()
            .unwrap();
        for c in 0..2 {
            // Reference statistics in f64, straight from the definition.
            let channel: Vec<(usize, f64)> = (0..values.len())
                .filter(|i| (i / 20) % 2 == c)
                .map(|i| (i, values[i] as f64))
                .collect();
            let n = channel.len() as f64;
            let mean = channel.iter().map(|v| v.1).sum::<f64>() / n;
            let var = channel.iter().map(|v| (v.1 - mean).powi(2)).sum::<f64>() / n;
            for &(i, v) in &channel {
                let expected = (v - mean) / (var + 1e-5).sqrt();
                assert!((out[i] as f64 - expected).abs() < 1e-4, "{i}");
            }
            assert!((running_mean[c] as f64 - 0.1 * mean).abs() < 1e-5);
            let expected_var = 0.9 + 0.1 * var * n / (n - 1.0);
            assert!((running_var[c] as f64 - expected_var).abs() < 1e-4);
        }
        // The running statistics are buffers: no gradient, and the visible state-dict values.
        let dict = crate::weights::state_dict_of(&bn);
        let stored = dict.get("running_mean").unwrap().to_f32();
        assert_eq!(stored, running_mean);
        assert!(!crate::weights::trainable_keys(&bn).contains("running_mean"));
    }

    #[test]
    fn inference_uses_the_running_statistics() {
        let device = backend::cpu();
        let mut bn = BatchNorm::new(1, 0.0, &device);
        bn.running_mean =
            RunningState::new(Tensor::from_data(TensorData::new(vec![1f32], [1]), &device));
        bn.running_var =
            RunningState::new(Tensor::from_data(TensorData::new(vec![4f32], [1]), &device));
        let x = Tensor::<4>::from_data(TensorData::new(vec![3f32, 5.0], [1, 1, 1, 2]), &device);
        let y: Vec<f32> = bn.forward(x).to_data().try_into_vec::<f32>().unwrap();
        assert_eq!(y, vec![1.0, 2.0]);
    }
}
