//! `pyra profile`: parameters, FLOPs, time and peak memory of a network or a non-local block
//! at a given input size — the figures of PNEN's cost tables (NLB vs PNB vs APNB on 96x96).
//!
//! Peak memory is the growth of this process's resident set over one forward: the kernel's
//! high-water mark is reset just before (`/proc/self/clear_refs`), read after, and the
//! resident size before is subtracted. `--compare` measures each candidate in a fresh child
//! process, so memory freed by one measurement cannot hide another's.
//!
//! On a GPU, the device's allocator is read too: its reservation after the first forward minus
//! before it. The pools keep freed pages for reuse, so this is the forward's high-water mark of
//! device memory (on lavapipe, device memory is host memory and shows in the resident set as
//! well).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use pyra_core::backend;
use pyra_core::blocks::pyramid_attention::SCORE_CHUNK_BYTES;
use pyra_core::blocks::{NonLocalKind, PyramidAttentionConfig};
use pyra_core::burn::module::Module;
use pyra_core::burn::tensor::{Device, Distribution, Tensor};
use pyra_core::networks::cost::{forward_flops, non_local_layer_flops, pyramid_attention_flops};

use crate::model;
use crate::report::{format_bytes, peak_rss_bytes};

#[derive(Args, Debug)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    /// A network architecture (panet, paedsr, edsr, dncnn, pnen, rdn, memnet, ...).
    #[arg(long, conflicts_with_all = ["weights", "block"])]
    arch: Option<String>,
    /// A checkpoint or bundled model (architecture detected).
    #[arg(long, conflicts_with = "block")]
    weights: Option<PathBuf>,
    /// A non-local block on its own: pnb, nlb, apnb, or pa (PANet's pyramid attention, its
    /// paper settings at --channels, in the formulation the device uses for inference).
    #[arg(long)]
    block: Option<String>,
    /// KEY=VALUE settings of the architecture; for --block: key_channels, value_channels,
    /// scales (PNB's m, n, S).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Feature channels of a --block input.
    #[arg(long, default_value_t = 64)]
    channels: usize,
    /// Input size: `96` or `WxH`.
    #[arg(long, default_value = "96")]
    size: String,
    /// Timed forwards (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Profile each of these blocks (`pnb,nlb,apnb`) in its own process and print one table.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["arch", "weights", "block"])]
    compare: Vec<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// `--block pa` only: run just the first N chunks of the chunked attention (the GPU's
    /// formulation), for a size too slow to run whole on this device (lavapipe computes about
    /// 1 GFLOP/s). Every chunk allocates the same buffers, so the memory is the whole
    /// forward's; the time is the sample's, and the whole forward's is estimated from it.
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Profile {
    name: String,
    input: [usize; 4],
    parameters: usize,
    gflops: f64,
    median_ms: f64,
    /// `(computed, total)` chunks of a sampled attention forward (`--chunks`).
    #[serde(default)]
    chunks: Option<(usize, usize)>,
    peak_extra_bytes: Option<u64>,
    /// GPU only: the device allocator's reservation grown over the first forward.
    #[serde(default)]
    device_peak_bytes: Option<u64>,
}

fn parse_size(size: &str) -> Result<(usize, usize)> {
    let parse = |s: &str| -> Result<usize> {
        let v: usize = s
            .trim()
            .parse()
            .with_context(|| format!("--size `{size}`: expected 96 or WxH"))?;
        if v == 0 {
            bail!("--size must be positive");
        }
        Ok(v)
    };
    match size.split_once(['x', 'X']) {
        Some((w, h)) => Ok((parse(w)?, parse(h)?)),
        None => {
            let s = parse(size)?;
            Ok((s, s))
        }
    }
}

