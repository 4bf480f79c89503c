//! Gradient checks of the non-local blocks (NLB, PNB, APNB): autodiff against central finite
//! differences, for the input (entry by entry) and for all parameters together (the
//! directional derivative along a fixed random direction).
//!
//! In f32: burn's Flex convolutions have no f64 kernel (an f64 tensor reaches `conv3d_f32`
//! and panics), so the differences use a step of 1e-2 and a tolerance of 1e-2 relative —
//! loose enough for f32 rounding, far below what a wrong derivative gives (order 1).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Gradients, Tensor, TensorData};
use pyra_core::backend;
use pyra_core::blocks::{ApnbConfig, NonLocalConfig, PyramidNonLocalConfig};
use pyra_core::burn;

/// Deterministic pseudo-random values in [-1, 1) (a 64-bit LCG).
fn pseudo_random(seed: u64, count: usize) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Adds `t` times a fixed pseudo-random direction to every parameter (the k-th parameter
/// visited gets direction seed k).
struct Perturb {
    t: f64,
    index: u64,
}
impl ModuleMapper for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        let value = param.val();
        let shape = value.dims();
        let count = shape.iter().product();
        let direction = Tensor::<D>::from_data(
            TensorData::new(to_f32(pseudo_random(1000 + self.index, count)), shape),
            &value.device(),
        );
        self.index += 1;
        Param::initialized(id, (value + direction.mul_scalar(self.t)).detach())
            .set_require_grad(param.is_require_grad())
    }
}

/// `Σ_params <grad, direction>` for the directions of [`Perturb`].
struct Directional<'a> {
    grads: &'a Gradients,
    index: u64,
    total: f64,
}
impl ModuleVisitor for Directional<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let count: usize = value.dims().iter().product();
        let direction = pseudo_random(1000 + self.index, count);
        self.index += 1;
        if let Some(grad) = value.grad(self.grads) {
            let grad = grad
                .into_data()
                .convert::<f64>()
                .try_to_vec::<f64>()
                .unwrap();
            self.total += grad.iter().zip(&direction).map(|(g, d)| g * d).sum::<f64>();
        }
    }
}

fn to_f32(values: Vec<f64>) -> Vec<f32> {
    values.into_iter().map(|v| v as f32).collect()
}

/// Relative error, with gradients below 0.05 in size compared absolutely.
fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(0.05)
}

fn check<M: Module + Clone>(
    name: &str,
    module: M,
    forward: impl Fn(&M, Tensor<4>) -> Tensor<4>,
    shape: [usize; 4],
) {
    let device: Device = backend::with_autodiff(backend::cpu());
    let count: usize = shape.iter().product();
    let x_values = pseudo_random(7, count);
    let input = |values: &[f64]| {
        Tensor::<4>::from_data(TensorData::new(to_f32(values.to_vec()), shape), &device)
    };
    let weights = Tensor::<4>::from_data(
        TensorData::new(to_f32(pseudo_random(11, count)), shape),
        &device,
    );
    let loss_of = |m: &M, x: Tensor<4>| -> Tensor<1> { (forward(m, x) * weights.clone()).sum() };
    let scalar = |t: Tensor<1>| t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()[0];

    let x = input(&x_values).require_grad();
    let loss = loss_of(&module, x.clone());
    let grads = loss.backward();
    let grad_x = x
        .grad(&grads)
        .expect("input gradient")
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap();

    let eps = 1e-2;
    let mut worst = 0.0f64;
    for i in (0..count).step_by((count / 12).max(1)) {
        let mut plus = x_values.clone();
        plus[i] += eps;
        let mut minus = x_values.clone();
        minus[i] -= eps;
        let numeric = (scalar(loss_of(&module, input(&plus)))
            - scalar(loss_of(&module, input(&minus))))
            / (2.0 * eps);
        let error = relative(numeric, grad_x[i]);
        worst = worst.max(error);
    }

    let mut directional = Directional {
        grads: &grads,
        index: 0,
        total: 0.0,
    };
    module.visit(&mut directional);
    let shifted = |t: f64| {
        let m = module.clone().map(&mut Perturb { t, index: 0 });
        scalar(loss_of(&m, input(&x_values)))
    };
    let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
    let param_error = relative(numeric, directional.total);
    println!(
        "{name}: worst input-gradient relative error {worst:.2e}, parameter directional \
         derivative {:.6} vs numeric {numeric:.6} (relative error {param_error:.2e})",
        directional.total
    );
    assert!(worst < 1e-2, "{name}: input gradient error {worst}");
    assert!(
        param_error < 1e-2,
        "{name}: parameter gradient error {param_error}"
    );
}

#[test]
fn non_local_block_gradients() {
    let device = backend::with_autodiff(backend::cpu());
    let block = NonLocalConfig::new(6).init(&device);
    check("NLB", block, |m, x| m.forward(x), [2, 6, 5, 7]);
}

#[test]
fn pyramid_non_local_block_gradients_with_sizes_not_multiple_of_8() {
    let device = backend::with_autodiff(backend::cpu());
    let block = PyramidNonLocalConfig::new(6)
        .with_key_channels(5)
        .with_value_channels(4)
        .init(&device);
    check("PNB", block, |m, x| m.forward(x), [2, 6, 11, 9]);
}

#[test]
fn apnb_gradients() {
    let device = backend::with_autodiff(backend::cpu());
    let block = ApnbConfig::new(6).init(&device);
    check("APNB", block, |m, x| m.forward(x), [1, 6, 10, 9]);
}

#[test]
fn pyramid_non_local_shapes_and_map_sizes() {
    let device = backend::cpu();
    let block = PyramidNonLocalConfig::new(8).init(&device);
    let x = Tensor::<4>::random([1, 8, 20, 13], Distribution::Normal(0.0, 1.0), &device);
    let maps = block.attention_maps(x.clone());
    // Keys per scale: ceil(20/2)*ceil(13/2), ceil(20/4)*ceil(13/4), ceil(20/8)*ceil(13/8).
    let sizes: Vec<[usize; 3]> = maps.iter().map(|m| m.dims()).collect();
    assert_eq!(sizes, vec![[1, 260, 70], [1, 260, 20], [1, 260, 6]]);
    let rows = maps[0]
        .clone()
        .sum_dim(2)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert!(
        rows.iter().all(|s| (s - 1.0).abs() < 1e-4),
        "softmax rows sum to 1"
    );
    assert_eq!(block.forward(x).dims(), [1, 8, 20, 13]);
}
