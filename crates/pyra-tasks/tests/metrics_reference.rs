//! PSNR/SSIM against scikit-image on committed image pairs (`fixtures/metrics`, made and
//! scored by `tools/metric_reference.py`): PSNR to 1e-3 dB, SSIM to 1e-4.

use std::path::PathBuf;

use pyra_tasks::image::read_image;
use pyra_tasks::metrics::{psnr, ssim, MetricOptions};

#[test]
fn metrics_agree_with_scikit_image() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/metrics");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let gt = read_image(dir.join(case["gt"].as_str().unwrap())).unwrap();
        let pred = read_image(dir.join(case["pred"].as_str().unwrap())).unwrap();
        let options = MetricOptions {
            y_channel: case["y_channel"].as_bool().unwrap(),
            shave: case["shave"].as_u64().unwrap() as usize,
        };
        let p = psnr(&gt, &pred, options).unwrap();
        let s = ssim(&gt, &pred, options).unwrap();
        let (rp, rs) = (
            case["psnr"].as_f64().unwrap(),
            case["ssim"].as_f64().unwrap(),
        );
        println!(
            "{} vs {} {options:?}: PSNR {p:.6} (skimage {rp:.6}, |diff| {:.1e}), SSIM {s:.6} (skimage {rs:.6}, |diff| {:.1e})",
            case["gt"], case["pred"], (p - rp).abs(), (s - rs).abs()
        );
        assert!((p - rp).abs() <= 1e-3, "PSNR {p} vs {rp}");
        assert!((s - rs).abs() <= 1e-4, "SSIM {s} vs {rs}");
    }
}
