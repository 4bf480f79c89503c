//! The GPU build end to end (`cargo test --features gpu`; CI runs it on Mesa's lavapipe, a
//! Vulkan driver computing on the CPU): restore and train on the GPU give what they give on
//! the CPU. A build without a GPU backend has no tests here (its refusal of `--device gpu` is
//! tested in train_cli.rs).
#![cfg(feature = "gpu")]

mod common;

use common::{fixture, pyra, run_losses, s, scratch};
use pyra_tasks::degrade::{add_gaussian_noise, NoiseProtocol};
use pyra_tasks::image::{read_image, write_png, Depth, Image};

/// A 256x256 colour photo: texture, a disc and edges, with sigma-25 noise.
fn noisy_photo() -> Image {
    let (w, h) = (256, 256);
    let mut data = Vec::with_capacity(w * h * 3);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let disc = if (x as i32 - 120).pow(2) + (y as i32 - 100).pow(2) < 3600 {
                    70.0
                } else {
                    0.0
                };
                let v = 90.0
                    + 50.0 * ((x as f32 * 0.11 + c as f32).sin() * (y as f32 * 0.07).cos())
                    + disc
                    + if x > 200 { 40.0 } else { 0.0 };
                data.push(v.round().clamp(0.0, 255.0));
            }
        }
    }
    add_gaussian_noise(&Image::new(w, h, 3, data), 25.0, 3, NoiseProtocol::Clip8)
}

/// Issue 17's acceptance run. Not in CI: lavapipe computes about 1 GFLOP/s and compiles each
/// new kernel for seconds, so this takes 30 minutes there (run it with `--ignored`). Measured
/// on the 2-core AMD EPYC (Zen 3) with Mesa 22.3.6: 6 of 196,608 values differ, by 1/255.
#[test]
#[ignore = "30 minutes on lavapipe; run with --ignored"]
fn restore_on_the_gpu_gives_the_cpu_result_within_one_level() {
    let dir = scratch("gpu-restore");
    let input = dir.join("noisy.png");
    write_png(&noisy_photo(), &input, Depth::Eight).unwrap();
    // The official small PANet checkpoint: pyramid attention after its middle block.
    let weights = fixture("panet/panet_small_model_best.pt");
    let restore = |device: &str| {
        let out = dir.join(format!("{device}.png"));
        let (ok, _, err) = pyra(&[
            "restore",
            s(&input),
            s(&out),
            "--weights",
            s(&weights),
            "--device",
            device,
            // A plan given rather than timed (the auto planner's trial runs would make
            // lavapipe compile shaders for every trial shape): 128-pixel tiles, the
            // attention in 32-pixel windows (16 windows of a tile as one batch).
            "--mode",
            "tile",
            "--tile",
            "128",
            "--attention-window",
            "32",
        ]);
        assert!(ok, "{err}");
        (read_image(&out).unwrap(), err)
    };
    let (cpu, _) = restore("cpu");
    let (gpu, err) = restore("gpu");
    assert!(
        err.contains("device: Vulkan GPU") || err.contains("device: CUDA GPU"),
        "{err}"
    );
    assert_eq!((gpu.width, gpu.height, gpu.channels), (256, 256, 3));
    let (mut worst, mut differing) = (0.0f32, 0usize);
    for (a, b) in cpu.data.iter().zip(&gpu.data) {
        worst = worst.max((a - b).abs());
        differing += usize::from(a != b);
    }
    println!(
        "GPU vs CPU: {differing} of {} values differ, by at most {worst}/255",
        cpu.data.len()
    );
    assert!(worst <= 1.0, "a pixel differs by {worst}/255");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_short_training_run_on_the_gpu_follows_the_cpu_run() {
    let dir = scratch("gpu-train");
    // A small PANet with (soft) pyramid attention: the GPU trains it through the chunked
    // attention (weights recomputed in the backward), the CPU through the streaming kernel.
    let cpu = run_losses(&dir.join("cpu"), &["--device", "cpu"]);
    let gpu = run_losses(&dir.join("gpu"), &["--device", "gpu"]);
    println!("losses: CPU {cpu:?}, GPU {gpu:?}");
    assert_eq!(gpu.len(), 3);
    for (a, b) in cpu.iter().zip(&gpu) {
        assert!((a - b).abs() <= 1e-3 * a, "{cpu:?} vs {gpu:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
