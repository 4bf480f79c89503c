//! Adam as PyTorch's `torch.optim.Adam` computes it, the learning-rate schedule and gradient
//! clipping.
//!
//! Written by hand rather than using burn's `Adam`: its state is keyed by `ParamId`s that are
//! regenerated when a model is rebuilt, and is saved through burn's own record format. A
//! checkpoint here must hold the moments under the state-dict keys, next to the weights, in
//! one safetensors file, and restore them bit for bit; keeping the state as plain `f32`
//! vectors keyed by name gives exactly that. The update is element-wise and costs
//! microseconds next to a forward/backward.

use std::collections::BTreeMap;

use pyra_core::weights::{NamedTensor, StateDict};

/// Adam's running moments of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
}

/// Adam (Kingma & Ba) with PyTorch's bias correction and epsilon placement.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Updates taken so far (PyTorch's `state['step']`).
    pub steps: u64,
    /// Moments by parameter key (primary keys only: aliases share their tensor's state).
    pub state: BTreeMap<String, Moments>,
}

impl Default for Adam {
    /// The papers' settings: beta 0.9 / 0.999, eps 1e-8.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            steps: 0,
            state: BTreeMap::new(),
        }
    }
}

impl Adam {
    /// One update of every parameter in `grads` (keys of `params`), in place.
    pub fn update(&mut self, params: &mut StateDict, grads: &BTreeMap<String, Vec<f32>>, lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2 = 1.0 - self.beta2.powi(t);
        let step_size = (lr / bias1) as f32;
        let bias2_sqrt = bias2.sqrt() as f32;
        let (b1, b2, eps) = (self.beta1 as f32, self.beta2 as f32, self.eps as f32);
        for param in params.tensors.iter_mut() {
            let Some(grad) = grads.get(&param.name) else {
                continue;
            };
            let values = match &mut param.values {
                pyra_core::weights::TensorValues::F32(v) => v,
                pyra_core::weights::TensorValues::I64(_) => continue,
            };
            let moments = self
                .state
                .entry(param.name.clone())
                .or_insert_with(|| Moments {
                    exp_avg: vec![0.0; grad.len()],
                    exp_avg_sq: vec![0.0; grad.len()],
                });
            for (((p, &g), m), v) in values
                .iter_mut()
                .zip(grad)
                .zip(moments.exp_avg.iter_mut())
                .zip(moments.exp_avg_sq.iter_mut())
            {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let denom = v.sqrt() / bias2_sqrt + eps;
                *p -= step_size * *m / denom;
            }
        }
    }

