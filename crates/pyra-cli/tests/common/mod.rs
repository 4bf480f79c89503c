//! Helpers shared by the end-to-end tests of the `pyra` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
