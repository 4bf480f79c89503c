//! Gradient checks of PNEN's blocks (NLB, PNB, APNB, and the dilated residual block in
//! training mode, BatchNorm on batch statistics): autodiff against central finite
//! differences, for the input (entry by entry) and for all parameters together (the
//! directional derivative along a fixed random direction).
//!
//! In f32: burn's Flex convolutions have no f64 kernel (an f64 tensor reaches `conv3d_f32`
//! and panics), so the differences use a step of 1e-2 and a tolerance of 1e-2 relative —
//! loose enough for f32 rounding, far below what a wrong derivative gives (order 1).
//!
//! And against an independent reference (`blocks_match_the_independent_float64_reference`):
//! `tools/pnen_reference.py` implements the four blocks in float64 NumPy from the paper and
//! takes float64 central differences of every input and parameter entry
//! (`fixtures/pnen/*.safetensors`); Pyra's autodiff gradients must agree to 1e-4 relative.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Gradients, Tensor, TensorData};
use pyra_core::backend;
use pyra_core::blocks::{
    ApnbConfig, DilatedResidual, DilatedResidualConfig, NonLocalConfig, PyramidNonLocalConfig,
};
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

/// Deterministic parameters (burn's initialisers are not seeded): convolution weights
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like PyTorch's default, 1-D trainables (biases, BN
/// affine) 1 + U(-0.2, 0.2); buffers (running statistics) untouched.
struct Reinit {
    index: u64,
}
impl ModuleMapper for Reinit {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        let trainable = param.is_require_grad();
        let value = param.val();
        if !trainable {
            return Param::initialized(id, value);
        }
        let shape = value.dims();
        let count = shape.iter().product();
        let r = pseudo_random(600 + self.index, count);
        self.index += 1;
        let values: Vec<f64> = if D == 4 {
            let bound = 1.0 / ((shape[1] * shape[2] * shape[3]) as f64).sqrt();
            r.iter().map(|v| v * bound).collect()
        } else {
            r.iter().map(|v| 1.0 + 0.2 * v).collect()
        };
        let tensor =
            Tensor::<D>::from_data(TensorData::new(to_f32(values), shape), &value.device());
        Param::initialized(id, tensor).set_require_grad(true)
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

/// The on/off pattern of a network's ReLUs: a finite difference is only a derivative when
/// its two evaluations and the base point share it (no kink crossed in between).
type ReluPattern<M> = dyn Fn(&M, Tensor<4>) -> Vec<bool>;

fn check<M: Module + Clone>(
    name: &str,
    module: M,
    forward: impl Fn(&M, Tensor<4>) -> Tensor<4>,
    shape: [usize; 4],
) {
    check_piecewise(name, module, forward, None, shape)
}

fn check_piecewise<M: Module + Clone>(
    name: &str,
    module: M,
    forward: impl Fn(&M, Tensor<4>) -> Tensor<4>,
    pattern: Option<&ReluPattern<M>>,
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
    // The finite differences' loss, summed in f64 on the host: an f32 sum over the output
    // rounds differently for inputs a step apart, and that noise, divided by the step, was
    // most of the numeric derivative's error (up to 1.2e-2 with the AVX2 convolution kernel,
    // whose accumulation order differs from the AVX-512 one's).
    let weight_values = pseudo_random(11, count);
    let numeric_loss = |m: &M, x: Tensor<4>| -> f64 {
        let out = forward(m, x)
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap();
        out.iter()
            .zip(&weight_values)
            .map(|(o, w)| o * (*w as f32) as f64)
            .sum()
    };

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

    let eps = 4e-2;
    let same_pattern = |m_plus: &M, plus: &[f64], m_minus: &M, minus: &[f64]| match pattern {
        None => true,
        Some(p) => {
            let base = p(&module, input(&x_values));
            p(m_plus, input(plus)) == base && p(m_minus, input(minus)) == base
        }
    };
    let mut worst = 0.0f64;
    let mut compared = 0;
    for i in (0..count).step_by((count / 24).max(1)) {
        let mut plus = x_values.clone();
        plus[i] += eps;
        let mut minus = x_values.clone();
        minus[i] -= eps;
        if !same_pattern(&module, &plus, &module, &minus) {
            continue;
        }
        compared += 1;
        // Central differences at eps and eps/2, Richardson-extrapolated (as for the
        // parameters below): the O(eps²) term of the blocks' curvature cancels, so the step
        // can be 4e-2, and the f32 forward's rounding, divided by the step, stays small
        // (DRB's worst entry: 1.3e-3 to 2.2e-3 on the scalar, AVX2 and burn convolutions;
        // a plain difference at 1e-2 gave up to 1.2e-2 with the AVX2 kernel).
        let central = |h: f64| {
            let mut plus = x_values.clone();
            plus[i] += h;
            let mut minus = x_values.clone();
            minus[i] -= h;
            (numeric_loss(&module, input(&plus)) - numeric_loss(&module, input(&minus))) / (2.0 * h)
        };
        let numeric = (4.0 * central(eps / 2.0) - central(eps)) / 3.0;
        let error = relative(numeric, grad_x[i]);
        worst = worst.max(error);
    }

    let mut directional = Directional {
        grads: &grads,
        index: 0,
        total: 0.0,
    };
    module.visit(&mut directional);
    let perturbed = |t: f64| module.clone().map(&mut Perturb { t, index: 0 });
    // Along the parameter direction, shrink the step until no kink is crossed.
    let mut step = eps;
    while !same_pattern(&perturbed(step), &x_values, &perturbed(-step), &x_values) {
        step /= 2.0;
        assert!(step > 1e-5, "{name}: no kink-free parameter step");
    }
    let shifted = |t: f64| numeric_loss(&perturbed(t), input(&x_values));
    // Central differences at h and h/2, Richardson-extrapolated: the O(h²) term cancels.
    // (A plain central difference with h = 1e-2 along a direction that moves every parameter
    // is off by several percent on some random blocks: the softmax's curvature, not an error
    // of the gradient.)
    let central = |h: f64| (shifted(h) - shifted(-h)) / (2.0 * h);
    let numeric = (4.0 * central(step / 2.0) - central(step)) / 3.0;
    println!("{name}: parameter step {step:.1e}");
    let param_error = relative(numeric, directional.total);
    assert!(
        compared >= 8,
        "{name}: only {compared} kink-free input samples"
    );
    println!(
        "{name}: worst input-gradient relative error {worst:.2e} over {compared} entries, parameter directional \
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
fn dilated_residual_block_gradients_in_training_mode() {
    let device = backend::with_autodiff(backend::cpu());
    let block = DilatedResidualConfig::new(3)
        .init(&device)
        .map(&mut Reinit { index: 0 });
    // Which ReLUs are on, unit by unit (the block's own layers, run as it runs them).
    let pattern = |m: &DilatedResidual, x: Tensor<4>| -> Vec<bool> {
        let mut on = Vec::new();
        let mut x = x;
        for unit in &m.units {
            let pre = unit.bn.forward(unit.conv1.forward(x.clone()));
            let values = pre
                .clone()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            on.extend(values.iter().map(|v| *v > 0.0));
            x = unit.forward(x);
        }
        on
    };
    check_piecewise(
        "DRB",
        block,
        |m, x| m.forward(x),
        Some(&pattern),
        [2, 3, 7, 6],
    );
}

#[test]
fn batch_norm_gradients_in_training_mode() {
    let device = backend::with_autodiff(backend::cpu());
    let bn = pyra_core::blocks::BatchNorm::new(4, 1e-5, &device);
    check("BN", bn, |m, x| m.forward(x), [2, 4, 5, 6]);
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

/// The reference values of `tools/pnen_reference.py`: an independent float64 NumPy forward
/// written from the paper, with every gradient a float64 central difference of it.
fn reference(name: &str) -> pyra_core::weights::StateDict {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pnen")
        .join(format!("{name}.safetensors"));
    pyra_core::weights::StateDict::read(&path).unwrap()
}

/// Load the reference's parameters into `module`, run it on the reference input in training
/// mode and compare the output and the gradients of `sum(output * R)` for the input and
/// every parameter. Returns the largest relative gradient error.
fn compare_with_reference<M: Module + Clone>(
    name: &str,
    module: M,
    forward: impl Fn(&M, Tensor<4>) -> Tensor<4>,
) -> f64 {
    use pyra_core::weights::{gradients_of, load_state_dict, LoadOptions};
    let device: Device = backend::with_autodiff(backend::cpu());
    let dict = reference(name);
    let options = LoadOptions {
        allow_extra: true,
        ..Default::default()
    };
    let (module, _) = load_state_dict(module, &dict, &options).unwrap();
    let tensor = |key: &str| {
        let t = dict
            .get(key)
            .unwrap_or_else(|| panic!("{name}: no `{key}`"));
        let shape: [usize; 4] = t.shape.clone().try_into().unwrap();
        Tensor::<4>::from_data(TensorData::new(t.to_f32(), shape), &device)
    };
    let x = tensor("input").require_grad();
    let output = forward(&module, x.clone());
    let values: Vec<f32> = output.clone().into_data().try_into_vec::<f32>().unwrap();
    let expected = dict.get("output").unwrap().to_f32();
    let forward_error = values
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        forward_error < 1e-4,
        "{name}: output differs by {forward_error}"
    );

    let grads = (output * tensor("loss_weights")).sum().backward();
    let mut computed = gradients_of(&module, &grads);
    let grad_x = x
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    computed.tensors.push(pyra_core::weights::NamedTensor {
        name: "input".into(),
        shape: vec![grad_x.len()],
        values: pyra_core::weights::TensorValues::F32(grad_x),
        source_dtype: "F32",
    });
    let largest = dict
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("grad."))
        .flat_map(|t| t.to_f32())
        .map(f32::abs)
        .fold(0f32, f32::max);
    let mut worst = 0f64;
    let mut checked = 0;
    for t in &dict.tensors {
        let Some(key) = t.name.strip_prefix("grad.") else {
            continue;
        };
        let ours = computed
            .get(key)
            .unwrap_or_else(|| panic!("{name}: no gradient for `{key}`"))
            .to_f32();
        let theirs = t.to_f32();
        // Relative to the tensor's largest entry, and at least 1% of the block's largest
        // gradient: a convolution bias right before a training-mode BatchNorm has a true
        // gradient of zero (the batch mean removes it), where only float noise is left.
        let scale = theirs
            .iter()
            .map(|v| v.abs())
            .fold(0f32, f32::max)
            .max(0.01 * largest);
        let error = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(0f32, f32::max) as f64;
        assert!(
            error < 1e-4,
            "{name}: gradient of `{key}` off by {error:.2e} (relative)"
        );
        worst = worst.max(error);
        checked += 1;
    }
    assert_eq!(
        checked,
        pyra_core::weights::trainable_keys(&module).len() + 1,
        "{name}: every parameter and the input"
    );
    println!(
        "{name}: output within {forward_error:.1e} of the float64 reference, {checked} gradients \
         within {worst:.1e} (relative to each tensor's largest entry, or 1% of the block's)"
    );
    worst
}

#[test]
fn blocks_match_the_independent_float64_reference() {
    let device = backend::with_autodiff(backend::cpu());
    compare_with_reference("nlb", NonLocalConfig::new(6).init(&device), |m, x| {
        m.forward(x)
    });
    compare_with_reference("apnb", ApnbConfig::new(6).init(&device), |m, x| {
        m.forward(x)
    });
    compare_with_reference(
        "pnb",
        PyramidNonLocalConfig::new(6)
            .with_key_channels(5)
            .with_value_channels(4)
            .with_scales(3)
            .init(&device),
        |m, x| m.forward(x),
    );
    compare_with_reference(
        "drb",
        DilatedResidualConfig::new(3).init(&device),
        |m, x| m.forward(x),
    );
}