/// The current resident set of this process (VmRSS).
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Reset the kernel's peak-RSS mark to the current RSS (Linux 4.0+); false where impossible.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Learned parameters: every tensor of the state dict but the buffers (BatchNorm running
/// statistics, the frozen mean shifts, pyramid attention's `escape_NaN`).
fn parameters<M: Module>(module: &M) -> usize {
    const BUFFERS: [&str; 5] = [
        "running_mean",
        "running_var",
        "sub_mean.",
        "add_mean.",
        "escape_NaN",
    ];
    pyra_core::weights::state_dict_of(module)
        .tensors
        .iter()
        .filter(|t| !BUFFERS.iter().any(|b| t.name.contains(b)))
        .map(|t| t.shape.iter().product::<usize>())
        .sum()
}

/// What [`measure`] measured.
struct Measured {
    median_ms: f64,
    /// Resident-set growth over the first run.
    peak: Option<u64>,
    /// Device-allocator reservation growth over the first run (GPU devices).
    device_peak: Option<u64>,
}

/// Time `forward` `repeat` times; the first run's memory growth is the peak.
fn measure(repeat: usize, device: &Device, forward: impl Fn()) -> Measured {
    let reserved = || {
        (!backend::is_cpu(device))
            .then(|| device.memory_pool_usage())
            .flatten()
            .map(|u| u.bytes_reserved)
    };
    let device_before = reserved();
    let before = resident_bytes();
    let resettable = reset_peak();
    let mut times = Vec::new();
    let mut device_peak = None;
    for run in 0..repeat.max(1) {
        let t0 = Instant::now();
        forward();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        if run == 0 {
            device_peak = match (device_before, reserved()) {
                (Some(b), Some(a)) => Some(a.saturating_sub(b)),
                _ => None,
            };
        }
    }
    times.sort_by(f64::total_cmp);
    let peak = match (resettable, before, peak_rss_bytes()) {
        (true, Some(b), Some(p)) => Some(p.saturating_sub(b)),
        _ => None,
    };
    Measured {
        median_ms: times[times.len() / 2],
        peak,
        device_peak,
    }
}

fn profile_one(args: &ProfileArgs) -> Result<Profile> {
    let (w, h) = parse_size(&args.size)?;
    let device = backend::default_device();
    if args.block.as_deref() == Some("pa") {
        if !args.settings.is_empty() {
            bail!("--block pa takes no --set (it has the paper's settings at --channels)");
        }
        let block = PyramidAttentionConfig::new()
            .with_channel(args.channels)
            .init(&device);
        if let Some(chunks) = args.chunks {
            if chunks == 0 {
                bail!("--chunks must be at least 1");
            }
            let input = [1, args.channels, h, w];
            let total = std::cell::Cell::new(0);
            let mut row = profile_forward(
                "pyramid attention, chunked".into(),
                input,
                parameters(&block),
                pyramid_attention_flops(&block, h, w),
                args.repeat,
                &device,
                |x| {
                    let (out, all) = block.forward_chunked_sample(x, SCORE_CHUNK_BYTES, chunks);
                    total.set(all);
                    out
                },
            );
            row.chunks = Some((chunks.min(total.get()), total.get()));
            return Ok(row);
        }
        return Ok(profile_forward(
            "pyramid attention".into(),
            [1, args.channels, h, w],
            parameters(&block),
            pyramid_attention_flops(&block, h, w),
            args.repeat,
            &device,
            |x| block.forward(x),
        ));
    }
    if args.chunks.is_some() {
        bail!("--chunks samples the pyramid attention: it needs --block pa");
    }
    if let Some(block) = &args.block {
        let kind: NonLocalKind = block.parse().map_err(anyhow::Error::msg)?;
        let settings = model::parse_settings(&args.settings)?;
        let (mut m, mut n, mut s) = (64, 32, 3);
        for (key, value) in &settings {
            let v: usize = value
                .parse()
                .with_context(|| format!("`{key}={value}` needs a whole number"))?;
            match key.as_str() {
                "key_channels" => m = v,
                "value_channels" => n = v,
                "scales" => s = v,
                _ => bail!("`{key}` is not a block setting (key_channels, value_channels, scales)"),
            }
        }
        let layer = kind.init(args.channels, m, n, s, &device);
        let name = match kind {
            NonLocalKind::Pnb => format!("PNB (m={m}, n={n}, S={s})"),
            other => other.to_string().to_uppercase(),
        };
        return Ok(profile_forward(
            name,
            [1, args.channels, h, w],
            parameters(&layer),
            non_local_layer_flops(&layer, h, w),
            args.repeat,
            &device,
            |x| layer.forward(x),
        ));
    }
    let (config, network, name) = match (&args.arch, &args.weights) {
        (Some(arch), None) => {
            let (_, config) = model::config(arch, &args.settings)?;
            let network = config.init(&device);
            (config, network, arch.clone())
        }
        (None, Some(weights)) => {
            let (config, network) = model::open(weights, None, &args.settings, &device)?;
            (config, network, weights.display().to_string())
        }
        _ => bail!("give --arch NAME, --weights FILE, --block pnb|nlb|apnb|pa or --compare"),
    };
    Ok(profile_forward(
        name,
        [1, config.input_channels(), h, w],
        parameters(&network),
        forward_flops(&network, h, w),
        args.repeat,
        &device,
        |x| network.forward(x),
    ))
}

