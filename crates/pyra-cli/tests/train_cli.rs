//! `pyra train` and `pyra demo` end to end.

mod common;

use common::{photo, pyra, pyra_status, run_losses, s, scratch};

use pyra_tasks::degrade::{add_gaussian_noise, NoiseProtocol};
use pyra_tasks::image::{read_image, write_png, Depth};

#[test]
fn a_short_run_writes_everything_and_its_weights_restore() {
    let dir = scratch("run");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..3 {
        write_png(&photo(i), data.join(format!("{i}.png")), Depth::Eight).unwrap();
    }
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "cli"
[model]
arch = "panet"
settings = {{ n_resblocks = 2, n_feats = 8, attention = false }}
[task]
kind = "denoise"
sigma = 25
[data]
train = "{}"
patch_size = 24
batch_size = 2
holdout = 1
[optim]
loss = "l1"
lr = 1e-3
steps = 4
[validation]
every = 2
[output]
dir = "{}"
log_every = 1
"#,
            s(&data),
            s(&dir.join("out"))
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = pyra(&["train", "--config", s(&config), "--quiet"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("step 4/4 (finished)"), "{stdout}");
    let out = dir.join("out");
    for file in [
        "checkpoint_latest.safetensors",
        "model_best.safetensors",
        "model_latest.safetensors",
        "log.csv",
        "validation.csv",
        "loss.png",
        "validation_psnr.png",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("log.csv"))
            .unwrap()
            .lines()
            .count(),
        5
    );
    // Plots are real PNGs of the documented size.
    let plot = read_image(out.join("loss.png")).unwrap();
    assert_eq!((plot.width, plot.height), (800, 480));

    // Running again without --resume would overwrite the run: refused, nothing touched.
    let before = std::fs::read(out.join("checkpoint_latest.safetensors")).unwrap();
    let (ok, _, stderr) = pyra(&["train", "--config", s(&config), "--quiet"]);
    assert!(!ok);
    assert!(stderr.contains("--resume"), "{stderr}");
    assert_eq!(
        before,
        std::fs::read(out.join("checkpoint_latest.safetensors")).unwrap()
    );

    // `pyra runs` reports the run's one leg (this CPU, 4 steps, its CPU time) and each
    // validation with the CPU hours spent to reach it, and draws the chart.
    let chart = dir.join("runs.png");
    let (ok, stdout, stderr) = pyra(&["runs", s(&out), "--chart", s(&chart)]);
    assert!(ok, "{stderr}");
    let leg = stdout
        .lines()
        .find(|l| l.starts_with("| 1 |"))
        .unwrap_or_else(|| panic!("no leg row: {stdout}"));
    assert!(leg.contains("| 0 -> 4 |"), "{leg}");
    let cpu: f64 = leg.split('|').nth(7).unwrap().trim().parse().unwrap();
    assert!(cpu >= 0.0, "{leg}");
    assert!(stdout.contains("| **sum** |"), "{stdout}");
    for step in [2, 4] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {step} | ")))
            .unwrap_or_else(|| panic!("no validation row for step {step}: {stdout}"));
        assert!(!row.contains("unknown"), "{row}");
    }
    assert_eq!(read_image(&chart).unwrap().width, 800);
    assert!(out.join("validation_cpu_hours.png").exists());
    // A folder that is not a run: one line, a failure.
    let (ok, _, stderr) = pyra(&["runs", s(&dir.join("nothing"))]);
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a run folder"), "{stderr}");

    // The exported weights are recognised by `pyra restore` without flags.
    let noisy = add_gaussian_noise(&photo(7), 25.0, 1, NoiseProtocol::Clip8);
    write_png(&noisy, dir.join("noisy.png"), Depth::Eight).unwrap();
    let (ok, _, stderr) = pyra(&[
        "restore",
        s(&dir.join("noisy.png")),
        s(&dir.join("restored.png")),
        "--weights",
        s(&out.join("model_best.safetensors")),
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("attention=false"), "{stderr}");
    assert_eq!(read_image(dir.join("restored.png")).unwrap().width, 48);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn data_parallel_training_follows_the_single_device_run() {
    let dir = scratch("parallel");
    let single = run_losses(&dir.join("single"), &["--device", "cpu"]);
    let parallel = run_losses(&dir.join("parallel"), &["--devices", "cpu,cpu"]);
    assert_eq!(single.len(), 3);
    for (a, b) in single.iter().zip(&parallel) {
        assert!((a - b).abs() <= 1e-4 * a, "{single:?} vs {parallel:?}");
    }
    // A list naming a GPU in this CPU build, or more devices than patches, is refused.
    let (ok, _, stderr) = pyra(&["train", "--preset", "pyra-dn25", "--devices", "cpu,gpu:1"]);
    if !pyra_core::backend::gpu_compiled() {
        assert!(!ok && stderr.contains("no GPU backend"), "{stderr}");
        let (ok, _, stderr) = pyra(&["forward", "--device", "gpu"]);
        assert!(!ok && stderr.contains("no GPU backend"), "{stderr}");
    }
    let (ok, _, stderr) = pyra(&["train", "--preset", "pyra-dn25", "--devices", "cpu:3"]);
    assert!(!ok && stderr.contains("one CPU device"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_train_invocations_are_refused_with_the_reason() {
    let (ok, _, stderr) = pyra(&["train", "--preset", "nope"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown preset `nope`") && stderr.contains("pyra-dn25"),
        "{stderr}"
    );
    let (ok, _, stderr) = pyra(&["train", "--preset", "pyra-dn25", "--set", "optim.lr=0"]);
    assert!(!ok);
    assert!(stderr.contains("optim.lr"), "{stderr}");
    let dir = scratch("noresume");
    let (ok, _, stderr) = pyra(&[
        "train",
        "--preset",
        "pyra-dn25",
        "--set",
        &format!("output.dir=\"{}\"", s(&dir.join("none"))),
        "--resume",
    ]);
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
    // A batch that does not fit the memory budget is refused before anything is written,
    // naming the largest batch that fits (PANet-80 at 16 x 48x48: about 3.5 GiB estimated).
    let dir = scratch("memory");
    let run_dir = dir.join("run");
    let (code, stderr) = pyra_status(&[
        "train",
        "--preset",
        "panet-dn",
        "--memory-budget",
        "1024",
        "--set",
        &format!("output.dir=\"{}\"", s(&run_dir)),
    ]);
    assert!(
        code.is_some_and(|c| c != 0 && c != 101),
        "{code:?}: {stderr}"
    );
    assert!(
        stderr.contains("a training step of 16 x 48x48 patches needs about")
            && stderr.contains("set data.batch_size="),
        "{stderr}"
    );
    assert!(
        !run_dir.exists(),
        "the refused run wrote {}",
        run_dir.display()
    );
    // Presets print as TOML that parses back.
    let (ok, stdout, _) = pyra(&["train", "--preset", "paedsr-x4", "--print-config"]);
    assert!(ok);
    assert!(
        stdout.contains("scale = 4") && stdout.contains("patch_size = 192"),
        "{stdout}"
    );
}

fn psnrs(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter_map(|l| l.split("PSNR").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

/// The README's first command: the bundled models restore the bundled photo, clearly.
#[test]
fn the_demo_improves_the_photo_with_every_bundled_model() {
    let dir = scratch("demo");
    for (args, min_gain) in [
        (vec!["--sigma", "25"], 6.0),
        (vec!["--sigma", "50"], 8.0),
        (vec!["--task", "sr"], 0.5),
    ] {
        let out = dir.join("demo.png");
        let mut all = vec!["demo", "--out", s(&out)];
        all.extend(args.iter().copied());
        let (ok, stdout, stderr) = pyra(&all);
        assert!(ok, "{stderr}");
        let p = psnrs(&stdout);
        assert_eq!(p.len(), 2, "{stdout}");
        println!("demo {args:?}: {:.2} -> {:.2} dB", p[0], p[1]);
        assert!(p[1] > p[0] + min_gain, "{args:?}: {stdout}");
        let picture = read_image(&out).unwrap();
        assert!(picture.width > 3 * 300, "side by side: {}", picture.width);
    }
    let (ok, _, stderr) = pyra(&["demo", "--sigma", "30"]);
    assert!(!ok);
    assert!(stderr.contains("sigma 30"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
