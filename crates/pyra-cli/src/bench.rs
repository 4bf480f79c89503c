//! `pyra bench`: run a model (or the identity, for the degraded-input baselines) over benchmark
//! folders and print a paper-style table, dataset x setting, PSNR/SSIM, as Markdown, plus
//! per-image CSV and a JSON summary.
//!
//! Each task degrades the clean images the way the papers made their inputs and scores the way
//! their tables do:
//! - `denoise`: Gaussian noise at each sigma (`--protocol clip8` = PANet, `float` = DnCNN/KAIR),
//!   scored on every channel;
//! - `jpeg`: IJG JPEG at each quality of the gray (Y) image, scored on gray;
//! - `mosaic`: GRBG mosaic, scored on RGB;
//! - `sr`: MATLAB bicubic downscaling by each scale of the modcropped image; scored on Y with
//!   the scale shaved. The identity model upscales with MATLAB bicubic (the "Bicubic" rows).
//!
//! Without `--weights` (and `--model`), denoising runs the bundled denoiser of each sigma, the
//! model `pyra restore` picks for that noise level.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pyra_core::backend;
use pyra_infer::{bundled, ChopOptions, Mode, Restorer};
use pyra_tasks::degrade::{
    add_gaussian_noise, imresize, jpeg_round_trip, mosaic_grbg, NoiseProtocol, Resize,
};
use pyra_tasks::image::{list_images, read_image, Image};
use pyra_tasks::metrics::{psnr, ssim, MetricOptions};

use crate::model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Task {
    Denoise,
    Jpeg,
    Mosaic,
    Sr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// PANet: noisy image clipped and rounded to 8 bits; output quantized.
    Clip8,
    /// DnCNN/KAIR: float noise, no clipping; raw output scored.
    Float,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunMode {
    /// Whole image in one pass.
    Whole,
    /// Official recursive quadrant split.
    Chop,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, value_enum)]
    task: Task,
    /// Folder holding the benchmark sets (e.g. ../shared/data/bench).
    #[arg(long)]
    data: PathBuf,
    /// Comma-separated set names (sub-folders of --data), e.g. Kodak24,McMaster.
    #[arg(long, value_delimiter = ',', required = true)]
    sets: Vec<String>,
    /// Comma-separated settings: sigmas (denoise), qualities (jpeg) or scales (sr).
    #[arg(long, value_delimiter = ',')]
    levels: Vec<f64>,
    /// `identity` scores the degraded input itself (the tables' baseline rows).
    #[arg(long)]
    model: Option<String>,
    /// Architecture of the model (default: detected from the weights).
    #[arg(long)]
    arch: Option<String>,
    /// Official constructor argument of --arch (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Weights of the model (.pt, .safetensors, or a bundled model such as pyra-dn25).
    /// Default (denoising): the bundled denoiser of each sigma.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Noise protocol for denoising.
    #[arg(long, value_enum, default_value_t = Protocol::Clip8)]
    protocol: Protocol,
    /// Noise seed (the same for every image).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How images go through the model (default: chop for attention networks, else whole).
    #[arg(long, value_enum)]
    mode: Option<RunMode>,
    /// Name of the model in the table (default: the architecture or `identity`).
    #[arg(long)]
    name: Option<String>,
    /// Folder for bench.csv (per image) and bench.json (summary).
    #[arg(long, default_value = "pyra_bench")]
    out: PathBuf,
}

struct Row {
    set: String,
    setting: String,
    image: String,
    psnr: f64,
    ssim: f64,
}

