//! `pyra restore` and `pyra attention` end to end.

mod common;

use common::{fixture, pyra, s, scratch};
use std::path::{Path, PathBuf};

use pyra_core::backend;
use pyra_core::burn::tensor::{Tensor, TensorData};
use pyra_core::networks::{detect, AnyNetwork};
use pyra_core::weights::{load_state_dict, LoadOptions, StateDict};
use pyra_tasks::image::{read_image, write_png, Depth, Image};

/// A deterministic textured colour image.
fn synthetic(width: usize, height: usize, channels: usize) -> Image {
    let mut data = Vec::with_capacity(width * height * channels);
    for c in 0..channels {
        for y in 0..height {
            for x in 0..width {
                let v = 128.0
                    + 60.0 * ((x as f32 * 0.21 + c as f32).sin() * (y as f32 * 0.13).cos())
                    + 40.0 * (((x * 7 + y * 13 + c * 29) % 17) as f32 / 17.0 - 0.5);
                data.push(v.round().clamp(0.0, 255.0));
            }
        }
    }
    Image::new(width, height, channels, data)
}

fn network(weights: &Path) -> AnyNetwork {
    let dict = StateDict::read(weights).unwrap();
    let config = detect(&dict).unwrap().config_with(&[]).unwrap();
    load_state_dict(config.init(&backend::cpu()), &dict, &LoadOptions::default())
        .unwrap()
        .0
}

/// The official chop written independently: each output pixel is taken from the quadrant that
/// owns it, at that quadrant's offset times the scale; quadrants recurse while they have at
/// least `min_size` pixels. Leaves are direct forwards of the network.
fn expected_chop(net: &AnyNetwork, img: &Image, scale: usize, min_size: usize) -> Image {
    let (h, w) = (img.height, img.width);
    let (hh, wh) = (h / 2, w / 2);
    let (hs, ws) = (hh + 10, wh + 10);
    let origins = [(0, 0), (0, w - ws), (h - hs, 0), (h - hs, w - ws)];
    let outputs: Vec<Image> = origins
        .iter()
        .map(|&(y0, x0)| {
            let part = img.crop(x0, y0, ws, hs);
            if hs * ws < min_size {
                let x = Tensor::<4>::from_data(
                    TensorData::new(
                        part.data.iter().map(|v| v / 255.0).collect::<Vec<_>>(),
                        [1, part.channels, hs, ws],
                    ),
                    &backend::cpu(),
                );
                Image::from_tensor_unquantized(net.forward(x), 1.0)
            } else {
                expected_chop(net, &part, scale, min_size)
            }
        })
        .collect();
    let (oh, ow, c) = (h * scale, w * scale, outputs[0].channels);
    let mut out = Image::zeros(ow, oh, c);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let q = 2 * usize::from(oy >= hh * scale) + usize::from(ox >= wh * scale);
                let (y0, x0) = origins[q];
                let v = outputs[q].at(ch, oy - y0 * scale, ox - x0 * scale);
                out.data[(ch * oh + oy) * ow + ox] = v;
            }
        }
    }
    out
}

fn quantize(img: &Image) -> Vec<f32> {
    img.data
        .iter()
        .map(|v| v.clamp(0.0, 255.0).round_ties_even())
        .collect()
}

/// Assert `ours` (the PNG written by `restore`) is the quantized `expected` (float, 0-255):
/// a value may differ by one level only where `expected` lies within 1e-3 of a rounding
/// boundary (float summation order differs between a strided view and a contiguous crop).
fn assert_same(ours: &Image, expected: &Image) {
    assert_eq!(ours.data.len(), expected.data.len(), "sizes");
    let reference = quantize(expected);
    let mut ties = 0;
    for (i, (&got, &want)) in ours.data.iter().zip(&reference).enumerate() {
        if got == want {
            continue;
        }
        let v = expected.data[i];
        let at_boundary = ((v - v.floor()) - 0.5).abs() < 1e-3;
        assert!(
            (got - want).abs() == 1.0 && at_boundary,
            "value {i}: restore wrote {got} but the independent chop gives {v}"
        );
        ties += 1;
    }
    println!(
        "{ties} of {} values sit on a rounding boundary and differ by one level",
        reference.len()
    );
}

