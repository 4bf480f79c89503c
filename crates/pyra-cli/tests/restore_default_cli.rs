//! `pyra restore IN OUT` with no flags: the noise level is estimated and printed, the bundled
//! denoiser for it restores the image, and the result is what the library's three-line
//! restore gives with that model.

mod common;

use common::{pyra, s, scratch};

use pyra_core::backend;
use pyra_infer::Restorer;
use pyra_tasks::degrade::{add_gaussian_noise, NoiseProtocol};
use pyra_tasks::image::{read_image, write_png, Depth};

#[test]
fn restore_with_no_flags_estimates_the_noise_and_picks_the_model() {
    let dir = scratch("restore_default");
    let photo = read_image(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/sample/95006.png"
    ))
    .unwrap()
    .crop(100, 80, 96, 80);
    let device = backend::cpu();
    for (sigma, flags, expected) in [
        (15.0, &[][..], "pyra-dn25"),
        (50.0, &[][..], "pyra-dn50"),
        (15.0, &["--sigma", "50"][..], "pyra-dn50"),
    ] {
        let noisy = add_gaussian_noise(&photo, sigma, 7, NoiseProtocol::Clip8);
        let input = dir.join(format!("noisy{sigma}.png"));
        write_png(&noisy, &input, Depth::Eight).unwrap();
        let output = dir.join(format!("out{sigma}_{}.png", flags.len()));
        let mut args = vec!["restore", s(&input), s(&output)];
        args.extend_from_slice(flags);
        let (ok, _, stderr) = pyra(&args);
        assert!(ok, "restore failed: {stderr}");
        assert!(stderr.contains(&format!("model {expected}")), "{stderr}");
        if flags.is_empty() {
            // The printed estimate is near the true level.
            let line = stderr.lines().find(|l| l.contains("noise sigma")).unwrap();
            let estimate: f64 = line
                .split("noise sigma ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no estimate in `{line}`"));
            assert!((estimate / sigma - 1.0).abs() < 0.15, "{line}");
        } else {
            assert!(stderr.contains("noise sigma 50.0 (given)"), "{stderr}");
        }
        let ours = read_image(&output).unwrap();
        let restorer = Restorer::open(expected, &device).unwrap();
        let reference = restorer.restore(&read_image(&input).unwrap());
        assert_eq!(ours.data, reference.data, "{expected} on sigma {sigma}");
    }
}
