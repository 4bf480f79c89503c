//! FFDNet with its real IPOL weights (legacy pickle `.pth`, `module.` prefix), detected and
//! loaded strictly, against FFDNet's own PyTorch code on odd and even sizes, colour and gray
//! (`fixtures/ffdnet/reference.safetensors`, made by `tools/ffdnet_reference.py`). The weights
//! are GPL and not in the repository: `PYRA_MODELS_DIR` (CI: ../shared/models) holds them.

mod common;

use common::*;
use pyra_core::backend;
use pyra_core::networks::{detect, Arch};
use pyra_core::weights::{load_state_dict, LoadOptions, StateDict};

#[test]
fn ipol_weights_match_ffdnets_own_code() {
    let Some(dir) = models_dir("the FFDNet check") else {
        return;
    };
    let reference = StateDict::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/ffdnet/reference.safetensors"
    ))
    .unwrap();
    let device = backend::cpu();
    for (case, file, colours) in [
        ("rgb", "ffdnet_weights_rgb.pth", 3),
        ("rgb_even", "ffdnet_weights_rgb.pth", 3),
        ("gray", "ffdnet_weights_gray.pth", 1),
    ] {
        let weights = StateDict::read(dir.join(file)).unwrap();
        assert!(weights.names().all(|k| !k.starts_with("module.")));
        let detected = detect(&weights).unwrap();
        assert_eq!(detected.arch, Arch::Ffdnet, "{file}");
        let sigma = reference
            .require(&format!("{case}.sigma"))
            .unwrap()
            .to_f32()[0];
        let config = detected
            .config_with(&[("sigma".into(), sigma.to_string())])
            .unwrap();
        assert_eq!(config.input_channels(), colours);
        let (network, report) =
            load_state_dict(config.init(&device), &weights, &LoadOptions::default()).unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        let input = tensor4(
            reference.require(&format!("{case}.input")).unwrap(),
            &device,
        );
        assert_close(
            &format!("ffdnet {case}"),
            network.forward(input),
            reference.require(&format!("{case}.output")).unwrap(),
            1e-4,
        );
    }
}
