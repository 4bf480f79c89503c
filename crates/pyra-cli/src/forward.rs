//! `pyra forward`: run one PANet-family module on a tensor stored in a safetensors file and
//! write the result, so Pyra can be compared with PyTorch tensor for tensor.
//!
//! Contract (also in the README):
//! `pyra forward --arch pyramid-attention|panet|paedsr|edsr --set KEY=VALUE ...
//!  --weights FILE(.pt|.safetensors) [--ignore-extra-keys] --input FILE.safetensors
//!  [--input-key input] --output FILE.safetensors`
//! KEYs are the official constructor arguments plus `interp=legacy|modern`; the result is
//! written under the key `output`. With no arguments at all it runs the built-in sample: the
//! official PANet (2 res-blocks) checkpoint on its bundled input, compared with the output the
//! official code computed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use pyra_core::backend;
use pyra_core::burn::tensor::{Tensor, TensorData};
use pyra_core::networks::{Arch, ArchConfig};
use pyra_core::ops::bicubic::scaled_len;
use pyra_core::weights::{load_state_dict, save_safetensors, LoadOptions, NamedTensor, StateDict};

use crate::model::parse_settings;
use crate::report::{format_bytes, peak_rss_bytes};

/// The official PANet-2 checkpoint and its reference tensors, compiled into the binary.
const SAMPLE_WEIGHTS: &[u8] = include_bytes!("../../../fixtures/panet/panet_small_model_best.pt");
const SAMPLE_TENSORS: &[u8] = include_bytes!("../../../fixtures/panet/panet_small.safetensors");

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    /// pyramid-attention, panet, paedsr or edsr.
    #[arg(long)]
    arch: Option<String>,
    /// Official constructor argument, e.g. `n_resblocks=80`, `channel=16`, `interp=modern`
    /// (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Weights: an official `model_best.pt` or a safetensors file with the same keys. Without
    /// it the module keeps PyTorch-style random initialisation (see --seed).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Accept keys in the weights file that the module does not have (for example a fixture
    /// file that also holds inputs and outputs). Without it, extra keys are an error.
    #[arg(long)]
    ignore_extra_keys: bool,
    /// safetensors file holding the input tensor [N, C, H, W].
    #[arg(long)]
    input: Option<PathBuf>,
    /// Key of the input tensor in --input.
    #[arg(long, default_value = "input")]
    input_key: String,
    /// Where to write the result (safetensors, key `output`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Also compare the result with this tensor of the --input file and print the difference.
    #[arg(long, value_name = "KEY")]
    reference_key: Option<String>,
    /// Seed of the random initialisation when no --weights are given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

struct Job {
    arch: Arch,
    settings: Vec<(String, String)>,
    weights: Option<(StateDict, String)>,
    tensors: StateDict,
    tensors_origin: String,
}

fn sample_job() -> Result<Job> {
    println!(
        "pyra forward: no arguments, running the built-in sample: the official PANet checkpoint \
         (2 res-blocks, PyTorch zip format) on its bundled 24x20 input, interpolation `legacy`, \
         compared with the official PyTorch output"
    );
    Ok(Job {
        arch: Arch::PaNet,
        settings: vec![
            ("n_resblocks".into(), "2".into()),
            ("interp".into(), "legacy".into()),
        ],
        weights: Some((
            StateDict::from_bytes(SAMPLE_WEIGHTS, "built-in panet_small_model_best.pt")?,
            "built-in panet_small_model_best.pt".into(),
        )),
        tensors: StateDict::from_bytes(SAMPLE_TENSORS, "built-in panet_small.safetensors")?,
        tensors_origin: "built-in panet_small.safetensors".into(),
    })
}

