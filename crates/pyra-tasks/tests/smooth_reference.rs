//! Pyra's smoothing filters against OpenCV's outputs (made once by tools/smooth_reference.py
//! and committed in fixtures/smooth).

use std::path::PathBuf;

use pyra_tasks::image::{read_image, Image};
use pyra_tasks::smooth::{l0_smooth, L0Boundary, L0Options};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/smooth")
        .join(name)
}

/// Max and mean |a - b| over pixels at least `border` away from every edge.
fn interior_difference(a: &Image, b: &Image, border: usize) -> (f32, f32) {
    assert_eq!(
        (a.width, a.height, a.channels),
        (b.width, b.height, b.channels)
    );
    let (mut max, mut sum, mut count) = (0.0f32, 0.0f32, 0usize);
    for c in 0..a.channels {
        for y in border..a.height - border {
            for x in border..a.width - border {
                let d = (a.at(c, y, x) - b.at(c, y, x)).abs();
                max = max.max(d);
                sum += d;
                count += 1;
            }
        }
    }
    (max, sum / count as f32)
}

fn mean(image: &Image) -> f32 {
    image.data.iter().sum::<f32>() / image.data.len() as f32
}

#[test]
fn l0_matches_opencv_in_its_border_mode_and_keeps_the_mean_in_the_papers() {
    let input = read_image(fixture("rgb.png")).unwrap();
    let reference = read_image(fixture("l0_opencv.safetensors")).unwrap();
    let ours = l0_smooth(
        &input,
        L0Options {
            boundary: L0Boundary::OpenCv,
            ..Default::default()
        },
    );
    let (max, avg) = interior_difference(&ours, &reference, 0);
    println!("L0, OpenCV border mode vs OpenCV: max {max:.4}, mean {avg:.5} (0-255 scale)");
    assert!(max < 0.5, "max difference {max}");

    // The paper's periodic solve, against an independent NumPy implementation.
    let periodic = l0_smooth(&input, L0Options::default());
    let numpy = read_image(fixture("l0_numpy.safetensors")).unwrap();
    let (max, avg) = interior_difference(&periodic, &numpy, 0);
    println!("L0, periodic vs NumPy: max {max:.4}, mean {avg:.5}");
    assert!(max < 0.5, "max difference {max}");

    // It keeps the image mean; OpenCV's border mix drifts it.
    println!(
        "means: input {:.2}, periodic {:.2}, OpenCV {:.2}",
        mean(&input),
        mean(&periodic),
        mean(&reference)
    );
    assert!((mean(&periodic) - mean(&input)).abs() < 0.5);
    assert!((mean(&reference) - mean(&input)).abs() > 20.0);
}
