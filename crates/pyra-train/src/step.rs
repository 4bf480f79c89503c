//! One training step: forward, L1 (PANet) or MSE loss, backward, optional gradient clipping,
//! Adam (beta 0.9/0.999, eps 1e-8, as the papers).
//!
//! Parameters the official models share (PANet's res-block PReLU, PA-EDSR's `msa` alias) get
//! one gradient (the sum over their uses, as autodiff gives it), one Adam state and one
//! update, and all their keys hold the result: the model is rebuilt from its state dict after
//! every step, and strict loading keeps the sharing.
//!
//! Data parallel ([`Trainer::add_replicas`], `pyra train --devices a,b`): one copy of the
//! model per device. A batch of N patches is cut along N into one contiguous shard per
//! device, each copy computes its shard's loss and gradients in its own thread, and the host
//! averages them weighted by shard size: with mean-reduced losses, the sum over shards of
//! `n_i / N * grad_i` is the gradient of the whole batch. One Adam update follows (the
//! optimizer runs on the host anyway, see `optim.rs`) and every copy receives the new
//! weights. burn 0.22's own DDP reduces on the devices instead, but only cubecl-cuda
//! implements that all-reduce (over NCCL; Flex and wgpu refuse it), so it could not run on any
//! machine Pyra is tested on; the host reduction runs, and is tested, on every backend.

use std::collections::{BTreeMap, HashMap};

use pyra_core::backend;
use pyra_core::burn::tensor::{Device, Tensor};
use pyra_core::networks::{AnyNetwork, ArchConfig};
use pyra_core::weights::{
    alias_map, gradients_of, load_state_dict, state_dict_of, LoadOptions, StateDict, TensorValues,
};

use crate::config::LossKind;
use crate::optim::{clip_grad_norm, Adam};

/// The training loss (an alias kept for library users).
pub type Loss = LossKind;

/// Gradients on the host by primary state-dict key.
pub type Gradients = BTreeMap<String, Vec<f32>>;

/// Start and length of shard `i` of `copies` contiguous shards of `batch` items (the first
/// `batch % copies` shards take one more).
fn shard(batch: usize, copies: usize, i: usize) -> (usize, usize) {
    let (base, extra) = (batch / copies, batch % copies);
    let len = base + usize::from(i < extra);
    let start = i * base + i.min(extra);
    (start, len)
}

/// The loss of one batch (every supervised prediction adds its loss: PNEN's Y and each Y_m)
/// and the gradients of the primary keys, on the host.
fn loss_and_gradients(
    model: &AnyNetwork,
    loss_kind: LossKind,
    input: Tensor<4>,
    target: Tensor<4>,
    aliases: &HashMap<String, String>,
) -> (f32, Gradients) {
    let loss = model
        .forward_supervised(input)
        .into_iter()
        .map(|output| loss_kind.compute(output, target.clone()))
        .reduce(|a, b| a + b)
        .expect("a network has an output");
    let value = loss.clone().into_scalar::<f32>();
    if !value.is_finite() {
        return (value, BTreeMap::new());
    }
    let grads = gradients_of(model, &loss.backward())
        .tensors
        .into_iter()
        .filter(|t| !aliases.contains_key(&t.name))
        .map(|t| {
            let values = t.to_f32();
            (t.name, values)
        })
        .collect();
    (value, grads)
}

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
    /// Data parallel: copies of `model` on further autodiff devices, with their devices.
    replicas: Vec<(AnyNetwork, Device)>,
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
            replicas: Vec::new(),
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

    /// Replace the weights (strict keys and shapes), of every copy.
    pub fn set_weights(&mut self, weights: &StateDict) -> Result<(), String> {
        let load = |model: &AnyNetwork| {
            load_state_dict(model.clone(), weights, &LoadOptions::default())
                .map(|(model, _)| model)
                .map_err(|e| e.to_string())
        };
        self.model = load(&self.model)?;
        for (replica, _) in self.replicas.iter_mut() {
            *replica = load(replica)?;
        }
        Ok(())
    }

    /// Train data-parallel: one more copy of the architecture (`arch`, the settings of
    /// `model`) on each of `devices`, with automatic differentiation; the copies receive
    /// `model`'s weights now and after every step. A device may repeat (its copies share it).
    pub fn add_replicas(&mut self, arch: &ArchConfig, devices: &[Device]) -> Result<(), String> {
        for device in devices {
            let device = backend::with_autodiff(device.clone());
            self.replicas.push((arch.init(&device), device));
        }
        let weights = self.weights();
        self.set_weights(&weights)
    }

    /// How many copies compute a step (1 without data parallelism).
    pub fn copies(&self) -> usize {
        1 + self.replicas.len()
    }

    /// One optimisation step on a batch. A non-finite loss is an error and leaves the model
    /// untouched.
    pub fn train_step(
        &mut self,
        input: Tensor<4>,
        target: Tensor<4>,
        learning_rate: f64,
    ) -> Result<StepStats, String> {
        let (value, mut grads) = self.loss_and_gradients(input, target)?;
        if !value.is_finite() {
            return Err(format!(
                "the loss became {value} at step {}; lower optim.lr or set optim.clip_grad_norm",
                self.step + 1
            ));
        }
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

    /// The loss of a batch and the gradients of its primary keys, on the host, without an
    /// update. Data parallel: the batch cut into one shard per copy, each shard's loss and
    /// gradients computed concurrently on its device, and their average weighted by shard
    /// size.
    pub fn loss_and_gradients(
        &self,
        input: Tensor<4>,
        target: Tensor<4>,
    ) -> Result<(f32, Gradients), String> {
        if self.replicas.is_empty() {
            return Ok(loss_and_gradients(
                &self.model,
                self.loss,
                input,
                target,
                &self.aliases,
            ));
        }
        let batch = input.dims()[0];
        let copies = self.copies();
        if batch < copies {
            return Err(format!(
                "a batch of {batch} cannot be shared by {copies} devices; raise data.batch_size"
            ));
        }
        let mut copies_of = vec![(self.model.clone(), None)];
        copies_of.extend(
            self.replicas
                .iter()
                .map(|(model, device)| (model.clone(), Some(device.clone()))),
        );
        let results: Vec<(usize, f32, Gradients)> = std::thread::scope(|scope| {
            let handles: Vec<_> = copies_of
                .into_iter()
                .enumerate()
                .map(|(i, (model, device))| {
                    let (start, len) = shard(batch, copies, i);
                    let mut x = input.clone().narrow(0, start, len);
                    let mut y = target.clone().narrow(0, start, len);
                    if let Some(device) = &device {
                        x = x.to_device(device);
                        y = y.to_device(device);
                    }
                    let (loss, aliases) = (self.loss, &self.aliases);
                    scope.spawn(move || {
                        let (value, grads) = loss_and_gradients(&model, loss, x, y, aliases);
                        (len, value, grads)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a data-parallel worker panicked"))
                .collect()
        });
        let mut loss = 0.0f64;
        let mut total: Gradients = BTreeMap::new();
        for (len, value, grads) in results {
            let weight = len as f32 / batch as f32;
            loss += weight as f64 * value as f64;
            for (name, values) in grads {
                let sum = total.entry(name).or_insert_with(|| vec![0.0; values.len()]);
                for (s, g) in sum.iter_mut().zip(values) {
                    *s += weight * g;
                }
            }
        }
        Ok((loss as f32, total))
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
