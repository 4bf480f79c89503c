//! `pyra bench-speed`: the performance workloads, each timed in its own child process, with
//! PyTorch's numbers beside them: either run here, workload by workload and alternating with
//! Pyra's (`--torch PYTHON`, so that a machine's drift hits both sides alike), or read from a
//! JSON file that `tools/bench_reference.py` wrote on the same machine (`--reference`).
//!
//! Each workload builds its model and input, runs `--warmup` untimed times, then `--repeat`
//! timed times; the median time is reported, and two memory figures: the process's peak resident set (VmHWM) and its growth
//! over the resident set after setup (the high-water mark is reset first through
//! `/proc/self/clear_refs`). The reference script measures the same way, so the ratios compare
//! like with like.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use pyra_core::backend;
use pyra_core::burn::nn::conv::Conv2dConfig;
use pyra_core::burn::nn::PaddingConfig2d;
use pyra_core::burn::tensor::{Distribution, Tensor};
use pyra_core::ops::fused_conv::conv2d;
use pyra_core::ops::isa;
use pyra_infer::{forward_chop, ChopOptions};
use pyra_train::step::Trainer;
use serde::{Deserialize, Serialize};

use crate::model;
use crate::profile::resident_bytes;
use crate::report::{format_bytes, peak_rss_bytes};

/// Name, description, and whether it runs by default.
const WORKLOADS: [(&str, &str, bool); 10] = [
    ("pa-64", "pyramid attention forward, [1,64,64,64]", true),
    ("pa-96", "pyramid attention forward, [1,64,96,96]", true),
    ("pa-128", "pyramid attention forward, [1,64,128,128]", true),
    (
        "pa-256",
        "pyramid attention forward, [1,64,256,256], whole image",
        false,
    ),
    ("panet80-96", "PANet-80 forward, 96x96 colour, whole", true),
    (
        "panet80-256-chop",
        "PANet-80 forward, 256x256 colour, official chop",
        true,
    ),
    ("paedsr-x2-48", "PA-EDSR x2 forward, 48x48 input", true),
    (
        "panets-train",
        "PANet-S training step, 16 x 3x48x48, L1 + Adam",
        true,
    ),
    ("conv3x3-256", "3x3 conv 64->64, [1,64,256,256]", true),
    (
        "conv3x3-train",
        "3x3 conv 64->64 forward + backward, [16,64,48,48]",
        true,
    ),
];

#[derive(Args, Debug)]
pub struct BenchSpeedArgs {
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    /// Workloads to run, comma-separated (default: all but pa-256, which takes minutes).
    /// `all` runs every one.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Timed runs per workload (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Untimed runs before (first-call setup of kernels and allocators).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// JSON written by `tools/bench_reference.py` on this machine: adds PyTorch's columns and
    /// the ratios.
    #[arg(long, conflicts_with = "torch")]
    reference: Option<PathBuf>,
    /// Run the PyTorch reference here with this Python (which must have torch), alternating
    /// with Pyra workload by workload: Pyra then PyTorch in odd rounds, PyTorch then Pyra in
    /// even ones.
    #[arg(long, value_name = "PYTHON")]
    torch: Option<PathBuf>,
    /// The reference script (default: tools/bench_reference.py of the source tree).
    #[arg(long, value_name = "FILE")]
    torch_script: Option<PathBuf>,
    /// Rounds of the alternation with --torch; each side's time is the median of all its
    /// timed runs.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Threads of each side (RAYON_NUM_THREADS for Pyra, torch.set_num_threads for PyTorch);
    /// default: rayon's choice (all cores) and the same number for PyTorch.
    #[arg(long)]
    threads: Option<usize>,
    /// Print the results as JSON (the reference script's format) instead of the table.
    #[arg(long)]
    json: bool,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
    /// Run one workload in this process (what the parent runs in each child).
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// One workload's measurement (also the reference script's JSON format).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub name: String,
    pub median_ms: f64,
    pub times_ms: Vec<f64>,
    /// Peak resident set of the whole process.
    pub peak_rss_bytes: Option<u64>,
    /// Peak resident set over the resident set after setup.
    pub peak_extra_bytes: Option<u64>,
    /// Floating-point operations of one run, where counted (the convolutions and the
    /// attention's useful work).
    #[serde(default)]
    pub flops: Option<f64>,
    /// The instruction set the side's kernels used (Pyra: its own kernels' and gemm's;
    /// PyTorch: `torch.backends.cpu.get_cpu_capability()`).
    #[serde(default)]
    pub isa: Option<String>,
    /// Threads the side ran with.
    #[serde(default)]
    pub threads: Option<usize>,
}

