//! Degradations checked against real data: MATLAB-made SR inputs bit for bit, and the
//! degraded-input baselines of the PANet paper's tables computed end to end.
//! Needs the benchmark images: `PYRA_DATA_DIR` (CI: ../shared/data).

use std::path::PathBuf;

use pyra_tasks::degrade::{imresize, jpeg_round_trip, mosaic_grbg, Resize};
use pyra_tasks::image::{list_images, read_image, Image};
use pyra_tasks::metrics::{psnr, ssim, MetricOptions};

fn bench_dir(set: &str) -> Option<PathBuf> {
    match std::env::var_os("PYRA_DATA_DIR") {
        Some(dir) => {
            let path = PathBuf::from(dir).join("bench").join(set);
            assert!(
                path.is_dir(),
                "PYRA_DATA_DIR is set but {} is missing",
                path.display()
            );
            Some(path)
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set PYRA_DATA_DIR (the .ci/run script points it at ../shared/data)"
            );
            eprintln!("SKIPPED: needs the benchmark images; set PYRA_DATA_DIR to ../shared/data");
            None
        }
    }
}

fn images(set: &str) -> Option<Vec<(String, Image)>> {
    let dir = bench_dir(set)?;
    Some(
        list_images(&dir)
            .unwrap()
            .into_iter()
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, read_image(&p).unwrap())
            })
            .collect(),
    )
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn matlab_bicubic_downscaling_is_bit_exact_on_set5() {
    let Some(hr) = images("Set5") else { return };
    let lr_root = bench_dir("Set5_LR_bicubic").unwrap();
    for scale in [2usize, 3, 4] {
        for (name, image) in &hr {
            let ours = imresize(
                &image.mod_crop(scale),
                Resize {
                    scale: 1.0 / scale as f64,
                },
            );
            let matlab = read_image(lr_root.join(format!("X{scale}/{name}x{scale}.png"))).unwrap();
            assert_eq!(
                (ours.width, ours.height),
                (matlab.width, matlab.height),
                "{name} x{scale}"
            );
            let differing = ours
                .data
                .iter()
                .zip(&matlab.data)
                .filter(|(a, b)| a != b)
                .count();
            println!(
                "{name} x{scale}: {differing} of {} values differ",
                ours.data.len()
            );
            assert_eq!(differing, 0, "{name} x{scale}");
        }
    }
}

#[test]
fn bicubic_sr_baseline_matches_the_paper() {
    // PANet Table 4, "Bicubic" row: Set5 / Set14, PSNR on Y, shave = scale.
    let paper = [(2usize, 33.66, 30.24), (3, 30.39, 27.55), (4, 28.42, 26.00)];
    let (Some(set5), Some(set14)) = (images("Set5"), images("Set14")) else {
        return;
    };
    for (scale, p5, p14) in paper {
        let options = MetricOptions {
            y_channel: true,
            shave: scale,
        };
        let score = |set: &[(String, Image)]| {
            let mut psnrs = Vec::new();
            let mut ssims = Vec::new();
            for (_, image) in set {
                let hr = image.mod_crop(scale);
                let lr = imresize(
                    &hr,
                    Resize {
                        scale: 1.0 / scale as f64,
                    },
                );
                let up = imresize(
                    &lr,
                    Resize {
                        scale: scale as f64,
                    },
                );
                psnrs.push(psnr(&hr, &up, options).unwrap());
                ssims.push(ssim(&hr, &up, options).unwrap());
            }
            (mean(&psnrs), mean(&ssims))
        };
        let (s5, q5) = score(&set5);
        let (s14, q14) = score(&set14);
        println!("bicubic x{scale}: Set5 {s5:.3} dB / {q5:.4} (paper {p5}), Set14 {s14:.3} dB / {q14:.4} (paper {p14})");
        assert!((s5 - p5).abs() <= 0.02, "Set5 x{scale}: {s5}");
        assert!((s14 - p14).abs() <= 0.02, "Set14 x{scale}: {s14}");
    }
}

#[test]
fn jpeg_baseline_on_classic5_matches_the_paper() {
    // PANet Table 3, "JPEG" column on classic5 (gray).
    let paper = [(10u8, 27.82), (20, 30.12), (30, 31.48), (40, 32.43)];
    let Some(set) = images("classic5") else {
        return;
    };
    let options = MetricOptions {
        y_channel: false,
        shave: 0,
    };
    for (quality, expected) in paper {
        let mut psnrs = Vec::new();
        let mut ssims = Vec::new();
        for (_, image) in &set {
            let gray = image.to_gray();
            let degraded = jpeg_round_trip(&gray, quality).unwrap();
            psnrs.push(psnr(&gray, &degraded, options).unwrap());
            ssims.push(ssim(&gray, &degraded, options).unwrap());
        }
        let (p, s) = (mean(&psnrs), mean(&ssims));
        println!("JPEG q{quality} classic5: {p:.3} dB / {s:.4} (paper {expected})");
        assert!((p - expected).abs() <= 0.02, "q{quality}: {p}");
    }
}

#[test]
fn mosaic_baseline_matches_the_paper() {
    // PANet Table 2, "Mosaiced" row: McMaster 9.17 dB, Kodak24 8.56 dB (RGB).
    // On this project's Kodak24 (500x500 centre crops) the mosaic scores 8.435 dB whatever the
    // Bayer phase; an independent NumPy computation on the same files gives 8.434849, which is
    // the reference here. The paper's 8.56 was likely measured on another Kodak version (see
    // the issue #3 closing note); McMaster, the same code path, matches the paper.
    let options = MetricOptions {
        y_channel: false,
        shave: 0,
    };
    for (set, expected, tolerance) in [("McMaster", 9.17, 0.02), ("Kodak24", 8.434_849, 1e-3)] {
        let Some(images) = images(set) else { return };
        let mut psnrs = Vec::new();
        let mut ssims = Vec::new();
        for (_, image) in &images {
            let mosaic = mosaic_grbg(image);
            psnrs.push(psnr(image, &mosaic, options).unwrap());
            ssims.push(ssim(image, &mosaic, options).unwrap());
        }
        let (p, s) = (mean(&psnrs), mean(&ssims));
        println!("mosaic {set}: {p:.3} dB / {s:.4} (reference {expected})");
        assert!((p - expected).abs() <= tolerance, "{set}: {p}");
    }
}