/// The profile of `forward` on a uniform random input of shape `input`.
fn profile_forward(
    name: String,
    input: [usize; 4],
    parameters: usize,
    flops: u64,
    repeat: usize,
    device: &Device,
    forward: impl Fn(Tensor<4>) -> Tensor<4>,
) -> Profile {
    let x = Tensor::<4>::random(input, Distribution::Uniform(0.0, 1.0), device);
    let measured = measure(repeat, device, || {
        let _ = forward(x.clone()).into_data();
    });
    Profile {
        name,
        input,
        parameters,
        gflops: flops as f64 / 1e9,
        median_ms: measured.median_ms,
        chunks: None,
        peak_extra_bytes: measured.peak,
        device_peak_bytes: measured.device_peak,
    }
}

fn print_table(rows: &[Profile]) {
    let device = rows.iter().any(|r| r.device_peak_bytes.is_some());
    println!(
        "| module | input | parameters | GFLOPs | time (median) | peak memory over the input |{}",
        if device {
            " device memory reserved |"
        } else {
            ""
        }
    );
    println!(
        "|---|---|---:|---:|---:|---:|{}",
        if device { "---:|" } else { "" }
    );
    for r in rows {
        let time = match r.chunks {
            Some((done, total)) if done < total => format!(
                "{:.1} ms for {done} of {total} chunks (whole: about {:.0} s)",
                r.median_ms,
                r.median_ms * total as f64 / done as f64 / 1e3
            ),
            _ => format!("{:.1} ms", r.median_ms),
        };
        let device_cell = match (device, r.device_peak_bytes) {
            (false, _) => String::new(),
            (true, Some(b)) => format!(" {} |", format_bytes(b)),
            (true, None) => " n/a |".into(),
        };
        println!(
            "| {} | {}x{}x{}x{} | {} | {:.3} | {time} | {} |{device_cell}",
            r.name,
            r.input[0],
            r.input[1],
            r.input[2],
            r.input[3],
            r.parameters,
            r.gflops,
            r.peak_extra_bytes.map_or("n/a".to_string(), format_bytes)
        );
    }
}

pub fn run(args: ProfileArgs) -> Result<()> {
    args.device.select()?;
    if args.compare.is_empty() {
        let row = profile_one(&args)?;
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            print_table(&[row]);
        }
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find the pyra executable")?;
    let mut rows = Vec::new();
    for block in &args.compare {
        let mut command = std::process::Command::new(&exe);
        command.args([
            "profile",
            "--json",
            "--block",
            block,
            "--channels",
            &args.channels.to_string(),
            "--size",
            &args.size,
            "--repeat",
            &args.repeat.to_string(),
        ]);
        for s in &args.settings {
            command.args(["--set", s]);
        }
        let out = command.output().context("cannot run the profiling child")?;
        if !out.status.success() {
            bail!(
                "profiling {block} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let row: Profile = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("profiling {block}: unreadable child output"))?;
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        print_table(&rows);
    }
    Ok(())
}
