//! `pyra restore IN OUT [--weights FILE]`: restore a photo or a folder of photos.
//!
//! Without `--weights`, each image is denoised by the bundled denoiser for its noise level:
//! `--sigma`, or else estimated from the image (Chen, Zhu, Heng 2015) and printed. The
//! architecture and its hyper-parameters are read from the checkpoint's keys and shapes
//! (`--arch`/`--set` override). Big images go `whole` (true global attention) when the memory
//! estimate fits the budget, else in `tile`s chosen to fit; `chop` is the official quadrant
//! split (the official numbers). Outputs are PNG written atomically; with a folder, existing
//! outputs are skipped unless `--overwrite`, `--shard i/n` takes every n-th image from the i-th,
//! and a progress bar shows images/s and the ETA. With `--gt`, PSNR/SSIM per image and the mean.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use pyra_core::networks::ArchConfig;
use pyra_infer::memory::{default_budget, estimate_forward_bytes, largest_tile};
use pyra_infer::plan::{format_seconds, plan as plan_passes, Rates};
use pyra_infer::{bundled, ChopOptions, Mode, Restorer, TileOptions};
use pyra_tasks::image::{read_image, write_png, Depth, Image};
use pyra_tasks::metrics::{psnr, ssim, MetricOptions};
use pyra_tasks::noise_level::estimate_noise;

use crate::eval::{align, by_stem};
use crate::files::plan;
use crate::model;
use crate::report::format_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// The fastest of a whole pass and the tilings that fit the memory budget, by the time
    /// this machine measures for the network (a whole pass when it is within 25% of the
    /// fastest); prints the plan and an ETA.
    Auto,
    /// The whole image in one pass (global attention).
    Whole,
    /// The official recursive quadrant split (overlap 10, official numbers).
    Chop,
    /// Fixed tiles with overlap and smooth blending.
    Tile,
}

/// `--attention-window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionWindow {
    Global,
    Pixels(usize),
}

fn parse_window(text: &str) -> Result<AttentionWindow, String> {
    if text == "global" {
        return Ok(AttentionWindow::Global);
    }
    match text.parse::<usize>() {
        Ok(n) if n >= 8 => Ok(AttentionWindow::Pixels(n)),
        _ => Err(format!(
            "expected a window side of at least 8 pixels or `global`, got `{text}`"
        )),
    }
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    /// An image or a folder of images (degraded).
    input: PathBuf,
    /// The output PNG, or a folder.
    output: PathBuf,
    /// Model weights: an official `model_best.pt`, Pyra safetensors, or a bundled model
    /// (pyra-dn25, pyra-dn50, pyra-sr2). Default: the bundled denoiser for the image's noise
    /// level (`--sigma`, or estimated from the image).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Noise level of the input (standard deviation, 0-255 scale), instead of estimating it
    /// from each image: picks the bundled denoiser when `--weights` is not given, and is the
    /// noise map of a model that takes one (FFDNet).
    #[arg(long)]
    sigma: Option<f64>,
    /// Architecture (default: detected from the checkpoint).
    #[arg(long)]
    arch: Option<String>,
    /// Override a setting (official argument names, e.g. `interp=modern`); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// Pyramid attention within windows of this many pixels, or `global` (over the whole
    /// input of each forward). Default: in auto mode the planner's window (16-48 pixels, by
    /// the network's FLOPs), otherwise global; `--mode whole` is always global.
    #[arg(long, value_name = "PIXELS|global", value_parser = parse_window)]
    attention_window: Option<AttentionWindow>,
    /// Tile side in input pixels (tile mode; default: the largest that fits the budget).
    #[arg(long)]
    tile: Option<usize>,
    /// Overlap between tiles in input pixels.
    #[arg(long, default_value_t = 32)]
    overlap: usize,
    /// Memory budget in MiB for one forward (default: 70% of the available memory).
    #[arg(long, value_name = "MIB")]
    memory_budget: Option<u64>,
    /// Self-ensemble x8 (flips and 90-degree rotations, averaged; 8x slower).
    #[arg(long)]
    ensemble: bool,
    /// Ground truth (an image or a folder, paired by file name): print PSNR/SSIM.
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Score on the BT.601 luma.
    #[arg(long)]
    y: bool,
    /// Border shave for scoring (default: the SR scale, else 0).
    #[arg(long)]
    shave: Option<usize>,
    /// Replace outputs that already exist (default: skip them).
    #[arg(long)]
    overwrite: bool,
    /// `i/n`: process only images i, i+n, i+2n, ... (0 <= i < n) of the sorted folder.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Bits per sample of the output PNG.
    #[arg(long, default_value_t = 8, value_parser = parse_depth)]
    depth: u8,
}

