//! Pyra's own kernels pick their instruction set at run time (`ops::isa`). This runs one
//! forward and backward of a PANet with pyramid attention (streaming attention kernel and the
//! convolution kernel) at every level the CPU has, capped through `isa::force`, and compares
//! each with the baseline (SSE2) build of the same loops. On a CPU without AVX-512 that half
//! says SKIPPED and why.
//!
//! Its own test binary: the cap is process-wide.

use pyra_core::backend;
use pyra_core::burn::tensor::{Distribution, Tensor};
use pyra_core::networks::PaNetConfig;
use pyra_core::ops::isa::{self, Isa};
use pyra_core::weights::gradients_of;

/// Output, input gradient and every parameter gradient (by key), flattened.
fn forward_backward(isa_cap: Isa) -> Vec<(String, Vec<f32>)> {
    isa::force(Some(isa_cap));
    assert_eq!(isa::isa(), isa_cap.min(isa::detected()));
    let device = backend::with_autodiff(backend::cpu());
    // Fixed weights and input: the same draws for every level.
    device.seed(7);
    let model = PaNetConfig::new()
        .with_n_resblocks(2)
        .with_n_feats(16)
        .init(&device);
    let x =
        Tensor::<4>::random([2, 3, 20, 18], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let y = model.forward(x.clone());
    let weights = Tensor::<4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &device);
    let grads = (y.clone() * weights).sum().backward();
    let mut out = vec![
        (
            "output".to_string(),
            y.into_data().try_to_vec::<f32>().unwrap(),
        ),
        (
            "grad_input".to_string(),
            x.grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        ),
    ];
    let dict = gradients_of(&model, &grads);
    for key in dict.names() {
        out.push((format!("grad {key}"), dict.get(key).unwrap().to_f32()));
    }
    isa::force(None);
    out
}

fn compare(level: Isa, reference: &[(String, Vec<f32>)]) {
    let ours = forward_backward(level);
    assert_eq!(ours.len(), reference.len());
    let mut worst = 0.0f32;
    for ((key, a), (key_b, b)) in ours.iter().zip(reference) {
        assert_eq!(key, key_b);
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff.is_finite(), "{key}: non-finite");
        let rel = diff / scale;
        assert!(
            rel <= 1e-5,
            "{}: {key} differs from baseline by {rel:e}",
            level.name()
        );
        worst = worst.max(rel);
    }
    println!(
        "{}: {} tensors, worst relative difference to baseline {worst:.2e}",
        level.name(),
        ours.len()
    );
}

#[test]
fn every_instruction_set_computes_the_same_network() {
    let reference = forward_backward(Isa::Baseline);
    println!("CPU supports: {}", isa::detected().name());
    if isa::detected() >= Isa::Avx2 {
        compare(Isa::Avx2, &reference);
    } else {
        println!("SKIPPED: AVX2 half: this CPU has no AVX2 + FMA");
    }
    if isa::detected() >= Isa::Avx512 {
        compare(Isa::Avx512, &reference);
    } else {
        println!(
            "SKIPPED: AVX-512 half: this CPU has no AVX-512 F/BW/DQ/VL (best: {}); the AVX-512 \
             copies are compiled but cannot run here",
            isa::detected().name()
        );
    }
}
