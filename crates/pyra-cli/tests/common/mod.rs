//! Helpers shared by the end-to-end tests of the `pyra` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pyra_tasks::image::{write_png, Depth, Image};

/// A file of the committed fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

/// A fresh, empty scratch folder unique to this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pyra-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run `pyra ARGS` to completion.
fn run_pyra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyra"))
        .args(args)
        .output()
        .unwrap()
}

/// Run `pyra ARGS`: (success, stdout, stderr).
pub fn pyra(args: &[&str]) -> (bool, String, String) {
    let out = run_pyra(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path as `&str` for argument lists.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run `pyra ARGS`: (exit code, stderr); `None` when killed by a signal.
pub fn pyra_status(args: &[&str]) -> (Option<i32>, String) {
    let out = run_pyra(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small deterministic training photo (48x40, colour), `i` shifting its texture.
pub fn photo(i: usize) -> Image {
    let (w, h) = (48, 40);
    let mut data = Vec::new();
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let disc = if (x as i32 - 20).pow(2) + (y as i32 - 18).pow(2) < 120 {
                    90.0
                } else {
                    0.0
                };
                data.push(((x * 2 + y * 3 + c * 30 + i * 11) % 140) as f32 + disc);
            }
        }
    }
    Image::new(w, h, 3, data)
}

/// The losses of a 3-step run of a small PANet on three photos, with `extra` arguments.
pub fn run_losses(dir: &std::path::Path, extra: &[&str]) -> Vec<f64> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..3 {
        write_png(&photo(i), data.join(format!("{i}.png")), Depth::Eight).unwrap();
    }
    let out = dir.join("out");
    let data_set = format!("data.train=\"{}\"", s(&data));
    let out_set = format!("output.dir=\"{}\"", s(&out));
    let mut args = vec![
        "train",
        "--preset",
        "pyra-dn25",
        "--quiet",
        "--set",
        "model.settings={ n_resblocks = 2, n_feats = 8 }",
        "--set",
        &data_set,
        "--set",
        &out_set,
        "--set",
        "data.patch_size=24",
        "--set",
        "data.batch_size=3",
        "--set",
        "data.holdout=0",
        "--set",
        "validation.every=0",
        "--set",
        "optim.steps=3",
        "--set",
        "output.log_every=1",
    ];
    args.extend_from_slice(extra);
    let (ok, _, stderr) = pyra(&args);
    assert!(ok, "{stderr}");
    std::fs::read_to_string(out.join("log.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}
