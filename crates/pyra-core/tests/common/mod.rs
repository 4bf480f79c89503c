//! Helpers shared by the parity tests.
#![allow(dead_code)]

use std::path::PathBuf;

use pyra_core::burn::tensor::{Device, Tensor, TensorData};
use pyra_core::weights::{NamedTensor, StateDict};

/// The fixtures committed with the project (`fixtures/panet`).
pub fn committed(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/panet")
        .join(name)
}

/// The folder of the real peer weights (`PYRA_MODELS_DIR`, CI: ../shared/models); `None`, with
/// a SKIPPED line naming `what`, when it is not set outside CI.
pub fn models_dir(what: &str) -> Option<PathBuf> {
    match std::env::var_os("PYRA_MODELS_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set PYRA_MODELS_DIR (the .ci/run script points it at ../shared/models)"
            );
            eprintln!("SKIPPED: {what} needs PYRA_MODELS_DIR (../shared/models)");
            None
        }
    }
}

/// The folder of the large official fixtures (the PA-EDSR `.pt` files), from
/// `PYRA_FIXTURES_DIR`; `None` (with a message saying what is skipped) when it is not set.
pub fn large_fixture(name: &str) -> Option<PathBuf> {
    match std::env::var_os("PYRA_FIXTURES_DIR") {
        Some(dir) => {
            let path = PathBuf::from(dir).join(name);
            assert!(
                path.exists(),
                "PYRA_FIXTURES_DIR is set but {} does not exist",
                path.display()
            );
            Some(path)
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set PYRA_FIXTURES_DIR (the .ci/run script points it at ../shared/fixtures/panet)"
            );
            eprintln!(
                "SKIPPED: {name} is not committed (too large); set PYRA_FIXTURES_DIR to the folder \
                 of the official PANet fixtures (CI uses ../shared/fixtures/panet) to run this check"
            );
            None
        }
    }
}

pub fn read(name: &str) -> StateDict {
    StateDict::read(committed(name)).unwrap_or_else(|e| panic!("{e}"))
}

pub fn tensor4(t: &NamedTensor, device: &Device) -> Tensor<4> {
    let s = &t.shape;
    Tensor::from_data(
        TensorData::new(t.to_f32(), [s[0], s[1], s[2], s[3]]),
        device,
    )
}

pub fn values<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.into_data().convert::<f32>();
    let shape = data.shape().to_vec();
    (shape, data.try_into_vec::<f32>().unwrap())
}

/// max |ours - reference| / max |reference|.
pub fn relative_error(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len(), "length mismatch");
    let scale = reference
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-30);
    let diff = ours
        .iter()
        .zip(reference)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff.is_finite(), "non-finite values");
    diff / scale
}

/// Assert `ours` matches the fixture tensor within `tolerance` relative to its largest
/// magnitude; prints the measured error either way.
pub fn assert_close<const D: usize>(
    what: &str,
    ours: Tensor<D>,
    reference: &NamedTensor,
    tolerance: f32,
) {
    let (shape, ours) = values(ours);
    assert_eq!(shape, reference.shape, "{what}: shape");
    let err = relative_error(&ours, &reference.to_f32());
    println!("{what}: max relative difference {err:.3e}");
    assert!(
        err <= tolerance,
        "{what}: relative difference {err:e} > {tolerance:e}"
    );
}

/// The devices every parity test runs on: the CPU (Flex), and in a build with a GPU backend
/// (`--features gpu`: Vulkan) the GPU. A GPU build on a machine whose driver offers no adapter
/// says so and tests the CPU only, unless `PYRA_REQUIRE_GPU` is set (CI, on lavapipe), where
/// that is a failure. `PYRA_TEST_DEVICES=gpu` tests the GPU alone (CI's GPU job: the CPU
/// ran in the default build's tests).
pub fn devices() -> Vec<Device> {
    let gpu_only = std::env::var("PYRA_TEST_DEVICES").is_ok_and(|v| v == "gpu");
    let mut devices = Vec::new();
    if !gpu_only {
        devices.push(pyra_core::backend::cpu());
    }
    assert!(
        !gpu_only || pyra_core::backend::gpu_compiled(),
        "PYRA_TEST_DEVICES=gpu in a build without a GPU backend (build with --features gpu)"
    );
    if pyra_core::backend::gpu_compiled() {
        let gpu = pyra_core::backend::gpu();
        match pyra_core::backend::describe(&gpu) {
            Ok(name) => {
                eprintln!("also testing on {name}");
                devices.push(gpu);
            }
            Err(why) => {
                assert!(
                    std::env::var_os("PYRA_REQUIRE_GPU").is_none() && !gpu_only,
                    "a GPU is required (PYRA_REQUIRE_GPU or PYRA_TEST_DEVICES) but {why}"
                );
                eprintln!("SKIPPED on the GPU: {why}");
            }
        }
    }
    devices
}