    /// The moments as named tensors (`exp_avg.<key>`, `exp_avg_sq.<key>`).
    pub fn to_tensors(&self, params: &StateDict) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        for (name, moments) in &self.state {
            let shape = params
                .get(name)
                .map(|t| t.shape.clone())
                .unwrap_or_else(|| vec![moments.exp_avg.len()]);
            out.push(NamedTensor::f32(
                format!("exp_avg.{name}"),
                shape.clone(),
                moments.exp_avg.clone(),
            ));
            out.push(NamedTensor::f32(
                format!("exp_avg_sq.{name}"),
                shape,
                moments.exp_avg_sq.clone(),
            ));
        }
        out
    }

    /// Restore the moments written by [`Adam::to_tensors`].
    pub fn from_tensors(steps: u64, tensors: &[&NamedTensor]) -> Result<Self, String> {
        let mut avg = BTreeMap::new();
        let mut sq = BTreeMap::new();
        for t in tensors {
            if let Some(name) = t.name.strip_prefix("exp_avg_sq.") {
                sq.insert(name.to_string(), t.to_f32());
            } else if let Some(name) = t.name.strip_prefix("exp_avg.") {
                avg.insert(name.to_string(), t.to_f32());
            } else {
                return Err(format!("unexpected optimizer tensor `{}`", t.name));
            }
        }
        let mut state = BTreeMap::new();
        for (name, exp_avg) in avg {
            let exp_avg_sq = sq
                .remove(&name)
                .ok_or_else(|| format!("optimizer state of `{name}` lacks exp_avg_sq"))?;
            state.insert(
                name,
                Moments {
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        if let Some(name) = sq.keys().next() {
            return Err(format!("optimizer state of `{name}` lacks exp_avg"));
        }
        Ok(Self {
            steps,
            state,
            ..Self::default()
        })
    }
}

/// Learning rate at `step` (0-based): linear warm-up, then `base * gamma^(step / every)`.
pub fn learning_rate(base: f64, step: u64, warmup: u64, decay_every: u64, gamma: f64) -> f64 {
    let decayed = match step.checked_div(decay_every) {
        Some(periods) => base * gamma.powi(periods as i32),
        None => base,
    };
    if step < warmup {
        decayed * (step + 1) as f64 / warmup as f64
    } else {
        decayed
    }
}

/// Scale all gradients so their global L2 norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut BTreeMap<String, Vec<f32>>, max_norm: Option<f64>) -> f64 {
    let norm = grads
        .values()
        .flat_map(|g| g.iter())
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    if let Some(max_norm) = max_norm {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.values_mut() {
                for v in g.iter_mut() {
                    *v *= coef as f32;
                }
            }
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_matches_the_pytorch_update() {
        // torch.optim.Adam([p], lr=0.1) on p = [1.0, -2.0] with grads [0.5, -1.0] then
        // [0.25, 3.0], worked by hand from the documented algorithm:
        // step 1: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g² -> p -= 0.1 * sign(g) (eps aside).
        let mut params = StateDict::default();
        params.push(NamedTensor::f32("w", vec![2], vec![1.0, -2.0]));
        let mut adam = Adam::default();
        let mut grads = BTreeMap::new();
        grads.insert("w".to_string(), vec![0.5f32, -1.0]);
        adam.update(&mut params, &grads, 0.1);
        let w = params.get("w").unwrap().to_f32();
        assert!(
            (w[0] - 0.9).abs() < 1e-6 && (w[1] + 1.9).abs() < 1e-6,
            "{w:?}"
        );
        // step 2: m = 0.9*0.05 + 0.1*0.25 = 0.07, v = 0.999*0.00025 + 0.001*0.0625
        // m̂ = 0.07/0.19, v̂ = v/(1-0.999²); p0 = 0.9 - 0.1 * m̂ / sqrt(v̂).
        grads.insert("w".to_string(), vec![0.25f32, 3.0]);
        adam.update(&mut params, &grads, 0.1);
        let m: f64 = 0.07;
        let v: f64 = 0.999 * 0.00025 + 0.001 * 0.0625;
        let expected = 0.9 - 0.1 * (m / 0.19) / ((v / (1.0 - 0.999f64.powi(2))).sqrt() + 1e-8);
        let w = params.get("w").unwrap().to_f32();
        assert!(
            (w[0] as f64 - expected).abs() < 1e-5,
            "{} vs {expected}",
            w[0]
        );
        assert_eq!(adam.steps, 2);
    }

    #[test]
    fn moments_round_trip_through_tensors() {
        let mut params = StateDict::default();
        params.push(NamedTensor::f32("a.weight", vec![1, 2], vec![0.3, 0.4]));
        let mut adam = Adam::default();
        let mut grads = BTreeMap::new();
        grads.insert("a.weight".to_string(), vec![0.1f32, -0.2]);
        adam.update(&mut params, &grads, 1e-3);
        let tensors = adam.to_tensors(&params);
        assert_eq!(tensors[0].shape, vec![1, 2]);
        let back = Adam::from_tensors(adam.steps, &tensors.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(back, adam);
    }

    #[test]
    fn schedule_warms_up_then_halves() {
        assert_eq!(learning_rate(1e-4, 0, 0, 200, 0.5), 1e-4);
        assert_eq!(learning_rate(1e-4, 199, 0, 200, 0.5), 1e-4);
        assert_eq!(learning_rate(1e-4, 200, 0, 200, 0.5), 5e-5);
        assert_eq!(learning_rate(1e-4, 450, 0, 200, 0.5), 2.5e-5);
        assert!((learning_rate(1e-4, 0, 10, 0, 0.5) - 1e-5).abs() < 1e-12);
        assert_eq!(learning_rate(1e-4, 10, 10, 0, 0.5), 1e-4);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut grads = BTreeMap::new();
        grads.insert("a".to_string(), vec![3.0f32, 4.0]);
        assert_eq!(clip_grad_norm(&mut grads, None), 5.0);
        assert_eq!(grads["a"], vec![3.0, 4.0]);
        clip_grad_norm(&mut grads, Some(1.0));
        let n = (grads["a"][0].powi(2) + grads["a"][1].powi(2)).sqrt();
        assert!((n - 1.0).abs() < 1e-5, "{n}");
    }
}
