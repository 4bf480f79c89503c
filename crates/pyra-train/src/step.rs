//! One training step: forward, L1 (PANet) or MSE loss, backward, Adam (beta 0.9/0.999,
//! eps 1e-8, as the papers), then re-tie parameters the official models share (PANet's
//! res-block PReLU, PA-EDSR's `msa` alias): burn's optimizer updates a shared parameter at its
//! first occurrence only.

use pyra_core::burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use pyra_core::burn::tensor::Tensor;
use pyra_core::networks::AnyNetwork;
use pyra_core::weights::tie_shared_params;

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Mean absolute error (PANet, EDSR).
    L1,
    /// Mean squared error (DnCNN, PNEN).
    Mse,
}

impl Loss {
    pub fn compute(self, output: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
        let diff = output - target;
        match self {
            Loss::L1 => diff.abs().mean(),
            Loss::Mse => diff.square().mean(),
        }
    }
}

/// A network with its optimizer state.
pub struct Trainer {
    pub model: AnyNetwork,
    pub optimizer: ModuleOptimizer,
    pub loss: Loss,
    /// Steps taken so far.
    pub step: u64,
}

impl Trainer {
    /// `model` must live on an autodiff device.
    pub fn new(model: AnyNetwork, loss: Loss) -> Self {
        Self {
            model,
            optimizer: AdamConfig::new()
                .with_beta_1(0.9)
                .with_beta_2(0.999)
                .with_epsilon(1e-8)
                .init(),
            loss,
            step: 0,
        }
    }

    /// One optimisation step on a batch; returns the loss before the update.
    pub fn train_step(&mut self, input: Tensor<4>, target: Tensor<4>, learning_rate: f64) -> f32 {
        let output = self.model.forward(input);
        let loss = self.loss.compute(output, target);
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        // Cloning a module clones tensor handles, not data.
        let stepped = self
            .optimizer
            .step(learning_rate, self.model.clone(), grads);
        self.model = tie_shared_params(stepped);
        self.step += 1;
        value
    }
}
