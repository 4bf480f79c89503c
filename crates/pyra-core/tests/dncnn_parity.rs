//! The real pretrained DnCNN-S (sigma 25, gray) from its PyTorch `.pt`, against the output the
//! reference code computed on Set12 01.png. Needs `PYRA_MODELS_DIR` (CI: ../shared/models).

mod common;

use common::*;
use pyra_core::backend;
use pyra_core::networks::DncnnConfig;
use pyra_core::weights::{load_state_dict, LoadOptions, StateDict};

#[test]
fn pretrained_dncnn_matches_the_reference_output() {
    let Some(dir) = models_dir("the DnCNN check") else {
        return;
    };
    let weights = StateDict::read(dir.join("dncnn_sigma25_gray.pt")).unwrap();
    assert_eq!(weights.len(), 93);
    let example = StateDict::read(dir.join("dncnn_sigma25_gray_set12_01.safetensors")).unwrap();
    let device = backend::cpu();
    // Strict: the 15 `num_batches_tracked` counters are accepted as BatchNorm's, nothing else.
    let (model, report) = load_state_dict(
        DncnnConfig::new().init(&device),
        &weights,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(report.skipped.len(), 15);
    assert!(report
        .skipped
        .iter()
        .all(|k| k.ends_with("num_batches_tracked")));
    let noisy = tensor4(example.require("noisy_input").unwrap(), &device);
    assert_close(
        "dncnn residual",
        model.noise(noisy.clone()),
        example.require("residual").unwrap(),
        1e-4,
    );
    assert_close(
        "dncnn output",
        model.forward(noisy),
        example.require("output").unwrap(),
        1e-4,
    );
}