fn measure(
    name: &str,
    (warmup, repeat): (usize, usize),
    flops: Option<f64>,
    mut run: impl FnMut(),
) -> Measurement {
    for _ in 0..warmup {
        run();
    }
    let before = resident_bytes();
    let resettable = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut times_ms = Vec::new();
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        run();
        times_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mut sorted = times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let peak = peak_rss_bytes();
    Measurement {
        name: name.to_string(),
        median_ms: sorted[sorted.len() / 2],
        times_ms,
        peak_rss_bytes: peak,
        isa: Some(pyra_isa()),
        threads: Some(rayon_threads()),
        peak_extra_bytes: match (resettable, before, peak) {
            (true, Some(b), Some(p)) => Some(p.saturating_sub(b)),
            _ => None,
        },
        flops,
    }
}

fn network(arch: &str, settings: &[&str]) -> Result<pyra_core::networks::AnyNetwork> {
    let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
    let (_, config) = model::config(arch, &settings)?;
    Ok(config.init(&backend::default_device()))
}

/// Run one workload here.
fn run_workload(name: &str, repeat: (usize, usize)) -> Result<Measurement> {
    let device = backend::default_device();
    let uniform = Distribution::Uniform(0.0, 1.0);
    let normal = Distribution::Normal(0.0, 1.0);
    let attention = |size: usize| -> Result<Measurement> {
        let block = network("pyramid-attention", &["channel=64"])?;
        let x = Tensor::<4>::random([1, 64, size, size], normal, &device);
        Ok(measure(name, repeat, Some(attention_flops(size)), || {
            let _ = block.forward(x.clone()).into_data();
        }))
    };
    match name {
        "pa-64" => attention(64),
        "pa-96" => attention(96),
        "pa-128" => attention(128),
        "pa-256" => attention(256),
        "panet80-96" | "panet80-256-chop" => {
            let net = network("panet", &["n_resblocks=80", "n_feats=64"])?;
            let size = if name == "panet80-96" { 96 } else { 256 };
            let x = Tensor::<4>::random([1, 3, size, size], uniform, &device);
            let chop = name.ends_with("chop");
            Ok(measure(name, repeat, None, || {
                let y = if chop {
                    forward_chop(x.clone(), 1, ChopOptions::official(1), &|t| net.forward(t))
                } else {
                    net.forward(x.clone())
                };
                let _ = y.into_data();
            }))
        }
        "paedsr-x2-48" => {
            let net = network(
                "paedsr",
                &["n_resblocks=32", "n_feats=256", "res_scale=0.1", "scale=2"],
            )?;
            let x = Tensor::<4>::random([1, 3, 48, 48], uniform, &device);
            Ok(measure(name, repeat, None, || {
                let _ = net.forward(x.clone()).into_data();
            }))
        }
        "panets-train" => {
            let train_device = backend::with_autodiff(device.clone());
            let settings = ["n_resblocks=8".to_string(), "n_feats=64".to_string()];
            let (_, config) = model::config("panet", &settings)?;
            let mut trainer =
                Trainer::new(config.init(&train_device), pyra_train::config::LossKind::L1);
            let input = Tensor::<4>::random([16, 3, 48, 48], uniform, &train_device);
            let target = Tensor::<4>::random([16, 3, 48, 48], uniform, &train_device);
            let mut failure = None;
            let m = measure(name, repeat, None, || {
                if let Err(e) = trainer.train_step(input.clone(), target.clone(), 1e-4) {
                    failure = Some(e);
                }
            });
            match failure {
                Some(e) => bail!("training step failed: {e}"),
                None => Ok(m),
            }
        }
        "conv3x3-256" => {
            let conv = Conv2dConfig::new([64, 64], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device);
            let x = Tensor::<4>::random([1, 64, 256, 256], normal, &device);
            let flops = 2.0 * 64.0 * 64.0 * 9.0 * 256.0 * 256.0;
            Ok(measure(name, repeat, Some(flops), || {
                let _ = conv2d(&conv, x.clone()).into_data();
            }))
        }
        "conv3x3-train" => {
            let train_device = backend::with_autodiff(device.clone());
            let conv = Conv2dConfig::new([64, 64], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&train_device);
            let x = Tensor::<4>::random([16, 64, 48, 48], normal, &train_device).require_grad();
            let dy = Tensor::<4>::random([16, 64, 48, 48], normal, &train_device);
            // Forward, input gradient and weight gradient: three convolutions' worth.
            let flops = 3.0 * 2.0 * 64.0 * 64.0 * 9.0 * 16.0 * 48.0 * 48.0;
            Ok(measure(name, repeat, Some(flops), || {
                let grads = (conv2d(&conv, x.clone()) * dy.clone()).sum().backward();
                let _ = conv.weight.grad(&grads).map(|g| g.into_data());
                let _ = x.grad(&grads).map(|g| g.into_data());
            }))
        }
        other => bail!(
            "unknown workload `{other}`; the workloads are: {}",
            WORKLOADS.map(|w| w.0).join(", ")
        ),
    }
}

