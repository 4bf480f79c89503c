//! Gradients flow through the whole network, pyramid attention included: a small PANet
//! overfits one noisy patch.

use pyra_core::backend;
use pyra_core::burn::tensor::{Distribution, Tensor};
use pyra_core::networks::{Arch, ArchConfig};
use pyra_train::{Loss, Trainer};

#[test]
fn small_panet_overfits_one_patch() {
    let device = backend::with_autodiff(backend::cpu());
    device.seed(11);
    let settings: Vec<(String, String)> =
        [("n_resblocks", "2"), ("n_feats", "16"), ("reduction", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let config = ArchConfig::from_settings(Arch::PaNet, &settings).unwrap();
    let mut trainer = Trainer::new(config.init(&device), Loss::L1);
    let clean = Tensor::<4>::random([1, 3, 24, 24], Distribution::Uniform(0.2, 0.8), &device);
    let noisy =
        clean.clone() + Tensor::random([1, 3, 24, 24], Distribution::Normal(0.0, 0.1), &device);
    let first = trainer
        .train_step(noisy.clone(), clean.clone(), 2e-3)
        .unwrap()
        .loss;
    let mut last = first;
    for _ in 0..300 {
        last = trainer
            .train_step(noisy.clone(), clean.clone(), 2e-3)
            .unwrap()
            .loss;
    }
    println!(
        "L1 loss: {first:.4} -> {last:.5} after {} steps",
        trainer.step
    );
    assert!(last * 10.0 < first, "loss fell from {first} to {last} only");
}

#[test]
fn attention_parameters_receive_updates_and_shared_prelu_stays_tied() {
    use pyra_core::weights::state_dict_of;
    let device = backend::with_autodiff(backend::cpu());
    device.seed(12);
    let settings: Vec<(String, String)> = [("n_resblocks", "4"), ("n_feats", "8")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = ArchConfig::from_settings(Arch::PaNet, &settings).unwrap();
    let mut trainer = Trainer::new(config.init(&device), Loss::L1);
    let before = state_dict_of(&trainer.model);
    let x = Tensor::<4>::random([2, 3, 16, 16], Distribution::Uniform(0.0, 1.0), &device);
    for _ in 0..3 {
        trainer
            .train_step(x.clone(), x.clone().mul_scalar(0.5), 1e-3)
            .unwrap();
    }
    let after = state_dict_of(&trainer.model);
    for key in [
        "body.2.conv_match_L_base.0.weight",
        "body.2.conv_match.0.weight",
        "body.2.conv_assembly.1.weight",
        "body.0.body.1.weight",
    ] {
        assert_ne!(
            before.get(key).unwrap().values,
            after.get(key).unwrap().values,
            "{key} did not change"
        );
    }
    // Frozen parts stay put.
    for key in ["sub_mean.bias", "body.2.escape_NaN"] {
        assert_eq!(
            before.get(key).unwrap().values,
            after.get(key).unwrap().values,
            "{key} changed"
        );
    }
    // The one official PReLU slope: every alias holds the same value after the updates.
    let shared = after.get("body.0.body.1.weight").unwrap();
    for key in [
        "body.1.body.1.weight",
        "body.3.body.1.weight",
        "body.4.body.1.weight",
    ] {
        assert_eq!(after.get(key).unwrap().values, shared.values, "{key}");
    }
}
