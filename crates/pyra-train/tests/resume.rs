//! Stopping and resuming a run gives bit-identical weights, optimizer state and loss curve to
//! an uninterrupted run of the same length.

use std::path::Path;

use pyra_core::weights::StateDict;
use pyra_tasks::image::{write_png, Depth, Image};
use pyra_train::checkpoint::Checkpoint;
use pyra_train::{parse_run, train, RunOptions, Stop};

/// A few synthetic clean images (smooth gradients with edges), written as PNG.
fn make_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..4usize {
        let (w, h) = (40, 36);
        let mut data = Vec::new();
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let edge = if (x + i * 5) % 20 < 10 { 60.0 } else { 0.0 };
                    data.push(((x * 3 + y * 2 + c * 40 + i * 17) % 180) as f32 + edge);
                }
            }
        }
        write_png(
            &Image::new(w, h, 3, data),
            dir.join(format!("img{i}.png")),
            Depth::Eight,
        )
        .unwrap();
    }
}

fn config_text(data: &Path, out: &Path) -> String {
    format!(
        r#"
name = "resume-test"
[model]
arch = "panet"
# A tiny PANet with its pyramid attention, so the attention's state is covered too.
settings = {{ n_resblocks = 2, n_feats = 8, n_colors = 3, rgb_range = 1 }}
[task]
kind = "denoise"
sigma = [10, 40]
[data]
train = "{}"
patch_size = 16
batch_size = 2
workers = 2
prefetch = 2
holdout = 1
[optim]
loss = "l1"
lr = 1e-3
steps = 8
decay_every = 3
warmup_steps = 2
clip_grad_norm = 0.5
seed = 9
[validation]
every = 3
max_images = 1
[output]
dir = "{}"
log_every = 1
checkpoint_every = 100
snapshots = [4]
"#,
        data.display(),
        out.display()
    )
}

fn losses(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
        .collect()
}

#[test]
fn stop_and_resume_equals_an_uninterrupted_run() {
    let root = std::env::temp_dir().join(format!("pyra-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    make_images(&data);
    let (split, whole) = (root.join("split"), root.join("whole"));

    let run_split = parse_run(&config_text(&data, &split), &[]).unwrap();
    let first = train(
        &run_split,
        &RunOptions {
            until_step: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((first.step, first.stop), (4, Stop::UntilStep));
    // Resuming without --resume would overwrite the run: refused.
    let refused = train(&run_split, &RunOptions::default()).unwrap_err();
    assert!(refused.contains("--resume"), "{refused}");
    let second = train(
        &run_split,
        &RunOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((second.step, second.stop), (8, Stop::Finished));

    let run_whole = parse_run(&config_text(&data, &whole), &[]).unwrap();
    let straight = train(&run_whole, &RunOptions::default()).unwrap();
    assert_eq!(straight.step, 8);

    let a = Checkpoint::load(&split.join("checkpoint_latest.safetensors")).unwrap();
    let b = Checkpoint::load(&whole.join("checkpoint_latest.safetensors")).unwrap();
    assert_eq!(a.step, 8);
    // (assert! rather than assert_eq!: the values would flood the output)
    assert!(a.weights == b.weights, "weights differ after resume");
    assert!(a.adam == b.adam, "optimizer state differs after resume");
    assert_eq!(a.best_psnr, b.best_psnr);
    assert_eq!(losses(&split), losses(&whole), "loss curves differ");
    assert_eq!(losses(&split).len(), 8);
    // The snapshot at step 4 was written by the stopped leg and by the straight run alike,
    // and it is not the final model.
    let read = |dir: &Path, file: &str| StateDict::read(dir.join(file)).unwrap();
    let snapshot = |dir: &Path| read(dir, "model_step4.safetensors");
    assert!(
        snapshot(&split) == snapshot(&whole),
        "step-4 snapshots differ"
    );
    assert!(snapshot(&split) != read(&split, "model_latest.safetensors"));
    assert!(!split.join("model_step8.safetensors").exists());
    // The run moved away from its initial weights and validation ran.
    let validation = std::fs::read_to_string(split.join("validation.csv")).unwrap();
    assert_eq!(validation.lines().count(), 1 + 3, "{validation}");
    for file in [
        "loss.png",
        "validation_psnr.png",
        "model_best.safetensors",
        "config.toml",
    ] {
        assert!(split.join(file).exists(), "{file} missing");
    }

    // Each invocation is a leg in legs.csv, with its steps and the CPU time it spent; the
    // uninterrupted run is one leg.
    let legs = pyra_train::legs::Legs::read(&split).unwrap();
    let spans: Vec<(&str, u64, u64)> = legs
        .rows
        .iter()
        .map(|l| (l.leg.as_str(), l.first_step, l.last_step))
        .collect();
    assert_eq!(spans, [("1", 0, 4), ("2", 4, 8)]);
    for leg in &legs.rows {
        assert!(leg.cpu_s.is_some_and(|c| c > 0.0), "{leg:?}");
        assert!(leg.wall_s > 0.0, "{leg:?}");
    }
    let straight_legs = pyra_train::legs::Legs::read(&whole).unwrap();
    assert_eq!(straight_legs.rows.len(), 1);
    assert_eq!(straight_legs.totals().0, 8);
    assert!(split.join("validation_cpu_hours.png").exists());

    // A different configuration cannot resume this run.
    let other = parse_run(
        &config_text(&data, &split),
        &["optim.lr=2e-3".into(), "optim.steps=10".into()],
    )
    .unwrap();
    let e = train(
        &other,
        &RunOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.contains("different run configuration"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}