#[test]
fn chop_equals_independent_quadrant_forwards_panet() {
    let dir = scratch("chop");
    let weights = fixture("panet/panet_small_model_best.pt");
    // 200 x 180: quadrants of 110 x 100 = 11000 >= 6800 pixels split again into 65 x 60.
    let img = synthetic(180, 200, 3);
    let input = dir.join("in.png");
    write_png(&img, &input, Depth::Eight).unwrap();
    let out = dir.join("out.png");
    let (ok, _, err) = pyra(&[
        "restore",
        s(&input),
        s(&out),
        "--weights",
        s(&weights),
        "--mode",
        "chop",
    ]);
    assert!(ok, "{err}");
    let ours = read_image(&out).unwrap();
    let expected = expected_chop(&network(&weights), &img, 1, 6800);
    assert_same(&ours, &expected);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn chop_equals_independent_quadrant_forwards_paedsr_x2() {
    let Some(dir) = std::env::var_os("PYRA_FIXTURES_DIR") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set PYRA_FIXTURES_DIR"
        );
        eprintln!("SKIPPED: needs PYRA_FIXTURES_DIR for the PA-EDSR checkpoint");
        return;
    };
    let weights = PathBuf::from(dir).join("paedsr_small_x2_model_best.pt");
    let work = scratch("chop-sr");
    // LR 170 x 150: quadrants 95 x 85 = 8075 >= 6400 split again into 57 x 52.
    let img = synthetic(150, 170, 3);
    let input = work.join("lr.png");
    write_png(&img, &input, Depth::Eight).unwrap();
    let out = work.join("sr.png");
    let (ok, _, err) = pyra(&[
        "restore",
        s(&input),
        s(&out),
        "--weights",
        s(&weights),
        "--mode",
        "chop",
    ]);
    assert!(ok, "{err}");
    let ours = read_image(&out).unwrap();
    assert_eq!((ours.width, ours.height), (300, 340));
    let expected = expected_chop(&network(&weights), &img, 2, 6400);
    assert_same(&ours, &expected);
    std::fs::remove_dir_all(work).unwrap();
}

