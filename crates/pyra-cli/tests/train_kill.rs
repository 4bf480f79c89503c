//! `kill -9` in the middle of `pyra train` loses at most the steps since the last checkpoint;
//! Ctrl-C (SIGINT) writes a checkpoint of the step it stopped at and exits cleanly; either way
//! `--resume` then reaches bit for bit the weights and optimizer state of an uninterrupted
//! run of the same length (a PANet with pyramid attention, so the fused attention kernel's
//! backward is part of what must be deterministic).

mod common;

use common::{pyra, s, scratch};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pyra_tasks::image::{write_png, Depth, Image};
use pyra_train::checkpoint::Checkpoint;

const STEPS: u64 = 24;
const CHECKPOINT_EVERY: u64 = 4;

fn write_config(dir: &Path, data: &Path) -> std::path::PathBuf {
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "kill"
[model]
arch = "panet"
settings = {{ n_resblocks = 2, n_feats = 8, attention = true }}
[task]
kind = "denoise"
sigma = 25
[data]
train = "{}"
patch_size = 32
batch_size = 4
[optim]
loss = "l1"
lr = 1e-3
steps = {STEPS}
seed = 7
[output]
dir = "{}"
log_every = 1
checkpoint_every = {CHECKPOINT_EVERY}
"#,
            s(data),
            s(&dir.join("out"))
        ),
    )
    .unwrap();
    config
}

fn logged_steps(out: &Path) -> usize {
    std::fs::read_to_string(out.join("log.csv"))
        .map(|t| t.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

#[test]
fn sigkill_or_ctrl_c_then_resume_equals_an_uninterrupted_run() {
    let root = scratch("kill");
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..3usize {
        let (w, h) = (48, 44);
        let values: Vec<f32> = (0..3 * w * h)
            .map(|k| {
                let (c, y, x) = (k / (w * h), (k / w) % h, k % w);
                (((x * 5 + y * 3 + c * 40 + i * 23) % 160) + if (x + y) % 17 < 8 { 70 } else { 0 })
                    as f32
            })
            .collect();
        write_png(
            &Image::new(w, h, 3, values),
            data.join(format!("{i}.png")),
            Depth::Eight,
        )
        .unwrap();
    }

    // The uninterrupted run.
    let straight = root.join("straight");
    std::fs::create_dir_all(&straight).unwrap();
    let config = write_config(&straight, &data);
    let (ok, _, stderr) = pyra(&["train", "--config", s(&config), "--quiet"]);
    assert!(ok, "{stderr}");

    // The killed run: SIGKILL once a few checkpoints exist and the run is between two of them.
    let killed = root.join("killed");
    let (mut child, out, config) = start_and_wait_between_checkpoints(&killed, &data);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    let logged = logged_steps(&out) as u64;
    assert!(logged < STEPS, "killed after the end ({logged} steps)");
    let saved = Checkpoint::load(&out.join("checkpoint_latest.safetensors"))
        .expect("a complete checkpoint survives the kill");
    assert!(
        saved.step + CHECKPOINT_EVERY >= logged && saved.step <= logged,
        "checkpoint at step {} after {logged} logged steps",
        saved.step
    );
    resume_and_compare(&config, &out, &straight);

    // The interrupted run: SIGINT between two checkpoints; it saves where it stopped.
    let interrupted = root.join("interrupted");
    let (child, out, config) = start_and_wait_between_checkpoints(&interrupted, &data);
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Ctrl-C: {:?}\n{stdout}",
        output.status
    );
    assert!(stdout.contains("(interrupted)"), "{stdout}");
    let logged = logged_steps(&out) as u64;
    let saved = Checkpoint::load(&out.join("checkpoint_latest.safetensors")).unwrap();
    assert_eq!(saved.step, logged, "Ctrl-C lost steps");
    assert!(saved.step < STEPS, "interrupted after the end");
    resume_and_compare(&config, &out, &straight);

    let _ = std::fs::remove_dir_all(&root);
}

/// Start the run in `dir` and return once a few checkpoints exist and it is between two.
fn start_and_wait_between_checkpoints(
    dir: &Path,
    data: &Path,
) -> (Child, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let config = write_config(dir, data);
    let out = dir.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pyra"))
        .args(["train", "--config", s(&config), "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let done = logged_steps(&out);
        if done > 2 * CHECKPOINT_EVERY as usize && !done.is_multiple_of(CHECKPOINT_EVERY as usize) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be stopped"
        );
        assert!(started.elapsed() < Duration::from_secs(600), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, out, config)
}

/// `--resume` the run of `config` to the end; its weights and optimizer state must equal
/// those of the uninterrupted run in `straight`.
fn resume_and_compare(config: &Path, out: &Path, straight: &Path) {
    let (ok, stdout, stderr) = pyra(&["train", "--config", s(config), "--resume", "--quiet"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("step {STEPS}/{STEPS} (finished)")),
        "{stdout}"
    );
    let a = Checkpoint::load(&straight.join("out/checkpoint_latest.safetensors")).unwrap();
    let b = Checkpoint::load(&out.join("checkpoint_latest.safetensors")).unwrap();
    assert_eq!((a.step, b.step), (STEPS, STEPS));
    assert_eq!(a.weights, b.weights, "weights differ after stop + resume");
    assert_eq!(
        a.adam, b.adam,
        "optimizer state differs after stop + resume"
    );
}
