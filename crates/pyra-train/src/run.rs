//! A whole training run from a [`RunConfig`]: data, model, the loop with its schedule,
//! validation, checkpoints, logs and plots; resumable exactly.
//!
//! The run folder holds:
//! - `config.toml` — the configuration as run;
//! - `checkpoint_latest.safetensors` — weights + Adam state + step (see [`crate::checkpoint`]);
//! - `model_latest.safetensors`, `model_best.safetensors` — inference weights;
//! - `log.csv` (step, loss, lr, grad norm, patches/s, data wait, elapsed) and `validation.csv`
//!   (step, PSNR, SSIM);
//! - `legs.csv` — each invocation's machine, steps, wall and CPU time (see [`crate::legs`]);
//! - `loss.png`, `validation_psnr.png` and, where every leg knows its CPU time,
//!   `validation_cpu_hours.png` (validation PSNR against the CPU hours spent to reach it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pyra_core::backend;
use pyra_core::burn::module::Module;
use pyra_core::burn::tensor::{Device, Tensor, TensorData};
use pyra_core::fs::write_atomic;
use pyra_core::networks::ArchConfig;
use pyra_core::weights::{state_dict_of, trainable_keys, StateDict, TensorValues};
use pyra_infer::memory;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{export_weights, Checkpoint};
use crate::config::RunConfig;
use crate::data::{ImageSet, Prefetcher, Sampler, SamplerOptions};
use crate::legs::{process_cpu_s, Legs};
use crate::optim::learning_rate;
use crate::plot::{chart, line_chart, Series};
use crate::step::Trainer;
use crate::validate::Validator;

/// How this invocation runs (not part of the run's configuration).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from `checkpoint_latest.safetensors` of the run folder.
    pub resume: bool,
    /// Stop with a checkpoint once this step is reached (before `optim.steps`).
    pub until_step: Option<u64>,
    /// Stop with a checkpoint after this much time in this invocation.
    pub time_limit: Option<Duration>,
    /// Draw a progress bar on standard error.
    pub progress: bool,
    /// Ctrl-C writes a checkpoint and stops the run cleanly.
    pub handle_interrupt: bool,
    /// Refuse to start when a training step or a validation forward is estimated to need
    /// more bytes than this (default: 70% of the memory available).
    pub memory_budget: Option<u64>,
    /// Data-parallel training on these devices (one copy of the model each, the batch shared
    /// among them; see `step.rs`). Empty: the default device alone. The first one validates.
    pub devices: Vec<Device>,
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Finished,
    UntilStep,
    TimeLimit,
    Interrupted,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    /// Steps completed (all invocations).
    pub step: u64,
    pub stop: Stop,
    /// Mean loss over the last logging interval.
    pub last_loss: Option<f64>,
    pub best_psnr: Option<f64>,
    /// Training patches per second in this invocation (optimisation steps only).
    pub patches_per_s: f64,
    /// Seconds spent training in all invocations.
    pub elapsed_s: f64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static HANDLER: Once = Once::new();

fn install_interrupt_handler() {
    HANDLER.call_once(|| {
        // If another handler exists already, Ctrl-C keeps its default behaviour.
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    });
}

/// PyTorch's default initialisation of convolutions (`kaiming_uniform_(a=sqrt(5))`, i.e.
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias), drawn from ChaCha8 seeded with
/// `seed`, so a run's starting point is the same on every machine. Other trainable tensors
/// (PReLU slopes, BatchNorm affine) keep their constructors' values.
pub fn seeded_init(
    weights: &mut StateDict,
    trainable: &std::collections::HashSet<String>,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let fan_in: BTreeMap<String, usize> = weights
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 4 && t.name.ends_with(".weight"))
        .map(|t| {
            let prefix = t.name.trim_end_matches("weight").to_string();
            (prefix, t.shape[1] * t.shape[2] * t.shape[3])
        })
        .collect();
    for t in weights.tensors.iter_mut() {
        if !trainable.contains(&t.name) {
            continue;
        }
        let prefix = t
            .name
            .trim_end_matches("weight")
            .trim_end_matches("bias")
            .to_string();
        let is_conv = (t.name.ends_with(".weight") && t.shape.len() == 4)
            || (t.name.ends_with(".bias") && fan_in.contains_key(&prefix));
        if !is_conv {
            continue;
        }
        let bound = 1.0 / (fan_in[&prefix] as f32).sqrt();
        if let TensorValues::F32(values) = &mut t.values {
            for v in values.iter_mut() {
                *v = rng.random_range(-bound..bound);
            }
        }
    }
}

