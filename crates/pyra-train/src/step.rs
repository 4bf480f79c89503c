//! One training step: forward, L1 (PANet) or MSE loss, backward, optional gradient clipping,
//! Adam (beta 0.9/0.999, eps 1e-8, as the papers).
//!
//! Parameters the official models share (PANet's res-block PReLU, PA-EDSR's `msa` alias) get
//! one gradient (the sum over their uses, as autodiff gives it), one Adam state and one
//! update, and all their keys hold the result: the model is rebuilt from its state dict after
//! every step, and strict loading keeps the sharing.

use std::collections::{BTreeMap, HashMap};

use pyra_core::burn::tensor::Tensor;
use pyra_core::networks::AnyNetwork;
use pyra_core::weights::{
    alias_map, gradients_of, load_state_dict, state_dict_of, LoadOptions, StateDict, TensorValues,
};

use crate::config::LossKind;
use crate::optim::{clip_grad_norm, Adam};

/// The training loss (an alias kept for library users).
pub type Loss = LossKind;

impl LossKind {
    pub fn compute(self, output: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
        let diff = output - target;
        match self {
            LossKind::L1 => diff.abs().mean(),
            LossKind::Mse => diff.square().mean(),
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Loss of the batch before the update.
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// A network with its optimizer state.
pub struct Trainer {
    /// Lives on an autodiff device.
    pub model: AnyNetwork,
    pub adam: Adam,
    pub loss: LossKind,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f64>,
    /// Steps taken so far.
    pub step: u64,
    /// Alias key -> the key of the tensor it shares.
    aliases: HashMap<String, String>,
}

impl Trainer {
    /// `model` must live on an autodiff device.
    pub fn new(model: AnyNetwork, loss: LossKind) -> Self {
        let aliases = alias_map(&model);
        Self {
            model,
            adam: Adam::default(),
            loss,
            clip_grad_norm: None,
            step: 0,
            aliases,
        }
    }

    /// The weights under their state-dict keys.
    pub fn weights(&self) -> StateDict {
        state_dict_of(&self.model)
    }

    /// Replace the weights (strict keys and shapes).
    pub fn set_weights(&mut self, weights: &StateDict) -> Result<(), String> {
        let (model, _) = load_state_dict(self.model.clone(), weights, &LoadOptions::default())
            .map_err(|e| e.to_string())?;
        self.model = model;
        Ok(())
    }

    /// One optimisation step on a batch. A non-finite loss is an error and leaves the model
    /// untouched.
    pub fn train_step(
        &mut self,
        input: Tensor<4>,
        target: Tensor<4>,
        learning_rate: f64,
    ) -> Result<StepStats, String> {
        // Every supervised prediction adds its loss (PNEN: Y and each Y_m).
        let loss = self
            .model
            .forward_supervised(input)
            .into_iter()
            .map(|output| self.loss.compute(output, target.clone()))
            .reduce(|a, b| a + b)
            .expect("a network has an output");
        let value = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(format!(
                "the loss became {value} at step {}; lower optim.lr or set optim.clip_grad_norm",
                self.step + 1
            ));
        }
        let gradients = gradients_of(&self.model, &loss.backward());
        let mut grads: BTreeMap<String, Vec<f32>> = gradients
            .tensors
            .into_iter()
            .filter(|t| !self.aliases.contains_key(&t.name))
            .map(|t| {
                let values = t.to_f32();
                (t.name, values)
            })
            .collect();
        let grad_norm = clip_grad_norm(&mut grads, self.clip_grad_norm);
        if !grad_norm.is_finite() {
            return Err(format!(
                "the gradient norm became {grad_norm} at step {}; lower optim.lr or set optim.clip_grad_norm",
                self.step + 1
            ));
        }
        let mut params = self.weights();
        self.adam.update(&mut params, &grads, learning_rate);
        self.copy_to_aliases(&mut params);
        self.set_weights(&params)?;
        self.step += 1;
        Ok(StepStats {
            loss: value,
            grad_norm,
        })
    }

    fn copy_to_aliases(&self, params: &mut StateDict) {
        let updated: HashMap<String, TensorValues> = params
            .tensors
            .iter()
            .filter(|t| self.aliases.values().any(|p| p == &t.name))
            .map(|t| (t.name.clone(), t.values.clone()))
            .collect();
        for t in params.tensors.iter_mut() {
            if let Some(primary) = self.aliases.get(&t.name) {
                t.values = updated[primary].clone();
            }
        }
    }
}