fn selected(only: &[String]) -> Result<Vec<&'static str>> {
    if only.is_empty() {
        return Ok(WORKLOADS.iter().filter(|w| w.2).map(|w| w.0).collect());
    }
    if only.iter().any(|o| o == "all") {
        return Ok(WORKLOADS.map(|w| w.0).to_vec());
    }
    only.iter()
        .map(|o| {
            WORKLOADS
                .iter()
                .find(|w| w.0 == o.as_str())
                .map(|w| w.0)
                .with_context(|| {
                    format!(
                        "unknown workload `{o}`; the workloads are: {}",
                        WORKLOADS.map(|w| w.0).join(", ")
                    )
                })
        })
        .collect()
}

fn read_reference(path: &PathBuf) -> Result<Vec<Measurement>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the reference results {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not the JSON that tools/bench_reference.py writes",
            path.display()
        )
    })
}

fn ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1e3)
    } else {
        format!("{v:.1} ms")
    }
}

fn print_table(rows: &[Measurement], reference: &[Measurement], peak_gflops: Option<f64>) {
    let bytes = |b: Option<u64>| b.map_or("n/a".to_string(), format_bytes);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    };
    if reference.is_empty() {
        println!("| workload | median time | peak RSS | peak RSS over setup |");
        println!("|---|---:|---:|---:|");
        for r in rows {
            println!(
                "| {} | {} | {} | {} |",
                r.name,
                ms(r.median_ms),
                bytes(r.peak_rss_bytes),
                bytes(r.peak_extra_bytes)
            );
        }
    } else {
        println!(
            "| workload | Pyra time | PyTorch time | time ratio | Pyra peak RSS | PyTorch peak RSS | RSS ratio | Pyra over setup | PyTorch over setup | ratio |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            let theirs = reference.iter().find(|t| t.name == r.name);
            let f = |m: Option<u64>| m.map(|v| v as f64);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                ms(r.median_ms),
                theirs.map_or("-".into(), |t| ms(t.median_ms)),
                ratio(Some(r.median_ms), theirs.map(|t| t.median_ms)),
                bytes(r.peak_rss_bytes),
                theirs.map_or("-".into(), |t| bytes(t.peak_rss_bytes)),
                ratio(
                    f(r.peak_rss_bytes),
                    theirs.and_then(|t| f(t.peak_rss_bytes))
                ),
                bytes(r.peak_extra_bytes),
                theirs.map_or("-".into(), |t| bytes(t.peak_extra_bytes)),
                ratio(
                    f(r.peak_extra_bytes),
                    theirs.and_then(|t| f(t.peak_extra_bytes))
                ),
            );
        }
    }
    let of_peak = |gflops: f64| match peak_gflops {
        Some(peak) => format!(", {:.0}% of peak", 100.0 * gflops / peak),
        None => String::new(),
    };
    println!();
    for r in rows.iter().filter(|r| r.flops.is_some()) {
        let flops = r.flops.unwrap_or(0.0);
        let gflops = flops / r.median_ms / 1e6;
        println!(
            "{}: {:.3} GFLOP, Pyra {gflops:.1} GFLOP/s{}",
            r.name,
            flops / 1e9,
            of_peak(gflops)
        );
        if let Some(t) = reference.iter().find(|t| t.name == r.name) {
            let theirs = flops / t.median_ms / 1e6;
            println!("{}: PyTorch {theirs:.1} GFLOP/s{}", r.name, of_peak(theirs));
        }
    }
}