fn setting_label(task: Task, level: f64) -> String {
    match task {
        Task::Denoise => format!("sigma {level}"),
        Task::Jpeg => format!("q {level}"),
        Task::Sr => format!("x{level}"),
        Task::Mosaic => "mosaic".into(),
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let levels: Vec<f64> = match args.task {
        Task::Mosaic => vec![0.0],
        _ if args.levels.is_empty() => bail!("--levels is required for {:?}", args.task),
        _ => args.levels.clone(),
    };
    let identity = match (&args.model, &args.weights) {
        (Some(m), None) if m == "identity" => true,
        (Some(m), _) => bail!("unknown --model `{m}` (use identity, or --weights FILE)"),
        (None, _) => false,
    };
    let default_model = !identity && args.weights.is_none();
    if default_model && args.task != Task::Denoise {
        bail!("give --weights FILE (or --model identity): the default model is a denoiser");
    }
    let device = backend::default_device();
    // The models, and which one serves each level: the given one for every level, or the
    // bundled denoiser of each sigma (what `pyra restore` picks without --weights).
    let mut restorers: Vec<Restorer> = Vec::new();
    let mut chosen: Vec<Option<usize>> = vec![None; levels.len()];
    let mut names: Vec<&str> = Vec::new();
    let mut model_channels = 0;
    for (i, &level) in levels.iter().enumerate() {
        if identity {
            break;
        }
        let key = match &args.weights {
            Some(_) => "given",
            None => bundled::denoiser_for(level).name,
        };
        if let Some(k) = names.iter().position(|n| *n == key) {
            chosen[i] = Some(k);
            continue;
        }
        let (config, network) = match &args.weights {
            Some(weights) => model::open(weights, args.arch.as_deref(), &args.settings, &device)?,
            None => {
                let model = pyra_infer::open::open_bundled(bundled::denoiser_for(level), &device)?;
                (model.config, model.network)
            }
        };
        model_channels = config.input_channels();
        let mode = match args.mode.unwrap_or(if config.has_attention() {
            RunMode::Chop
        } else {
            RunMode::Whole
        }) {
            RunMode::Whole => Mode::Whole,
            RunMode::Chop => Mode::Chop(ChopOptions::official(config.scale())),
        };
        if args.task == Task::Sr && levels.iter().any(|&s| s as usize != config.scale()) {
            bail!(
                "the model upscales x{}; --levels must be {}",
                config.scale(),
                config.scale()
            );
        }
        let mut restorer = Restorer::new(&config, network, &device);
        restorer.mode = mode;
        restorer.quantize = args.protocol == Protocol::Clip8;
        chosen[i] = Some(restorers.len());
        restorers.push(restorer);
        names.push(key);
    }
    if default_model {
        for (level, k) in levels.iter().zip(&chosen) {
            if let Some(k) = k {
                eprintln!("sigma {level}: bundled model {}", names[*k]);
            }
        }
    }
    let name = args.name.clone().unwrap_or_else(|| {
        if identity {
            "identity".into()
        } else if default_model {
            names.join("/")
        } else {
            args.weights
                .as_ref()
                .and_then(|w| w.file_stem())
                .map(|w| w.to_string_lossy().into_owned())
                .unwrap_or_default()
        }
    });

    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();
    for set in &args.sets {
        let dir = args.data.join(set);
        let files = list_images(&dir).with_context(|| format!("benchmark set {set}"))?;
        if files.is_empty() {
            bail!("{} holds no images", dir.display());
        }
        for (&level, model) in levels.iter().zip(&chosen) {
            if let Some(k) = *model {
                // A model told the noise level (FFDNet) gets this sigma.
                if args.task == Task::Denoise {
                    restorers[k].network.set_noise_level(level);
                }
            }
            let restorer = model.map(|k| &restorers[k]);
            let t0 = Instant::now();
            let before = rows.len();
            for file in &files {
                let clean = read_image(file)?;
                let (gt, output, options) =
                    run_one(args.task, level, &args, &clean, restorer, model_channels)
                        .with_context(|| format!("{}", file.display()))?;
                rows.push(Row {
                    set: set.clone(),
                    setting: setting_label(args.task, level),
                    image: file
                        .file_stem()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    psnr: psnr(&gt, &output, options).map_err(anyhow::Error::msg)?,
                    ssim: ssim(&gt, &output, options).map_err(anyhow::Error::msg)?,
                });
            }
            let done = &rows[before..];
            eprintln!(
                "{set} {}: {:.3} dB / {:.4} over {} images ({:.1} s)",
                setting_label(args.task, level),
                done.iter().map(|r| r.psnr).sum::<f64>() / done.len() as f64,
                done.iter().map(|r| r.ssim).sum::<f64>() / done.len() as f64,
                done.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    report(
        &args,
        &name,
        &levels,
        &rows,
        started.elapsed().as_secs_f64(),
    )
}

/// Degrade `clean` for the task and run the model (or not): (ground truth, output, metric).
fn run_one(
    task: Task,
    level: f64,
    args: &BenchArgs,
    clean: &Image,
    restorer: Option<&Restorer>,
    model_channels: usize,
) -> Result<(Image, Image, MetricOptions)> {
    let input_channels = if args.task == Task::Jpeg {
        1
    } else {
        clean.channels
    };
    if restorer.is_some() && input_channels != model_channels && input_channels != 1 {
        bail!(
            "the model takes {model_channels}-channel images, this one has {input_channels}; \
             bench a {model_channels}-channel set"
        );
    }
    // A gray image through an RGB model goes in as three equal planes (the official
    // `set_channel`) and its output comes back as their mean, so it is scored on the same
    // one-channel values as the baseline.
    let restore = |input: &Image| -> Image {
        match restorer {
            Some(r) if input.channels == 1 && model_channels == 3 => {
                let out = r.restore(&input.gray_to_rgb()).channel_mean();
                if r.quantize {
                    out.quantized()
                } else {
                    out
                }
            }
            Some(r) => r.restore(input),
            None => input.clone(),
        }
    };
    Ok(match task {
        Task::Denoise => {
            let protocol = match args.protocol {
                Protocol::Clip8 => NoiseProtocol::Clip8,
                Protocol::Float => NoiseProtocol::Float,
            };
            let noisy = add_gaussian_noise(clean, level, args.seed, protocol);
            (
                clean.clone(),
                restore(&noisy),
                MetricOptions {
                    y_channel: false,
                    shave: 0,
                },
            )
        }
        Task::Jpeg => {
            let gray = clean.to_gray();
            let q = level as u8;
            if level != q as f64 || !(1..=100).contains(&q) {
                bail!("JPEG quality must be an integer 1-100, got {level}");
            }
            let degraded = jpeg_round_trip(&gray, q).map_err(anyhow::Error::msg)?;
            (
                gray,
                restore(&degraded),
                MetricOptions {
                    y_channel: false,
                    shave: 0,
                },
            )
        }
        Task::Mosaic => {
            if clean.channels != 3 {
                bail!("mosaicking needs RGB images");
            }
            (
                clean.clone(),
                restore(&mosaic_grbg(clean)),
                MetricOptions {
                    y_channel: false,
                    shave: 0,
                },
            )
        }
        Task::Sr => {
            let scale = level as usize;
            if level != scale as f64 || scale < 2 {
                bail!("SR scale must be an integer >= 2, got {level}");
            }
            let hr = clean.mod_crop(scale);
            let lr = imresize(
                &hr,
                Resize {
                    scale: 1.0 / scale as f64,
                },
            );
            let sr = match restorer {
                Some(_) => restore(&lr),
                None => imresize(
                    &lr,
                    Resize {
                        scale: scale as f64,
                    },
                ),
            };
            (
                hr,
                sr,
                MetricOptions {
                    y_channel: true,
                    shave: scale,
                },
            )
        }
    })
}

fn report(args: &BenchArgs, name: &str, levels: &[f64], rows: &[Row], seconds: f64) -> Result<()> {
    let settings: Vec<String> = levels
        .iter()
        .map(|&l| setting_label(args.task, l))
        .collect();
    let mean = |set: &str, setting: &str| {
        let r: Vec<&Row> = rows
            .iter()
            .filter(|r| r.set == set && r.setting == setting)
            .collect();
        let n = r.len() as f64;
        (
            r.iter().map(|r| r.psnr).sum::<f64>() / n,
            r.iter().map(|r| r.ssim).sum::<f64>() / n,
            r.len(),
        )
    };
    println!("\n**{name}**, task {:?} (PSNR dB / SSIM)\n", args.task);
    println!("| dataset | {} |", settings.join(" | "));
    println!(
        "|---|{}|",
        settings
            .iter()
            .map(|_| "---:")
            .collect::<Vec<_>>()
            .join("|")
    );
    let mut summary = Vec::new();
    for set in &args.sets {
        let cells: Vec<String> = settings
            .iter()
            .map(|s| {
                let (p, q, n) = mean(set, s);
                summary.push(serde_json::json!({"dataset": set, "setting": s, "psnr": p, "ssim": q, "images": n}));
                format!("{p:.2} / {q:.4}")
            })
            .collect();
        println!("| {set} | {} |", cells.join(" | "));
    }
    println!("\n{} image(s) in {seconds:.1} s", rows.len());

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["dataset", "setting", "image", "psnr", "ssim"])?;
    for r in rows {
        csv.write_record([
            &r.set,
            &r.setting,
            &r.image,
            &format!("{:.6}", r.psnr),
            &format!("{:.6}", r.ssim),
        ])?;
    }
    let csv_path = args.out.join("bench.csv");
    pyra_core::fs::write_atomic(&csv_path, &csv.into_inner()?)?;
    let json = serde_json::json!({
        "model": name,
        "task": format!("{:?}", args.task),
        "protocol": format!("{:?}", args.protocol),
        "seed": args.seed,
        "weights": args.weights.as_ref().map(|p| p.display().to_string()),
        "settings": args.settings,
        "results": summary,
        "seconds": seconds,
    });
    let json_path = args.out.join("bench.json");
    pyra_core::fs::write_atomic(&json_path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("wrote {} and {}", csv_path.display(), json_path.display());
    Ok(())
}
