//! PANet and PA-EDSR against the official networks (fixtures `panet_small`, `paedsr_small`),
//! loading the official `model_best.pt` files as they are.

mod common;

use common::*;
use pyra_core::backend;
use pyra_core::burn::tensor::Device;
use pyra_core::networks::{PaEdsrConfig, PaNetConfig};
use pyra_core::ops::Interp;
use pyra_core::weights::{gradients_of, load_state_dict, LoadOptions, StateDict};

const OUTPUT_TOL: f32 = 1e-4;
const PARAM_GRAD_TOL: f32 = 1e-3;

fn panet_small_config(interp: Interp) -> PaNetConfig {
    PaNetConfig::new()
        .with_n_resblocks(2)
        .with_n_feats(64)
        .with_n_colors(3)
        .with_interp(interp)
}

#[test]
fn panet_forward_and_backward_both_interpolations() {
    for device in devices() {
        panet_forward_and_backward_both_interpolations_on(&device);
    }
}

fn panet_forward_and_backward_both_interpolations_on(base: &Device) {
    let dict = read("panet_small.safetensors");
    let device = backend::with_autodiff(base.clone());
    let allow_extra = LoadOptions {
        allow_extra: true,
        ..Default::default()
    };
    for (interp, out_key, grad_key) in [
        (Interp::Modern, "output", "grad_input"),
        (Interp::Legacy, "output_legacy", "grad_input_legacy"),
    ] {
        let (model, report) = load_state_dict(
            panet_small_config(interp).init(&device),
            &dict,
            &allow_extra,
        )
        .unwrap();
        // The two res-blocks share one PReLU slope: one aliased group.
        assert_eq!(
            report.aliases,
            vec![vec![
                "body.0.body.1.weight".to_string(),
                "body.2.body.1.weight".to_string()
            ]]
        );
        let input = tensor4(dict.require("input").unwrap(), &device).require_grad();
        let grad_output = tensor4(dict.require("grad_output").unwrap(), &device);
        let output = model.forward(input.clone());
        assert_close(
            &format!("panet_small {out_key}"),
            output.clone(),
            dict.require(out_key).unwrap(),
            OUTPUT_TOL,
        );
        let grads = (output * grad_output).sum().backward();
        let grad_input = input.grad(&grads).unwrap();
        assert_close(
            &format!("panet_small {grad_key}"),
            grad_input,
            dict.require(grad_key).unwrap(),
            OUTPUT_TOL,
        );

        if interp == Interp::Modern {
            let ours = gradients_of(&model, &grads);
            let references: Vec<_> = dict
                .tensors
                .iter()
                .filter(|t| t.name.starts_with("grad."))
                .collect();
            // Every trainable parameter has a reference gradient; the shared PReLU's alias
            // `body.2.body.1.weight` is stored once, as `grad.body.0.body.1.weight`.
            let mut ours_keys: Vec<&str> = ours
                .names()
                .filter(|k| *k != "body.2.body.1.weight")
                .collect();
            let mut their_keys: Vec<&str> = references
                .iter()
                .map(|t| t.name.trim_start_matches("grad."))
                .collect();
            ours_keys.sort();
            their_keys.sort();
            assert_eq!(ours_keys, their_keys);
            for reference in references {
                let key = reference.name.trim_start_matches("grad.");
                let mine = ours
                    .get(key)
                    .unwrap_or_else(|| panic!("no gradient for {key}"));
                let err = relative_error(&mine.to_f32(), &reference.to_f32());
                println!(
                    "panet_small {}: max relative difference {err:.3e}",
                    reference.name
                );
                assert!(err <= PARAM_GRAD_TOL, "{}: {err:e}", reference.name);
            }
            // Frozen MeanShift and the escape_NaN buffer get no gradient.
            assert!(ours.get("sub_mean.weight").is_none());
            assert!(ours.get("body.1.escape_NaN").is_none());
        }
    }
}

#[test]
fn panet_official_checkpoint_loads_strictly() {
    for device in devices() {
        panet_official_checkpoint_loads_strictly_on(&device);
    }
}

fn panet_official_checkpoint_loads_strictly_on(base: &Device) {
    let dict = StateDict::read(committed("panet_small_model_best.pt")).unwrap();
    assert_eq!(dict.len(), 30, "official PANet-2 state dict has 30 keys");
    let reference = read("panet_small.safetensors");
    let device = base.clone();
    for (interp, out_key) in [
        (Interp::Modern, "output"),
        (Interp::Legacy, "output_legacy"),
    ] {
        let (model, _) = load_state_dict(
            panet_small_config(interp).init(&device),
            &dict,
            &LoadOptions::default(),
        )
        .unwrap();
        let input = tensor4(reference.require("input").unwrap(), &device);
        assert_close(
            &format!("panet_small_model_best.pt {out_key}"),
            model.forward(input),
            reference.require(out_key).unwrap(),
            OUTPUT_TOL,
        );
    }
    // The .pt values equal the safetensors copies exactly.
    for t in &dict.tensors {
        assert_eq!(
            t.values,
            reference.require(&t.name).unwrap().values,
            "{}",
            t.name
        );
    }
}

#[test]
fn paedsr_x2_x3_x4_from_float16_checkpoints() {
    for device in devices() {
        paedsr_x2_x3_x4_from_float16_checkpoints_on(&device);
    }
}

fn paedsr_x2_x3_x4_from_float16_checkpoints_on(base: &Device) {
    let reference = read("paedsr_small.safetensors");
    let device = base.clone();
    for scale in [2, 3, 4] {
        let Some(path) = large_fixture(&format!("paedsr_small_x{scale}_model_best.pt")) else {
            return;
        };
        let dict = StateDict::read(&path).unwrap();
        assert!(dict.tensors.iter().all(|t| t.source_dtype == "F16"));
        for (interp, key) in [
            (Interp::Modern, format!("output_x{scale}")),
            (Interp::Legacy, format!("output_legacy_x{scale}")),
        ] {
            let config = PaEdsrConfig::new()
                .with_n_resblocks(2)
                .with_n_feats(256)
                .with_res_scale(0.1)
                .with_scale(scale)
                .with_interp(interp);
            let (model, report) =
                load_state_dict(config.init(&device), &dict, &LoadOptions::default()).unwrap();
            // msa.* and body.1.* are one attention: 10 aliased groups.
            assert_eq!(report.aliases.len(), 10);
            assert!(report
                .aliases
                .iter()
                .all(|g| g.len() == 2 && g[0].starts_with("msa.")));
            // Mean shift comes from the checkpoint (fp16-rounded), not the hard-coded mean.
            let bias = dict.require("sub_mean.bias").unwrap().to_f32();
            assert_eq!(bias[0], -0.448_730_47);
            let input = tensor4(reference.require("input").unwrap(), &device);
            assert_close(
                &format!("paedsr x{scale} {key}"),
                model.forward(input),
                reference.require(&key).unwrap(),
                OUTPUT_TOL,
            );
        }
    }
}