fn parse_depth(text: &str) -> Result<u8, String> {
    match text {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err("the output depth is 8 or 16".into()),
    }
}

fn parse_shard(text: &str) -> Result<(usize, usize)> {
    let (i, n) = text
        .split_once('/')
        .context("--shard expects I/N, e.g. 0/4")?;
    let (i, n): (usize, usize) = (i.trim().parse()?, n.trim().parse()?);
    if n == 0 || i >= n {
        bail!("--shard {text}: need 0 <= I < N");
    }
    Ok((i, n))
}

/// The mode for one image of `height x width`.
fn choose_mode(
    args: &RestoreArgs,
    config: &ArchConfig,
    height: usize,
    width: usize,
    budget: u64,
) -> Result<Mode> {
    let whole = estimate_forward_bytes(config, height, width);
    let tile = |side: Option<usize>| -> Result<Mode> {
        let side = match side.or(args.tile) {
            Some(side) => side,
            None => largest_tile(config, budget).with_context(|| {
                format!(
                    "even a 32x32 tile needs more than the memory budget of {}",
                    format_bytes(budget)
                )
            })?,
        };
        if side <= 2 * args.overlap {
            bail!(
                "--tile ({side}) must be more than twice --overlap ({})",
                args.overlap
            );
        }
        Ok(Mode::Tile(TileOptions {
            tile: side,
            overlap: args.overlap,
            batch: pyra_infer::plan::batch_for(config, side, budget),
        }))
    };
    match args.mode {
        ModeArg::Whole if whole > budget => {
            let fits = largest_tile(config, budget);
            bail!(
                "a whole-image pass on {width}x{height} needs about {} but the budget is {}; use --mode tile{} or --mode chop",
                format_bytes(whole),
                format_bytes(budget),
                fits.map(|t| format!(" (tiles up to {t} px fit)")).unwrap_or_default()
            )
        }
        ModeArg::Whole => Ok(Mode::Whole),
        ModeArg::Chop => Ok(Mode::Chop(ChopOptions::official(config.scale()))),
        ModeArg::Tile => tile(None),
        ModeArg::Auto if whole <= budget && args.tile.is_none() => Ok(Mode::Whole),
        ModeArg::Auto => tile(None),
    }
}

/// The networks opened so far, by weights (file or bundled name).
struct Models {
    device: pyra_core::burn::tensor::Device,
    ensemble: bool,
    opened: HashMap<String, (ArchConfig, Restorer)>,
}

impl Models {
    fn get(
        &mut self,
        key: &str,
        open: impl FnOnce() -> Result<(ArchConfig, pyra_core::networks::AnyNetwork)>,
    ) -> Result<&mut (ArchConfig, Restorer)> {
        if !self.opened.contains_key(key) {
            let (config, network) = open()?;
            let mut restorer = Restorer::new(&config, network, &self.device);
            restorer.ensemble = self.ensemble;
            self.opened.insert(key.to_string(), (config, restorer));
        }
        Ok(self.opened.get_mut(key).expect("just inserted"))
    }
}

