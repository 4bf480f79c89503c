//! Pyra's smoothing filters against OpenCV's outputs (made once by tools/smooth_reference.py
//! and committed in fixtures/smooth).

use std::path::PathBuf;

use pyra_tasks::image::{read_image, Image};
use pyra_tasks::smooth::{l0_smooth, weighted_median, L0Boundary, L0Options, WmfOptions};

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

#[test]
fn weighted_median_matches_opencv_with_a_gray_guide() {
    let input = read_image(fixture("rgb.png")).unwrap();
    let guide = read_image(fixture("gray.png")).unwrap();
    for (radius, sigma, file) in [(10, 50.0, "wmf_gray_r10.png"), (3, 25.5, "wmf_gray_r3.png")] {
        let ours = weighted_median(&input, Some(&guide), WmfOptions { radius, sigma }).unwrap();
        let reference = read_image(fixture(file)).unwrap();
        let (max, avg) = interior_difference(&ours, &reference, 0);
        let differing = ours
            .data
            .iter()
            .zip(&reference.data)
            .filter(|(a, b)| a != b)
            .count();
        println!("WMF r={radius} sigma={sigma}, gray guide vs OpenCV: max {max}, mean {avg:.5}, {differing} values differ");
        assert!(max <= 1.0 && differing * 1000 < ours.data.len(), "{file}");
    }
}

#[test]
fn weighted_median_with_a_colour_guide_differs_from_opencv_by_the_clustering_only() {
    let input = read_image(fixture("rgb.png")).unwrap();
    let ours = weighted_median(&input, None, WmfOptions::default()).unwrap();
    let reference = read_image(fixture("wmf_rgb_r10.png")).unwrap();
    let (max, avg) = interior_difference(&ours, &reference, 0);
    println!("WMF r=10 sigma=50, colour guide vs OpenCV: max {max}, mean {avg:.4}");
    // Different k-means clusterings of the guide: close on average, not equal.
    assert!(avg < 2.0, "mean difference {avg}");
}
