//! Pyramid attention against the official module (fixtures `pa_module_*`): pyramid levels,
//! matching scores, outputs, input gradients and every parameter gradient, in both
//! interpolation modes, soft and hard.

mod common;

use common::*;
use pyra_core::backend;
use pyra_core::blocks::{PyramidAttention, PyramidAttentionConfig};
use pyra_core::burn::tensor::Device;
use pyra_core::ops::{resize, Interp};
use pyra_core::weights::{gradients_of, load_state_dict, LoadOptions, StateDict};

const OUTPUT_TOL: f32 = 1e-4;
const PARAM_GRAD_TOL: f32 = 1e-3;

fn fixture_module(
    dict: &StateDict,
    average: bool,
    interp: Interp,
    device: &Device,
) -> PyramidAttention {
    let module = PyramidAttentionConfig::new()
        .with_channel(16)
        .with_reduction(2)
        .with_levels(5)
        .with_average(average)
        .with_interp(interp)
        .init(device);
    // The fixture file also holds inputs and outputs: only those extra keys are allowed.
    let options = LoadOptions {
        allow_extra: true,
        ..Default::default()
    };
    let (module, report) = load_state_dict(module, dict, &options).unwrap();
    assert!(report.skipped.iter().all(|k| k.starts_with("grad")
        || k.starts_with("input")
        || k.starts_with("output")
        || k.starts_with("level")
        || k.starts_with("debug")));
    module
}

fn check_soft(file: &str, interp: Interp) {
    for device in devices() {
        check_soft_on(file, interp, &device);
    }
}

fn check_soft_on(file: &str, interp: Interp, base: &Device) {
    let dict = read(file);
    let device = backend::with_autodiff(base.clone());
    let module = fixture_module(&dict, true, interp, &device);
    let input = tensor4(dict.require("input").unwrap(), &device).require_grad();
    let grad_output = tensor4(dict.require("grad_output").unwrap(), &device);

    // The pyramid levels themselves.
    for (i, scale) in [0.9, 0.8, 0.7, 0.6].into_iter().enumerate() {
        let name = format!("level{}", i + 1);
        let level = resize(input.clone().detach(), scale, interp);
        assert_close(
            &format!("{file} {name}"),
            level,
            dict.require(&name).unwrap(),
            1e-5,
        );
    }

    let output = module.forward(input.clone());
    assert_close(
        &format!("{file} output"),
        output.clone(),
        dict.require("output").unwrap(),
        OUTPUT_TOL,
    );

    let grads = (output * grad_output).sum().backward();
    let grad_input = input.grad(&grads).expect("input gradient");
    assert_close(
        &format!("{file} grad_input"),
        grad_input,
        dict.require("grad_input").unwrap(),
        OUTPUT_TOL,
    );

    let param_grads = gradients_of(&module, &grads);
    let expected: Vec<_> = dict
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("grad."))
        .collect();
    assert_eq!(expected.len(), 9, "the fixture has 9 parameter gradients");
    for reference in expected {
        let key = reference.name.trim_start_matches("grad.");
        let ours = param_grads
            .get(key)
            .unwrap_or_else(|| panic!("no gradient for {key}"));
        let err = relative_error(&ours.to_f32(), &reference.to_f32());
        println!(
            "{file} {}: max relative difference {err:.3e}",
            reference.name
        );
        assert!(err <= PARAM_GRAD_TOL, "{}: {err:e}", reference.name);
    }
    // escape_NaN is a buffer: no gradient.
    assert!(param_grads.get("escape_NaN").is_none());
}

#[test]
fn soft_attention_modern_forward_and_backward() {
    check_soft("pa_module_modern.safetensors", Interp::Modern);
}

#[test]
fn soft_attention_legacy_forward_and_backward() {
    check_soft("pa_module_legacy.safetensors", Interp::Legacy);
}

#[test]
fn matching_scores_before_softmax() {
    for device in devices() {
        matching_scores_before_softmax_on(&device);
    }
}

fn matching_scores_before_softmax_on(base: &Device) {
    // debug.softmax_input_b0: [1, L, H, W] scores times softmax_scale, patch index level-major.
    let dict = read("pa_module_modern.safetensors");
    let device = base.clone();
    let module = fixture_module(&dict, true, Interp::Modern, &device);
    let input = tensor4(dict.require("input").unwrap(), &device);
    let [_, _, h, w] = input.dims();
    // Recover the scores from the weights: log(softmax) differs from the scores by a
    // per-pixel constant, so compare after removing each pixel's mean.
    let weights = module.attention_weights(input); // [1, HW, L]
    let (_, probs) = values(weights);
    let reference = dict.require("debug.softmax_input_b0").unwrap();
    let l = reference.shape[1];
    let scores = reference.to_f32();
    let mut worst = 0f32;
    let mut scale = 0f32;
    for p in 0..h * w {
        let ours: Vec<f32> = (0..l).map(|j| probs[p * l + j].ln()).collect();
        let theirs: Vec<f32> = (0..l).map(|j| scores[j * h * w + p]).collect();
        let mean_ours = ours.iter().sum::<f32>() / l as f32;
        let mean_theirs = theirs.iter().sum::<f32>() / l as f32;
        for j in 0..l {
            worst = worst.max(((ours[j] - mean_ours) - (theirs[j] - mean_theirs)).abs());
            scale = scale.max((theirs[j] - mean_theirs).abs());
        }
    }
    println!(
        "matching scores: max relative difference {:.3e}",
        worst / scale
    );
    assert!(worst / scale <= 1e-4, "{}", worst / scale);
}

#[test]
fn hard_attention_both_interpolations() {
    for device in devices() {
        hard_attention_both_interpolations_on(&device);
    }
}

fn hard_attention_both_interpolations_on(base: &Device) {
    let dict = read("pa_module_hard.safetensors");
    let device = base.clone();
    for (interp, key) in [
        (Interp::Modern, "output"),
        (Interp::Legacy, "output_legacy"),
    ] {
        let module = fixture_module(&dict, false, interp, &device);
        let input = tensor4(dict.require("input").unwrap(), &device);
        let output = module.forward(input.clone());
        assert_close(
            &format!("pa_module_hard {key}"),
            output,
            dict.require(key).unwrap(),
            OUTPUT_TOL,
        );
        // Exactly one winner per pixel here (the fixture's arg-max has no ties).
        let (_, mask) = values(module.attention_weights(input));
        let ones = mask.iter().filter(|&&v| v == 1.0).count();
        let [_, _, h, w] = dict.require("input").unwrap().shape[..] else {
            unreachable!()
        };
        assert_eq!(ones, h * w);
    }
}

#[test]
fn interpolation_modes_really_differ() {
    for device in devices() {
        interpolation_modes_really_differ_on(&device);
    }
}

fn interpolation_modes_really_differ_on(base: &Device) {
    // Guards against a mode switch that silently does nothing.
    let dict = read("pa_module_modern.safetensors");
    let device = base.clone();
    let input = tensor4(dict.require("input").unwrap(), &device);
    let legacy = fixture_module(&dict, true, Interp::Legacy, &device).forward(input.clone());
    let modern = fixture_module(&dict, true, Interp::Modern, &device).forward(input);
    let (_, a) = values(legacy);
    let (_, b) = values(modern);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff > 0.1,
        "modern and legacy outputs differ by only {diff}"
    );
}