/// Pyra's kernels' instruction set: its own (`ops::isa`) and the GEMM's (`gemm` picks its
/// AVX-512 microkernels wherever the CPU has AVX-512F).
fn pyra_isa() -> String {
    #[cfg(target_arch = "x86_64")]
    let gemm = if std::arch::is_x86_feature_detected!("avx512f") {
        "avx512f"
    } else if std::arch::is_x86_feature_detected!("fma") {
        "fma"
    } else {
        "scalar"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let gemm = "native";
    format!("own kernels {}, gemm {gemm}", isa::isa().name())
}

fn rayon_threads() -> usize {
    pyra_core::rayon_threads()
}

/// The useful FLOPs of the streaming attention at `[1, 64, size, size]` (reduction 2, 3x3
/// blocks, 5 levels): pixel products `2·C'·HW·L`, pasting `2·C·HW·L`, and the two 9-term
/// diagonal sums `2·9·HW·L` (`L`: blocks of all levels).
fn attention_flops(size: usize) -> f64 {
    let levels: usize = [1.0f64, 0.9, 0.8, 0.7, 0.6]
        .iter()
        .map(|s| ((size as f64 * s).floor() as usize).pow(2))
        .sum();
    let pixels = (size * size) as f64;
    pixels * levels as f64 * (2.0 * 32.0 + 2.0 * 64.0 + 2.0 * 9.0)
}

/// The CPU's model name, family/model and the clock /proc/cpuinfo reports.
fn cpu_description() -> (String, Option<f64>) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let family = field("cpu family").unwrap_or_default();
    let number = field("model").unwrap_or_default();
    let mhz = field("cpu MHz").and_then(|v| v.parse::<f64>().ok());
    (format!("{model} (family {family}, model {number})"), mhz)
}

