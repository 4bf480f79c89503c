//! PNEN through the binary: the cost report, a short smoothing run with cached targets, and
//! the attention picture of a pyramid non-local block.

mod common;

use common::{fixture, pyra, s, scratch};
use pyra_tasks::image::read_image;

#[derive(serde::Deserialize, Debug)]
struct Profile {
    name: String,
    parameters: usize,
    gflops: f64,
    peak_extra_bytes: Option<u64>,
}

#[test]
fn profile_reports_pnb_cheaper_than_nlb_in_flops_and_memory() {
    let (ok, out, err) = pyra(&[
        "profile",
        "--compare",
        "nlb,pnb",
        "--size",
        "64",
        "--repeat",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<Profile> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rows.len(), 2);
    let (nlb, pnb) = (&rows[0], &rows[1]);
    assert!(
        nlb.name.starts_with("NLB") && pnb.name.starts_with("PNB"),
        "{rows:?}"
    );
    // NLB on 64 channels: theta, phi, g (64 -> 32) and w (32 -> 64), 1x1 with biases.
    assert_eq!(nlb.parameters, 4 * 64 * 32 + 3 * 32 + 64);
    assert!(pnb.gflops < nlb.gflops, "{rows:?}");
    if let (Some(a), Some(b)) = (nlb.peak_extra_bytes, pnb.peak_extra_bytes) {
        // NLB holds a 4096 x 4096 score map (64 MiB) and its softmax; PNB a quarter-size one.
        assert!(b < a, "PNB {b} bytes, NLB {a} bytes");
        assert!(a > 64 << 20, "NLB's map is not in its peak: {a}");
    }
    let (ok, _, err) = pyra(&["profile", "--block", "xyz"]);
    assert!(
        !ok && err.contains("unknown non-local block `xyz`"),
        "{err}"
    );
}

#[test]
fn a_short_pnen_smoothing_run_caches_its_targets_and_draws_pnb_attention() {
    let dir = scratch("pnen");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["a", "b", "c"] {
        std::fs::copy(fixture("smooth/rgb.png"), data.join(format!("{name}.png"))).unwrap();
    }
    let out = dir.join("out");
    let (ok, stdout, stderr) = pyra(&[
        "train",
        "--preset",
        "pyra-pnen-l0",
        "--set",
        "model.settings.n_feats=4",
        "--set",
        "model.settings.key_channels=4",
        "--set",
        "model.settings.value_channels=2",
        "--set",
        &format!("data.train=\"{}\"", s(&data)),
        "--set",
        "data.holdout=1",
        "--set",
        "data.patch_size=32",
        "--set",
        "data.batch_size=2",
        "--set",
        "optim.steps=2",
        "--set",
        "validation.every=2",
        "--set",
        &format!("output.dir=\"{}\"", s(&out)),
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("step 2/2 (finished)"), "{stdout}");
    let cached: Vec<_> = std::fs::read_dir(out.join("targets"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .collect();
    assert_eq!(cached.len(), 2, "the two training images' L0 targets");

    let picture = dir.join("pnb.png");
    let (ok, stdout, stderr) = pyra(&[
        "attention",
        s(&fixture("smooth/rgb.png")),
        s(&picture),
        "--weights",
        s(&out.join("model_latest.safetensors")),
        "--pixel",
        "10,20",
        "--pixel",
        "60,40",
        "--block",
        "2",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("2 pixel(s) x 3 levels (40x32, 20x16, 10x8)"),
        "{stdout}"
    );
    let image = read_image(&picture).unwrap();
    // Levels side by side with 4-pixel gaps; one row as tall as the first scale per pixel.
    assert_eq!(
        (image.width, image.height),
        (40 + 20 + 10 + 4 * 4, 2 * (32 + 4) + 4)
    );
    let (ok, _, stderr) = pyra(&[
        "attention",
        s(&fixture("smooth/rgb.png")),
        s(&dir.join("none.png")),
        "--weights",
        s(&out.join("model_latest.safetensors")),
        "--pixel",
        "1,1",
        "--block",
        "3",
    ]);
    assert!(
        !ok && stderr.contains("pyramid non-local block number 3"),
        "{stderr}"
    );
    assert!(!dir.join("none.png").exists());
    std::fs::remove_dir_all(dir).unwrap();
}