#[test]
fn folder_mode_skips_shards_scores_and_writes_16_bit() {
    let dir = scratch("folder");
    let weights = fixture("panet/panet_small_model_best.pt");
    let (clean, noisy, out) = (dir.join("clean"), dir.join("noisy"), dir.join("out"));
    for d in [&clean, &noisy] {
        std::fs::create_dir_all(d).unwrap();
    }
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let img = synthetic(40 + 8 * i, 36, 3);
        write_png(&img, clean.join(format!("{name}.png")), Depth::Eight).unwrap();
        let mut noisy_img = img.clone();
        noisy_img
            .data
            .iter_mut()
            .enumerate()
            .for_each(|(k, v)| *v = (*v + ((k * 37) % 11) as f32 - 5.0).clamp(0.0, 255.0));
        write_png(&noisy_img, noisy.join(format!("{name}.png")), Depth::Eight).unwrap();
    }
    // Shard 1/2 takes the second image only.
    let (ok, stdout, err) = pyra(&[
        "restore",
        s(&noisy),
        s(&out),
        "--weights",
        s(&weights),
        "--shard",
        "1/2",
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("restored 1 of 1"), "{stdout}");
    assert!(out.join("b.png").exists() && !out.join("a.png").exists());
    // The whole folder: b is skipped, a and c restored and scored.
    let (ok, stdout, err) = pyra(&[
        "restore",
        s(&noisy),
        s(&out),
        "--weights",
        s(&weights),
        "--gt",
        s(&clean),
        "--depth",
        "16",
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("| a | ") && stdout.contains("| c | ") && !stdout.contains("| b | "),
        "{stdout}"
    );
    assert!(
        stdout.contains("mean of 2") && stdout.contains("skipped 1 existing"),
        "{stdout}"
    );
    assert_eq!(read_image(out.join("a.png")).unwrap().bit_depth, 16);
    // --overwrite redoes all three.
    let (ok, stdout, _) = pyra(&[
        "restore",
        s(&noisy),
        s(&out),
        "--weights",
        s(&weights),
        "--overwrite",
    ]);
    assert!(ok && stdout.contains("restored 3 of 3"), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn modes_ensemble_and_errors() {
    let dir = scratch("modes");
    let weights = fixture("panet/panet_small_model_best.pt");
    let img = synthetic(70, 60, 3);
    let input = dir.join("in.png");
    write_png(&img, &input, Depth::Eight).unwrap();
    for extra in [
        &["--mode", "whole"][..],
        &["--mode", "tile", "--tile", "40", "--overlap", "8"],
        &["--ensemble"],
    ] {
        let out = dir.join("out.png");
        let mut args = vec![
            "restore",
            s(&input),
            s(&out),
            "--weights",
            s(&weights),
            "--overwrite",
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = pyra(&args);
        assert!(ok, "{extra:?}: {err}");
        let o = read_image(&out).unwrap();
        assert_eq!((o.width, o.height, o.channels), (70, 60, 3));
    }
    // A whole pass that does not fit the budget names the modes that would.
    let (ok, _, err) = pyra(&[
        "restore",
        s(&input),
        s(&dir.join("x.png")),
        "--weights",
        s(&weights),
        "--mode",
        "whole",
        "--memory-budget",
        "1",
    ]);
    assert!(
        !ok && err.contains("use --mode tile") && err.contains("--mode chop"),
        "{err}"
    );
    assert!(!dir.join("x.png").exists());
    // A gray image into a colour model.
    let gray = dir.join("gray.png");
    write_png(&synthetic(30, 30, 1), &gray, Depth::Eight).unwrap();
    let (ok, _, err) = pyra(&[
        "restore",
        s(&gray),
        s(&dir.join("y.png")),
        "--weights",
        s(&weights),
    ]);
    assert!(
        !ok && err.contains("1 channel(s) but the model expects 3"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn attention_picture_has_one_row_per_pixel_and_one_column_per_level() {
    let dir = scratch("attention");
    let weights = fixture("panet/panet_small_model_best.pt");
    let input = dir.join("in.png");
    write_png(&synthetic(50, 40, 3), &input, Depth::Eight).unwrap();
    let out = dir.join("attention.png");
    let (ok, stdout, err) = pyra(&[
        "attention",
        s(&input),
        s(&out),
        "--weights",
        s(&weights),
        "--pixel",
        "10,5",
        "--pixel",
        "49,39",
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("50x40, 45x36, 40x32, 35x28, 30x24"),
        "{stdout}"
    );
    let picture = read_image(&out).unwrap();
    // Widths 50+45+40+35+30 plus 6 gaps of 4; two rows of 40 plus 3 gaps.
    assert_eq!((picture.width, picture.height), (224, 92));
    let (ok, _, err) = pyra(&[
        "attention",
        s(&input),
        s(&out),
        "--weights",
        s(&weights),
        "--pixel",
        "50,5",
    ]);
    assert!(!ok && err.contains("outside the 50x40 image"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `--attention-window` reaches the network: a 64x64 image in one 64-pixel tile with the
/// attention in 16-pixel windows is the library's forward with that window, and not the
/// global one.
#[test]
fn attention_window_reaches_the_network() {
    let dir = scratch("window");
    let weights = fixture("panet/panet_small_model_best.pt");
    let img = synthetic(64, 64, 3);
    let input = dir.join("in.png");
    write_png(&img, &input, Depth::Eight).unwrap();
    let restore = |window: &str| {
        let out = dir.join(format!("out-{window}.png"));
        let (ok, _, err) = pyra(&[
            "restore",
            s(&input),
            s(&out),
            "--weights",
            s(&weights),
            "--mode",
            "tile",
            "--tile",
            "64",
            "--overlap",
            "8",
            "--attention-window",
            window,
        ]);
        assert!(ok, "{err}");
        read_image(&out).unwrap()
    };
    let forward = |window: Option<usize>| {
        let mut net = network(&weights);
        net.set_attention_window(window);
        let x = Tensor::<4>::from_data(
            TensorData::new(
                img.data.iter().map(|v| v / 255.0).collect::<Vec<_>>(),
                [1, 3, 64, 64],
            ),
            &backend::cpu(),
        );
        Image::from_tensor_unquantized(net.forward(x), 1.0)
    };
    let windowed = restore("16");
    assert_same(&windowed, &forward(Some(16)));
    assert_same(&restore("global"), &forward(None));
    assert_ne!(windowed.data, restore("global").data);
    let (ok, _, err) = pyra(&[
        "restore",
        s(&input),
        s(&dir.join("x.png")),
        "--attention-window",
        "4",
    ]);
    assert!(!ok && err.contains("at least 8 pixels"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `pyra bench --mode window` scores the whole-image forward with the attention in windows
/// (as `pyra restore` plans it), `--mode whole` the global one; both checked against forwards
/// of the network on the same noisy image.
#[test]
fn bench_window_mode_scores_the_windowed_forward() {
    use pyra_tasks::degrade::{add_gaussian_noise, NoiseProtocol};
    use pyra_tasks::metrics::{psnr, MetricOptions};
    let dir = scratch("bench-window");
    let weights = fixture("panet/panet_small_model_best.pt");
    let clean = synthetic(64, 64, 3);
    std::fs::create_dir_all(dir.join("Tiny")).unwrap();
    write_png(&clean, dir.join("Tiny/a.png"), Depth::Eight).unwrap();
    // One bench of the given models on Tiny at sigma 30: success, bench.csv, stderr.
    let out = dir.join("out");
    let run_bench = |models: &[&str], extra: &[&str]| -> (bool, String, String) {
        let mut args = vec![
            "bench", "--task", "denoise", "--levels", "30", "--seed", "3", "--sets", "Tiny",
            "--data",
        ];
        args.extend_from_slice(&[s(&dir), "--out", s(&out)]);
        for model in models {
            args.extend_from_slice(&["--weights", model]);
        }
        args.extend_from_slice(extra);
        let (ok, _, err) = pyra(&args);
        let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap_or_default();
        (ok, csv, err)
    };
    // The PSNR of `model`'s row.
    let psnr_of = |csv: &str, model: &str| -> f64 {
        let row = csv
            .lines()
            .find(|l| l.starts_with(model))
            .unwrap_or_else(|| panic!("no row of {model} in {csv}"));
        row.split(',').nth(4).unwrap().parse().unwrap()
    };
    let model = "panet_small_model_best";
    let bench = |extra: &[&str]| -> f64 {
        let (ok, csv, err) = run_bench(&[s(&weights)], extra);
        assert!(ok, "{err}");
        psnr_of(&csv, model)
    };
    let noisy = add_gaussian_noise(&clean, 30.0, 3, NoiseProtocol::Clip8);
    let expected = |window: Option<usize>| {
        let mut net = network(&weights);
        net.set_attention_window(window);
        let x = Tensor::<4>::from_data(
            TensorData::new(
                noisy.data.iter().map(|v| v / 255.0).collect::<Vec<_>>(),
                [1, 3, 64, 64],
            ),
            &backend::cpu(),
        );
        let out = Image::from_tensor(net.forward(x), 1.0);
        let plain = MetricOptions {
            y_channel: false,
            shave: 0,
        };
        psnr(&clean, &out, plain).unwrap()
    };
    let windowed = bench(&["--mode", "window", "--attention-window", "16"]);
    let whole = bench(&["--mode", "whole"]);
    assert!((windowed - expected(Some(16))).abs() < 1e-4, "{windowed}");
    assert!((whole - expected(None)).abs() < 1e-4, "{whole}");
    assert_ne!(windowed, whole);
    let (ok, _, err) = run_bench(
        &[s(&weights)],
        &["--mode", "chop", "--attention-window", "16"],
    );
    assert!(!ok && err.contains("goes with --mode window"), "{err}");
    // Beside a model without pyramid attention (FFDNet beside PANet-B in the model card's
    // table), the window applies to the attention model and the other one runs whole.
    let (ok, csv, err) = run_bench(&[s(&weights), "pyra-dn25"], &["--attention-window", "16"]);
    assert!(ok, "{err}");
    assert!((psnr_of(&csv, model) - expected(Some(16))).abs() < 1e-4);
    assert!(psnr_of(&csv, "pyra-dn25") > 0.0);
    // With no attention model at all, the window has nothing to apply to.
    let (ok, _, err) = run_bench(&["pyra-dn25"], &["--attention-window", "16"]);
    assert!(
        !ok && err.contains("no given model has pyramid attention"),
        "{err}"
    );
    // Two runs' files of the same name get their folder's name in the table.
    for run in ["a", "b"] {
        std::fs::create_dir_all(dir.join(run)).unwrap();
        std::fs::copy(&weights, dir.join(run).join("m.pt")).unwrap();
    }
    let (ok, out, err) = pyra(&[
        "bench",
        "--task",
        "denoise",
        "--levels",
        "30",
        "--sets",
        "Tiny",
        "--data",
        s(&dir),
        "--weights",
        s(&dir.join("a/m.pt")),
        "--weights",
        s(&dir.join("b/m.pt")),
        "--out",
        s(&dir.join("out")),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("| Tiny | a/m |") && out.contains("| Tiny | b/m |"),
        "{out}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