/// Runs one workload in a child process of this executable.
fn run_pyra(exe: &std::path::Path, name: &str, args: &BenchSpeedArgs) -> Result<Measurement> {
    let mut command = std::process::Command::new(exe);
    command
        .args(["bench-speed", "--child", name, "--repeat"])
        .arg(args.repeat.to_string())
        .arg("--warmup")
        .arg(args.warmup.to_string())
        .args(args.device.to_args());
    if let Some(threads) = args.threads {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    let out = command.output().context("cannot run the benchmark child")?;
    if !out.status.success() {
        bail!(
            "workload {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("workload {name}: unreadable child output"))
}

/// Runs one workload of the PyTorch reference script with `python`.
fn run_torch(
    python: &std::path::Path,
    script: &std::path::Path,
    name: &str,
    threads: usize,
    args: &BenchSpeedArgs,
) -> Result<Measurement> {
    let out = std::process::Command::new(python)
        .arg(script)
        .args(["--child", name, "--repeat"])
        .arg(args.repeat.to_string())
        .arg("--warmup")
        .arg(args.warmup.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "PyTorch workload {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .with_context(|| format!("PyTorch workload {name}: unreadable output"))
}

/// All timed runs of one side over the rounds, as one measurement (median of every run, the
/// largest peaks).
fn merge(runs: Vec<Measurement>) -> Measurement {
    let mut merged = runs[0].clone();
    merged.times_ms = runs.iter().flat_map(|r| r.times_ms.clone()).collect();
    let mut sorted = merged.times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    merged.median_ms = sorted[sorted.len() / 2];
    merged.peak_rss_bytes = runs.iter().filter_map(|r| r.peak_rss_bytes).max();
    merged.peak_extra_bytes = runs.iter().filter_map(|r| r.peak_extra_bytes).max();
    merged
}

fn find_script(args: &BenchSpeedArgs) -> Result<PathBuf> {
    if let Some(path) = &args.torch_script {
        return Ok(path.clone());
    }
    let here = PathBuf::from("tools/bench_reference.py");
    if here.exists() {
        return Ok(here);
    }
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bench_reference.py");
    if source.exists() {
        return Ok(source);
    }
    bail!("cannot find tools/bench_reference.py; pass --torch-script FILE")
}

pub fn run(args: BenchSpeedArgs) -> Result<()> {
    if args.list {
        for (name, what, default) in WORKLOADS {
            let note = if default { "" } else { " (only on request)" };
            println!("{name:18} {what}{note}");
        }
        return Ok(());
    }
    if args.child.is_none() {
        args.device.select()?;
    }
    if let Some(name) = &args.child {
        // The parent printed the device; the child only chooses it.
        if let Some(choice) = args.device.device {
            pyra_core::backend::select(choice).map_err(anyhow::Error::msg)?;
        }
        let m = run_workload(name, (args.warmup, args.repeat))?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    let names = selected(&args.only)?;
    let exe = std::env::current_exe().context("cannot find the pyra executable")?;
    let threads = args.threads.unwrap_or_else(rayon_threads);
    let (rows, reference) = match &args.torch {
        None => {
            let reference = match &args.reference {
                Some(path) => read_reference(path)?,
                None => Vec::new(),
            };
            let mut rows = Vec::new();
            for name in &names {
                eprintln!("bench-speed: {name} ...");
                let m = run_pyra(&exe, name, &args)?;
                eprintln!("bench-speed: {name}: {}", ms(m.median_ms));
                rows.push(m);
            }
            (rows, reference)
        }
        Some(python) => {
            let script = find_script(&args)?;
            let (mut rows, mut reference) = (Vec::new(), Vec::new());
            for name in &names {
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                for round in 0..args.rounds.max(1) {
                    let pyra_first = round % 2 == 0;
                    for side in 0..2 {
                        if (side == 0) == pyra_first {
                            let m = run_pyra(&exe, name, &args)?;
                            eprintln!(
                                "bench-speed: {name} round {}: Pyra {}",
                                round + 1,
                                ms(m.median_ms)
                            );
                            ours.push(m);
                        } else {
                            let m = run_torch(python, &script, name, threads, &args)?;
                            eprintln!(
                                "bench-speed: {name} round {}: PyTorch {}",
                                round + 1,
                                ms(m.median_ms)
                            );
                            theirs.push(m);
                        }
                    }
                }
                rows.push(merge(ours));
                reference.push(merge(theirs));
            }
            (rows, reference)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let (cpu, mhz) = cpu_description();
    println!("CPU: {cpu}, {threads} threads");
    let detected = isa::detected();
    let peak = mhz.map(|mhz| threads as f64 * mhz / 1e3 * detected.flop_per_cycle());
    match peak {
        Some(peak) => println!(
            "fp32 peak: {threads} cores x {:.2} GHz (reported clock) x {} FLOP/cycle ({}, 2 FMA units) = {peak:.0} GFLOP/s",
            mhz.unwrap_or(0.0) / 1e3,
            detected.flop_per_cycle(),
            detected.name()
        ),
        None => println!("fp32 peak: unknown (no clock in /proc/cpuinfo)"),
    }
    if let Some(r) = rows.first() {
        println!("Pyra: {}", r.isa.as_deref().unwrap_or("?"));
    }
    if let Some(t) = reference.first() {
        println!("PyTorch: {}", t.isa.as_deref().unwrap_or("?"));
    }
    println!();
    print_table(&rows, &reference, peak);
    Ok(())
}
