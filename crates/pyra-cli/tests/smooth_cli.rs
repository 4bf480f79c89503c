//! `pyra smooth l0|wmf|sd` end to end.

mod common;

use common::{fixture, pyra, s, scratch};
use pyra_tasks::image::read_image;

#[test]
fn every_filter_writes_an_8_bit_image_and_wmf_equals_opencv() {
    let dir = scratch("smooth");
    let input = fixture("smooth/rgb.png");
    for args in [
        vec!["l0", "--lambda", "0.02", "--kappa", "2"],
        vec!["wmf", "--radius", "10", "--sigma", "50"],
        vec!["sd", "--lambda", "15", "--iterations", "3"],
    ] {
        let out = dir.join(format!("{}.png", args[0]));
        let mut all = vec!["smooth", args[0], s(&input), s(&out)];
        all.extend(&args[1..]);
        let (ok, _, stderr) = pyra(&all);
        assert!(ok, "{args:?}: {stderr}");
        let image = read_image(&out).unwrap();
        assert_eq!((image.width, image.height, image.bit_depth), (80, 64, 8));
    }
    let out = dir.join("wmf_gray.png");
    let (ok, _, stderr) = pyra(&[
        "smooth",
        "wmf",
        s(&input),
        s(&out),
        "--guide",
        s(&fixture("smooth/gray.png")),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        read_image(&out).unwrap().data,
        read_image(fixture("smooth/wmf_gray_r10.png")).unwrap().data
    );
    let (ok, _, stderr) = pyra(&["smooth", "l0", s(&input), s(&out), "--kappa", "1"]);
    assert!(!ok && stderr.contains("--kappa"), "{stderr}");
    let (ok, _, stderr) = pyra(&[
        "smooth",
        "wmf",
        s(&input),
        s(&out),
        "--guide",
        s(&fixture("metrics/gray_clean.png")),
    ]);
    assert!(!ok && stderr.contains("guide"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
