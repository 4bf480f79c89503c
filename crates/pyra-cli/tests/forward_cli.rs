//! The `pyra forward` contract, end to end through the binary: official `.pt` files in,
//! safetensors out, compared with the official outputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use pyra_core::weights::StateDict;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/panet")
        .join(name)
}

fn large_fixture(name: &str) -> Option<PathBuf> {
    match std::env::var_os("PYRA_FIXTURES_DIR") {
        Some(dir) => Some(PathBuf::from(dir).join(name)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set PYRA_FIXTURES_DIR (the .ci/run script points it at ../shared/fixtures/panet)"
            );
            eprintln!(
                "SKIPPED: {name} needs PYRA_FIXTURES_DIR (CI sets it to ../shared/fixtures/panet)"
            );
            None
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pyra-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pyra(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pyra"))
        .args(args)
        .output()
        .expect("run pyra")
}

fn max_relative(ours: &StateDict, reference: &StateDict, key: &str) -> f32 {
    let a = ours.require("output").unwrap();
    let b = reference.require(key).unwrap();
    assert_eq!(a.shape, b.shape);
    let (a, b) = (a.to_f32(), b.to_f32());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn run_and_compare(args: &[&str], out: &Path, reference: &StateDict, key: &str) {
    let output = pyra(args);
    assert!(
        output.status.success(),
        "pyra failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ours = StateDict::read(out).unwrap();
    let err = max_relative(&ours, reference, key);
    println!("{key}: max relative difference {err:.3e}");
    assert!(err <= 1e-4, "{key}: {err:e}");
}

#[test]
fn panet_small_from_official_pt() {
    let dir = scratch("panet");
    let out = dir.join("out.safetensors");
    let input = fixture("panet_small.safetensors");
    let reference = StateDict::read(&input).unwrap();
    for (interp, key) in [("modern", "output"), ("legacy", "output_legacy")] {
        run_and_compare(
            &[
                "forward",
                "--arch",
                "panet",
                "--set",
                "n_resblocks=2",
                "--set",
                "n_feats=64",
                "--set",
                "n_colors=3",
                "--set",
                &format!("interp={interp}"),
                "--weights",
                fixture("panet_small_model_best.pt").to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
            &out,
            &reference,
            key,
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn paedsr_small_from_official_float16_pt() {
    let dir = scratch("paedsr");
    let out = dir.join("out.safetensors");
    let input = fixture("paedsr_small.safetensors");
    let reference = StateDict::read(&input).unwrap();
    for scale in [2, 3, 4] {
        let Some(weights) = large_fixture(&format!("paedsr_small_x{scale}_model_best.pt")) else {
            return;
        };
        for (interp, key) in [
            ("modern", format!("output_x{scale}")),
            ("legacy", format!("output_legacy_x{scale}")),
        ] {
            run_and_compare(
                &[
                    "forward",
                    "--arch",
                    "paedsr",
                    "--set",
                    "n_resblocks=2",
                    "--set",
                    "n_feats=256",
                    "--set",
                    "res_scale=0.1",
                    "--set",
                    &format!("scale={scale}"),
                    "--set",
                    &format!("interp={interp}"),
                    "--weights",
                    weights.to_str().unwrap(),
                    "--input",
                    input.to_str().unwrap(),
                    "--output",
                    out.to_str().unwrap(),
                ],
                &out,
                &reference,
                &key,
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pyramid_attention_with_fixture_as_weights_needs_the_flag() {
    let dir = scratch("pa");
    let out = dir.join("out.safetensors");
    let file = fixture("pa_module_hard.safetensors");
    let common = [
        "forward",
        "--arch",
        "pyramid-attention",
        "--set",
        "channel=16",
        "--set",
        "reduction=2",
        "--set",
        "level=5",
        "--set",
        "ksize=3",
        "--set",
        "softmax_scale=10",
        "--set",
        "average=False",
        "--set",
        "res_scale=1",
        "--set",
        "interp=legacy",
        "--weights",
        file.to_str().unwrap(),
        "--input",
        file.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    // Without --ignore-extra-keys the file's inputs/outputs are unexpected keys.
    let refused = pyra(&common);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unexpected key(s) `input`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "no output after an error");

    let mut args = common.to_vec();
    args.push("--ignore-extra-keys");
    let reference = StateDict::read(&file).unwrap();
    run_and_compare(&args, &out, &reference, "output_legacy");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn built_in_sample_matches_the_official_output() {
    let output = pyra(&["forward"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("vs `output_legacy`"))
        .unwrap_or_else(|| panic!("no comparison line in: {stdout}"));
    let relative: f32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(relative <= 1e-4, "{line}");
}

#[test]
fn bad_settings_are_clear_errors() {
    let input = fixture("panet_small.safetensors");
    for (setting, expected) in [
        ("n_resblock=2", "`n_resblock` is not a setting of panet"),
        ("interp=cubic", "unknown interpolation `cubic`"),
        ("ksize=4", "ksize must be odd"),
    ] {
        let output = pyra(&[
            "forward",
            "--arch",
            "panet",
            "--set",
            setting,
            "--input",
            input.to_str().unwrap(),
        ]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{setting}: {stderr}");
    }
    // Wrong channel count: PANet-3 colour model on a 16-channel tensor.
    let pa = fixture("pa_module_hard.safetensors");
    let output = pyra(&[
        "forward",
        "--arch",
        "panet",
        "--input",
        pa.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("has 16 channels but this PaNet expects 3"),
        "{stderr}"
    );
}

#[test]
fn convert_official_pt_to_safetensors_and_run_it() {
    let dir = scratch("convert");
    let converted = dir.join("panet.safetensors");
    let out = dir.join("out.safetensors");
    let status = pyra(&[
        "convert",
        fixture("panet_small_model_best.pt").to_str().unwrap(),
        converted.to_str().unwrap(),
        "--arch",
        "panet",
        "--set",
        "n_resblocks=2",
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let official = StateDict::read(fixture("panet_small_model_best.pt")).unwrap();
    let ours = StateDict::read(&converted).unwrap();
    let mut a: Vec<_> = official.names().collect();
    let mut b: Vec<_> = ours.names().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "same keys");
    // The converted file drives the same forward.
    let input = fixture("panet_small.safetensors");
    let reference = StateDict::read(&input).unwrap();
    run_and_compare(
        &[
            "forward",
            "--arch",
            "panet",
            "--set",
            "n_resblocks=2",
            "--weights",
            converted.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        &out,
        &reference,
        "output_legacy",
    );
    // A checkpoint that does not fit the architecture is refused, and nothing is written.
    let refused_out = dir.join("refused.safetensors");
    let refused = pyra(&[
        "convert",
        fixture("panet_small_model_best.pt").to_str().unwrap(),
        refused_out.to_str().unwrap(),
        "--arch",
        "panet",
        "--set",
        "n_resblocks=4",
    ]);
    assert!(!refused.status.success());
    assert!(!refused_out.exists());
    std::fs::remove_dir_all(dir).unwrap();
}