pub fn run(args: RestoreArgs) -> Result<()> {
    let device = args.device.select()?;
    if let Some(sigma) = args.sigma {
        if !(0.0..=255.0).contains(&sigma) {
            bail!("--sigma {sigma}: the noise level is a standard deviation on the 0-255 scale");
        }
    }
    let mut rates: HashMap<String, Rates> = HashMap::new();
    let mut models = Models {
        device: device.clone(),
        ensemble: args.ensemble,
        opened: HashMap::new(),
    };
    let open_given = |weights: &PathBuf| {
        let (arch, settings) = (args.arch.as_deref(), &args.settings);
        let device = device.clone();
        let weights = weights.clone();
        move || model::open(&weights, arch, settings, &device)
    };
    // A given model is opened before any image is read: a bad checkpoint fails at once.
    let scale = match &args.weights {
        Some(weights) => {
            let key = weights.display().to_string();
            let config = &models.get(&key, open_given(weights))?.0;
            if args.sigma.is_some() && !config.takes_noise_level() {
                bail!(
                    "--sigma: this model is not told the noise level (only FFDNet-style models \
                     are); leave --weights out to pick a bundled denoiser by sigma"
                );
            }
            config.scale()
        }
        None => 1,
    };
    // The noise level of an image: --sigma, or estimated.
    let noise_level = |image: &Image, input: &std::path::Path| -> Result<(f64, &'static str)> {
        match args.sigma {
            Some(sigma) => Ok((sigma, "given")),
            None => {
                let estimate = estimate_noise(image).with_context(|| {
                    format!(
                        "{}: too small to estimate its noise level; give --sigma",
                        input.display()
                    )
                })?;
                Ok((estimate.sigma, "estimated"))
            }
        }
    };
    let budget = args
        .memory_budget
        .map_or_else(default_budget, |mib| mib << 20);

    let mut jobs = plan(&args.input, &args.output, "png")?;
    if let Some(shard) = &args.shard {
        let (i, n) = parse_shard(shard)?;
        jobs = jobs
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, j)| j)
            .collect();
    }
    let total = jobs.len();
    let (jobs, skipped): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .partition(|(_, out)| args.overwrite || !out.exists());
    let gts = args.gt.as_deref().map(by_stem).transpose()?;
    let options = MetricOptions {
        y_channel: args.y,
        shave: args.shave.unwrap_or(if scale > 1 { scale } else { 0 }),
    };
    let depth = if args.depth == 16 {
        Depth::Sixteen
    } else {
        Depth::Eight
    };

    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  ETA {eta}  {msg}")
            .expect("valid template"),
    );
    if jobs.len() < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let mut scores: Vec<(String, f64, f64)> = Vec::new();
    if gts.is_some() {
        println!("| image | PSNR (dB) | SSIM |\n|---|---:|---:|");
    }
    for (input, output) in &jobs {
        let name = input
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        bar.set_message(name.clone());
        let image = read_image(input)?;
        if image.data.iter().any(|v| !v.is_finite()) {
            bail!(
                "{}: the image contains NaN or infinite values",
                input.display()
            );
        }
        let model_key;
        let (config, restorer) = match &args.weights {
            Some(weights) => {
                model_key = weights.display().to_string();
                let entry = models.get(&model_key, open_given(weights))?;
                if entry.0.takes_noise_level() {
                    let (sigma, how) = noise_level(&image, input)?;
                    bar.suspend(|| eprintln!("{name}: noise sigma {sigma:.1} ({how})"));
                    entry.1.network.set_noise_level(sigma);
                }
                entry
            }
            None => {
                let (sigma, how) = noise_level(&image, input)?;
                let bundled = bundled::denoiser_for(sigma);
                model_key = bundled.name.to_string();
                bar.suspend(|| {
                    eprintln!(
                        "{name}: noise sigma {sigma:.1} ({how}), model {} ({})",
                        bundled.name, bundled.summary
                    )
                });
                let device = device.clone();
                let entry = models.get(bundled.name, move || {
                    let model = pyra_infer::open::open_bundled(bundled, &device)?;
                    Ok((model.config, model.network))
                })?;
                // A blind model is told the level.
                if entry.0.takes_noise_level() {
                    entry.1.network.set_noise_level(sigma);
                }
                entry
            }
        };
        let config = config.clone();
        if image.channels != config.input_channels() {
            bail!(
                "{}: the image has {} channel(s) but the model expects {}",
                input.display(),
                image.channels,
                config.input_channels()
            );
        }
        let min_side = restorer.network.min_input_side();
        if image.height.min(image.width) < min_side {
            bail!(
                "{}: the image is {}x{}, but this model needs at least {min_side}x{min_side} pixels \
                 (its pyramid attention downscales the features to 0.6x); use a larger image",
                input.display(),
                image.width,
                image.height
            );
        }
        let key = model_key;
        // Rates are measured, and every plan starts, with global attention.
        restorer.network.set_attention_window(None);
        let window = match (args.mode, args.attention_window) {
            (ModeArg::Whole, _) | (_, Some(AttentionWindow::Global)) => None,
            (_, Some(AttentionWindow::Pixels(n))) => {
                if !restorer.network.supports_attention_window() {
                    bail!("--attention-window: this model has no pyramid attention");
                }
                Some(n)
            }
            _ => None,
        };
        let (mode, eta, window) = if args.mode == ModeArg::Auto && args.tile.is_none() {
            let rates = match rates.get(&key) {
                Some(r) => *r,
                None => {
                    let r = Rates::measure(
                        &mut restorer.network,
                        config.input_channels(),
                        min_side,
                        &device,
                    );
                    rates.insert(key.clone(), r);
                    r
                }
            };
            let window = match args.attention_window {
                None => pyra_infer::plan::attention_window(&restorer.network),
                Some(_) => window,
            };
            let plan = plan_passes(
                &config,
                &restorer.network,
                &rates,
                (image.height, image.width),
                budget,
                args.overlap,
                min_side,
                window,
            )
            .with_context(|| {
                format!(
                    "{}: even a 16x16 tile needs more than the memory budget of {}",
                    input.display(),
                    format_bytes(budget)
                )
            })?;
            let passes = if args.ensemble { 8 } else { 1 };
            let seconds = plan.seconds * passes as f64;
            let mut what = match plan.tiles {
                None => "one whole-image pass".to_string(),
                Some(t) => format!(
                    "{} tiles of {}x{} (overlap {}, {} per forward)",
                    plan.passes, t.tile, t.tile, t.overlap, t.batch
                ),
            };
            if let Some(t) = plan.window {
                what += &format!(", attention in {t}x{t} windows");
            }
            bar.suspend(|| {
                eprintln!(
                    "{name}: {}x{}, plan: {what}, about {} of memory; ETA {} (a whole-image pass: {})",
                    image.width,
                    image.height,
                    format_bytes(plan.bytes),
                    format_seconds(seconds),
                    format_seconds(plan.whole_seconds * passes as f64)
                )
            });
            let mode = match plan.tiles {
                None => Mode::Whole,
                Some(t) => Mode::Tile(t),
            };
            (mode, Some(seconds), window)
        } else {
            let mode = choose_mode(&args, &config, image.height, image.width, budget)
                .with_context(|| format!("{}", input.display()))?;
            (mode, None, window)
        };
        if let Mode::Tile(TileOptions { tile, .. }) = mode {
            if tile < min_side {
                bail!("--tile {tile} is smaller than the {min_side} pixels this model needs");
            }
        }
        restorer.mode = mode;
        restorer.network.set_attention_window(window);
        let image_started = Instant::now();
        let tiles_bar = ProgressBar::new(0);
        tiles_bar.set_style(
            ProgressStyle::with_template("  {bar:30} {pos}/{len} tiles  ETA {eta}")
                .expect("valid template"),
        );
        let terminal = std::io::stderr().is_terminal();
        let last_tenth = std::cell::Cell::new(0usize);
        let progress = |done: usize, total: usize| {
            if total < 2 {
                return;
            }
            if terminal {
                tiles_bar.set_length(total as u64);
                tiles_bar.set_position(done as u64);
            } else if done * 10 / total > last_tenth.get() {
                // Without a terminal (logs, CI): a line at every tenth.
                last_tenth.set(done * 10 / total);
                let elapsed = image_started.elapsed().as_secs_f64();
                let left = elapsed / done as f64 * (total - done) as f64;
                eprintln!(
                    "{name}: {done}/{total} tiles, {} elapsed, about {} left",
                    format_seconds(elapsed),
                    format_seconds(left)
                );
            }
        };
        let restored: Image = restorer.restore_with_progress(&image, &progress);
        tiles_bar.finish_and_clear();
        if let Some(eta) = eta {
            bar.suspend(|| {
                eprintln!(
                    "{name}: restored in {} (estimated {})",
                    format_seconds(image_started.elapsed().as_secs_f64()),
                    format_seconds(eta)
                )
            });
        }
        write_png(&restored, output, depth)?;
        if let Some(gts) = &gts {
            let gt_path = gts.get(&name).with_context(|| {
                format!(
                    "no ground truth named {name} in {}",
                    args.gt.as_ref().unwrap().display()
                )
            })?;
            let gt = align(read_image(gt_path)?, &restored).with_context(|| name.clone())?;
            let p = psnr(&gt, &restored, options).map_err(anyhow::Error::msg)?;
            let s = ssim(&gt, &restored, options).map_err(anyhow::Error::msg)?;
            // Rows go to stdout (the bar draws on stderr, and not at all without a terminal).
            bar.suspend(|| println!("| {name} | {p:.4} | {s:.4} |"));
            scores.push((name, p, s));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if !scores.is_empty() {
        let n = scores.len() as f64;
        println!(
            "| **mean of {}** | **{:.4}** | **{:.4}** |",
            scores.len(),
            scores.iter().map(|s| s.1).sum::<f64>() / n,
            scores.iter().map(|s| s.2).sum::<f64>() / n
        );
    }
    println!(
        "restored {} of {total} image(s) in {seconds:.1} s ({:.2} images/s){}; outputs in {}",
        jobs.len(),
        jobs.len() as f64 / seconds.max(1e-9),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(", skipped {} existing (use --overwrite)", skipped.len())
        },
        args.output.display()
    );
    Ok(())
}