pub fn run(args: ForwardArgs) -> Result<()> {
    args.device.select()?;
    let sample = args.arch.is_none()
        && args.input.is_none()
        && args.weights.is_none()
        && args.settings.is_empty();
    let mut reference_key = args.reference_key.clone();
    let job = if sample {
        reference_key.get_or_insert_with(|| "output_legacy".into());
        sample_job()?
    } else {
        let (Some(arch), Some(input)) = (&args.arch, &args.input) else {
            bail!(
                "--arch and --input are required (or give no arguments to run the built-in sample)"
            );
        };
        let weights = match &args.weights {
            Some(path) => Some((StateDict::read(path)?, path.display().to_string())),
            None => None,
        };
        Job {
            arch: arch.parse().map_err(anyhow::Error::msg)?,
            settings: parse_settings(&args.settings)?,
            weights,
            tensors: StateDict::read(input)?,
            tensors_origin: input.display().to_string(),
        }
    };

    let config = ArchConfig::from_settings(job.arch, &job.settings).map_err(anyhow::Error::msg)?;
    let input = job.tensors.get(&args.input_key).with_context(|| {
        format!(
            "{} has no tensor `{}` (use --input-key)",
            job.tensors_origin, args.input_key
        )
    })?;
    let [n, c, h, w] = input.shape[..] else {
        bail!(
            "input `{}` must be [N, C, H, W], got shape {:?}",
            args.input_key,
            input.shape
        );
    };
    if c != config.input_channels() {
        bail!(
            "input `{}` has {c} channels but this {:?} expects {}",
            args.input_key,
            job.arch,
            config.input_channels()
        );
    }
    let values = input.to_f32();
    if values.iter().any(|v| !v.is_finite()) {
        bail!("input `{}` contains NaN or infinite values", args.input_key);
    }
    check_pyramid_fits(&config, h, w)?;

    let device = backend::default_device();
    device.seed(args.seed);
    let mut model = config.init(&device);
    match &job.weights {
        Some((dict, origin)) => {
            let options = LoadOptions {
                allow_extra: args.ignore_extra_keys,
                ..Default::default()
            };
            let (loaded, report) = load_state_dict(model, dict, &options)
                .with_context(|| format!("cannot load {origin}"))?;
            model = loaded;
            println!(
                "weights: {origin}: {} tensors ({} distinct parameters{}), dtype {}",
                dict.len(),
                report.parameters,
                if report.aliases.is_empty() {
                    String::new()
                } else {
                    format!(", {} aliased groups", report.aliases.len())
                },
                dict.tensors.first().map(|t| t.source_dtype).unwrap_or("-"),
            );
        }
        None => println!(
            "weights: none given, random initialisation (seed {})",
            args.seed
        ),
    }

    let x = Tensor::<4>::from_data(TensorData::new(values, [n, c, h, w]), &device);
    let start = Instant::now();
    let y = model.forward(x);
    let data = y.into_data().convert::<f32>();
    let elapsed = start.elapsed();
    let shape = data.shape().to_vec();
    let out: Vec<f32> = data.try_into_vec::<f32>().expect("f32 output");
    let (lo, hi) = out
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    println!(
        "{:?} {:?} -> output {:?} in range [{lo:.4}, {hi:.4}], forward {:.3} s, peak RSS {}",
        job.arch,
        input.shape,
        shape,
        elapsed.as_secs_f64(),
        peak_rss_bytes()
            .map(format_bytes)
            .unwrap_or_else(|| "n/a".into())
    );

    if let Some(key) = &reference_key {
        let reference = job.tensors.get(key).with_context(|| {
            format!(
                "{} has no tensor `{key}` to compare with",
                job.tensors_origin
            )
        })?;
        if reference.shape != shape {
            bail!(
                "reference `{key}` has shape {:?}, the output {:?}",
                reference.shape,
                shape
            );
        }
        let reference = reference.to_f32();
        let max_ref = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max_diff = out
            .iter()
            .zip(&reference)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "vs `{key}`: max |difference| {max_diff:.3e}, relative to max |reference| {:.3e}",
            max_diff / max_ref.max(1e-30)
        );
    }

    if let Some(path) = &args.output {
        let mut dict = StateDict::default();
        dict.push(NamedTensor::f32("output", shape, out));
        let mut metadata = HashMap::new();
        metadata.insert("arch".to_string(), format!("{:?}", job.arch));
        metadata.insert(
            "settings".to_string(),
            job.settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        save_safetensors(&dict, Some(metadata), path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {} (key `output`)", path.display());
    }
    Ok(())
}

/// Every pyramid level must keep at least one pixel.
fn check_pyramid_fits(config: &ArchConfig, h: usize, w: usize) -> Result<()> {
    let Some(scales) = config.memory_shape().attention_scales else {
        return Ok(());
    };
    for &s in scales {
        if scaled_len(h, s) == 0 || scaled_len(w, s) == 0 {
            bail!("a {h}x{w} input is too small for the pyramid level at scale {s} (it would have no pixels)");
        }
    }
    Ok(())
}