/// One CSV file whose rows start with a step; on resume, rows after the checkpoint's step
/// are dropped (they belong to steps that will be redone).
struct CsvLog {
    path: PathBuf,
    text: String,
}

impl CsvLog {
    fn open(path: PathBuf, header: &str, resume_step: Option<u64>) -> Self {
        let mut text = format!("{header}\n");
        if let Some(limit) = resume_step {
            if let Ok(old) = std::fs::read_to_string(&path) {
                for line in old.lines().skip(1) {
                    let step: Option<u64> = line.split(',').next().and_then(|s| s.parse().ok());
                    if step.is_some_and(|s| s <= limit) {
                        text.push_str(line);
                        text.push('\n');
                    }
                }
            }
        }
        Self { path, text }
    }

    fn rows(&self) -> impl Iterator<Item = Vec<f64>> + '_ {
        self.text.lines().skip(1).map(|l| {
            l.split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect()
        })
    }

    fn push(&mut self, row: &str) -> Result<(), String> {
        self.text.push_str(row);
        self.text.push('\n');
        write_atomic(&self.path, self.text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

fn tensor(values: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Check that a checkpoint belongs to this run: same model, task, data and optimiser (the
/// number of steps, validation and output may change between invocations).
fn check_same_run(saved: &str, current: &RunConfig) -> Result<(), String> {
    let saved = crate::config::parse_run(saved, &[])
        .map_err(|e| format!("the checkpoint's configuration is unreadable: {e}"))?;
    let mut a = saved.clone();
    let mut b = current.clone();
    a.optim.steps = 0;
    b.optim.steps = 0;
    a.validation = b.validation.clone();
    a.output = b.output.clone();
    a.data.workers = b.data.workers;
    a.data.prefetch = b.data.prefetch;
    if a != b {
        return Err(
            "the checkpoint was written by a different run configuration (model, task, data or \
             optimiser differ); resume with the same configuration or use another output.dir"
                .into(),
        );
    }
    Ok(())
}

fn write_plots(dir: &Path, log: &CsvLog, validation: &CsvLog, legs: &Legs) -> Result<(), String> {
    let loss: Vec<(f64, f64)> = log.rows().map(|r| (r[0], r[1])).collect();
    line_chart(&dir.join("loss.png"), "Training loss", "loss", &loss, true)?;
    let psnr: Vec<(f64, f64)> = validation.rows().map(|r| (r[0], r[1])).collect();
    line_chart(
        &dir.join("validation_psnr.png"),
        "Validation PSNR",
        "PSNR (dB)",
        &psnr,
        false,
    )?;
    let by_cpu: Option<Vec<(f64, f64)>> = psnr
        .iter()
        .map(|&(step, p)| Some((legs.cpu_s_at(step as u64)? / 3600.0, p)))
        .collect();
    match by_cpu {
        Some(points) if !points.is_empty() => chart(
            &dir.join("validation_cpu_hours.png"),
            "Validation PSNR per CPU hour",
            "CPU hours (user + system, all legs)",
            "PSNR (dB)",
            &[Series {
                label: None,
                points,
            }],
            false,
        ),
        _ => Ok(()),
    }
}

/// Train as `config` says.
/// Refuse a batch that would not fit in memory (instead of being killed by the OS hours in),
/// naming the largest batch that fits.
fn check_training_memory(
    config: &RunConfig,
    arch: &ArchConfig,
    budget: u64,
    copies: usize,
) -> Result<(), String> {
    let parameters = arch.init(&backend::default_device()).num_params() as u64;
    let side = config.data.patch_size / config.task.scale();
    // Each copy of a data-parallel run holds its shard (copies on one device share it; the
    // CPU's copies then together hold the whole batch, as one copy would).
    let batch = config.data.batch_size.div_ceil(copies);
    let needs = memory::estimate_training_step_bytes(arch, parameters, batch, side, side);
    if needs <= budget {
        return Ok(());
    }
    let what = format!(
        "a training step of {batch} x {side}x{side} patches needs about {} but the memory \
         budget is {}",
        mib(needs),
        mib(budget)
    );
    Err(
        match memory::largest_training_batch(arch, parameters, batch, side, side, budget) {
            Some(fits) => format!(
                "{what}; set data.batch_size={} (or less) to fit",
                fits * copies
            ),
            None => format!("{what}; lower data.patch_size (even one patch does not fit)"),
        },
    )
}

/// Refuse validation images whose whole-image forward would not fit in memory.
fn check_validation_memory(
    arch: &ArchConfig,
    height: usize,
    width: usize,
    budget: u64,
) -> Result<(), String> {
    let needs = memory::estimate_forward_bytes(arch, height, width);
    if needs <= budget {
        return Ok(());
    }
    Err(format!(
        "validating on {width}x{height} images needs about {} but the memory budget is {}; \
         set validation.crop to a smaller side",
        mib(needs),
        mib(budget)
    ))
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

pub fn train(config: &RunConfig, options: &RunOptions) -> Result<RunSummary, String> {
    let started = Instant::now();
    let arch: ArchConfig = config.arch_config()?;
    let memory_budget = options.memory_budget.unwrap_or_else(memory::default_budget);
    let copies = if options.devices.is_empty() {
        1
    } else if backend::is_cpu(&options.devices[0]) {
        // Copies on the CPU share its memory.
        1
    } else {
        options.devices.len()
    };
    if options.devices.len() > config.data.batch_size {
        return Err(format!(
            "a batch of {} cannot be shared by {} devices; raise data.batch_size",
            config.data.batch_size,
            options.devices.len()
        ));
    }
    check_training_memory(config, &arch, memory_budget, copies)?;
    let dir = config.run_dir();
    let checkpoint_path = dir.join("checkpoint_latest.safetensors");
    if !options.resume && checkpoint_path.exists() {
        return Err(format!(
            "{} exists; continue it with --resume, or choose another output.dir",
            checkpoint_path.display()
        ));
    }
    if options.resume && !checkpoint_path.exists() {
        return Err(format!(
            "--resume: {} does not exist",
            checkpoint_path.display()
        ));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the run folder {}: {e}", dir.display()))?;
    write_atomic(&dir.join("config.toml"), config.to_toml().as_bytes())
        .map_err(|e| format!("cannot write into {}: {e}", dir.display()))?;

    // Data.
    let gray = config.task.gray();
    let all = ImageSet::load(&config.data.train.paths(), gray)?;
    let (train_set, held) = if config.data.holdout > 0 {
        all.split_holdout(config.data.holdout)?
    } else {
        (all, ImageSet::default())
    };
    let validator = if config.validation.every > 0 {
        let set = match &config.validation.folder {
            Some(folder) => ImageSet::load(std::slice::from_ref(folder), gray)?,
            None => held,
        };
        Some(Validator::new(
            &set,
            &config.task,
            config.validation.crop,
            config.validation.max_images,
        )?)
    } else {
        None
    };
    let sampler = Sampler::new(
        train_set,
        config.task.clone(),
        SamplerOptions {
            patch_size: config.data.patch_size,
            batch_size: config.data.batch_size,
            augment: config.data.augment,
            seed: config.optim.seed,
            rgb_range: arch.rgb_range(),
            target_cache: config
                .task
                .smoother()?
                .map(|s| dir.join("targets").join(s.tag())),
        },
    )?;

    if let Some(validator) = &validator {
        let (height, width) = validator.largest_input();
        check_validation_memory(&arch, height, width, memory_budget)?;
    }

    // Model and optimiser.
    let infer_device = options
        .devices
        .first()
        .cloned()
        .unwrap_or_else(backend::default_device);
    let device = backend::with_autodiff(infer_device.clone());
    let mut trainer = Trainer::new(arch.init(&device), config.optim.loss);
    trainer.clip_grad_norm = config.optim.clip_grad_norm;
    let mut best_psnr = None;
    let mut elapsed_before = 0.0;
    if options.resume {
        let checkpoint = Checkpoint::load(&checkpoint_path)?;
        check_same_run(&checkpoint.config, config)?;
        trainer.set_weights(&checkpoint.weights)?;
        trainer.adam = checkpoint.adam;
        trainer.step = checkpoint.step;
        best_psnr = checkpoint.best_psnr;
        elapsed_before = checkpoint.elapsed_s;
    } else {
        let mut weights = state_dict_of(&trainer.model);
        match &config.model.init {
            Some(path) => {
                weights = StateDict::read(path)
                    .map_err(|e| format!("model.init {}: {e}", path.display()))?
            }
            None => seeded_init(
                &mut weights,
                &trainable_keys(&trainer.model),
                config.optim.seed,
            ),
        }
        trainer.set_weights(&weights)?;
    }
    trainer.add_replicas(&arch, options.devices.get(1..).unwrap_or_default())?;
    let first_step = trainer.step;
    let resume_step = options.resume.then_some(first_step);
    let mut log = CsvLog::open(
        dir.join("log.csv"),
        "step,loss,lr,grad_norm,patches_per_s,data_wait_ms,elapsed_s",
        resume_step,
    );
    let mut validation_log =
        CsvLog::open(dir.join("validation.csv"), "step,psnr,ssim", resume_step);
    let mut legs = Legs::begin(&dir, first_step)?;
    legs.write()?;

    let total = config.optim.steps;
    let target = options.until_step.map_or(total, |u| u.min(total));
    if options.handle_interrupt {
        install_interrupt_handler();
    }
    let bar = if options.progress {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}",
        )
        .expect("a valid template"),
    );
    bar.set_position(first_step);
    bar.reset_eta();

    let mut prefetcher = Prefetcher::start(
        sampler,
        first_step,
        config.data.workers,
        config.data.prefetch,
    );
    let save = |trainer: &Trainer, best: Option<f64>, elapsed: f64| -> Result<(), String> {
        let weights = trainer.weights();
        Checkpoint {
            step: trainer.step,
            weights: weights.clone(),
            adam: trainer.adam.clone(),
            config: config.to_toml(),
            best_psnr: best,
            elapsed_s: elapsed,
        }
        .save(&checkpoint_path)?;
        export_weights(
            &weights,
            &config.model.arch,
            &config.settings_text(),
            trainer.step,
            &dir.join("model_latest.safetensors"),
        )
    };

    let mut stop = Stop::Finished;
    let mut step_time = Duration::ZERO;
    let mut interval_loss = 0.0f64;
    let mut interval_steps = 0u64;
    let mut interval_wait = Duration::ZERO;
    let mut interval_time = Duration::ZERO;
    let mut last_loss = None;
    let mut saved_at = trainer.step;
    while trainer.step < target {
        if options.handle_interrupt && INTERRUPTED.load(Ordering::SeqCst) {
            stop = Stop::Interrupted;
            break;
        }
        if options
            .time_limit
            .is_some_and(|limit| started.elapsed() >= limit)
        {
            stop = Stop::TimeLimit;
            break;
        }
        let t0 = Instant::now();
        let batch = prefetcher.next_batch();
        let waited = t0.elapsed();
        let step = trainer.step;
        let lr = learning_rate(
            config.optim.lr,
            step,
            config.optim.warmup_steps,
            config.optim.decay_every,
            config.optim.gamma,
        );
        let input = tensor(batch.input, batch.input_shape, &device);
        let target_t = tensor(batch.target, batch.target_shape, &device);
        let stats = trainer.train_step(input, target_t, lr)?;
        let took = t0.elapsed();
        step_time += took;
        interval_time += took;
        interval_wait += waited;
        interval_loss += stats.loss as f64;
        interval_steps += 1;
        bar.inc(1);
        let done = trainer.step;
        let elapsed = elapsed_before + started.elapsed().as_secs_f64();

        if done.is_multiple_of(config.output.log_every.max(1)) || done == target {
            let mean = interval_loss / interval_steps as f64;
            let rate = (interval_steps * config.data.batch_size as u64) as f64
                / interval_time.as_secs_f64();
            let mut row = String::new();
            let _ = write!(
                row,
                "{done},{mean:.6},{lr:.6e},{:.5},{rate:.3},{:.1},{elapsed:.1}",
                stats.grad_norm,
                interval_wait.as_secs_f64() * 1000.0 / interval_steps as f64
            );
            log.push(&row)?;
            bar.set_message(format!(
                "loss {mean:.5} lr {lr:.2e}{}",
                best_psnr.map_or(String::new(), |p| format!(" best {p:.2} dB"))
            ));
            last_loss = Some(mean);
            interval_loss = 0.0;
            interval_steps = 0;
            interval_wait = Duration::ZERO;
            interval_time = Duration::ZERO;
        }
        if let Some(validator) = &validator {
            if done.is_multiple_of(config.validation.every) || done == total {
                let scores = validator.run(&arch, &trainer.weights(), &infer_device)?;
                validation_log.push(&format!("{done},{:.4},{:.5}", scores.psnr, scores.ssim))?;
                let improved = best_psnr.is_none_or(|b| scores.psnr > b);
                if improved {
                    best_psnr = Some(scores.psnr);
                    export_weights(
                        &trainer.weights(),
                        &config.model.arch,
                        &config.settings_text(),
                        done,
                        &dir.join("model_best.safetensors"),
                    )?;
                }
                bar.println(format!(
                    "step {done}: validation {:.3} dB / SSIM {:.4} on {} images{}",
                    scores.psnr,
                    scores.ssim,
                    validator.len(),
                    if improved { " (best)" } else { "" }
                ));
                legs.progress(done, started.elapsed().as_secs_f64(), process_cpu_s());
                write_plots(&dir, &log, &validation_log, &legs)?;
            }
        }
        if config.output.snapshots.contains(&done) {
            export_weights(
                &trainer.weights(),
                &config.model.arch,
                &config.settings_text(),
                done,
                &dir.join(format!("model_step{done}.safetensors")),
            )?;
        }
        if done.is_multiple_of(config.output.checkpoint_every.max(1)) {
            save(&trainer, best_psnr, elapsed)?;
            legs.update(done, started.elapsed().as_secs_f64(), process_cpu_s())?;
            saved_at = done;
            write_plots(&dir, &log, &validation_log, &legs)?;
        }
    }
    drop(prefetcher);
    if trainer.step == target && target < total {
        stop = Stop::UntilStep;
    }
    let elapsed = elapsed_before + started.elapsed().as_secs_f64();
    if trainer.step != saved_at || !checkpoint_path.exists() {
        save(&trainer, best_psnr, elapsed)?;
    }
    legs.update(
        trainer.step,
        started.elapsed().as_secs_f64(),
        process_cpu_s(),
    )?;
    if validator.is_none() && trainer.step == total {
        // Without validation the final weights are the best ones we know.
        export_weights(
            &trainer.weights(),
            &config.model.arch,
            &config.settings_text(),
            trainer.step,
            &dir.join("model_best.safetensors"),
        )?;
    }
    write_plots(&dir, &log, &validation_log, &legs)?;
    bar.finish_and_clear();
    let steps_here = trainer.step - first_step;
    Ok(RunSummary {
        run_dir: dir,
        step: trainer.step,
        stop,
        last_loss,
        best_psnr,
        patches_per_s: if step_time.is_zero() {
            0.0
        } else {
            (steps_here * config.data.batch_size as u64) as f64 / step_time.as_secs_f64()
        },
        elapsed_s: elapsed,
    })
}
