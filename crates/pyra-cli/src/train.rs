//! `pyra train`: run a training recipe (a TOML file or a preset), resumable.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use pyra_train::{config, train, RunOptions, Stop};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    /// Data-parallel training: one copy of the model per device, each computing its share
    /// of every batch, e.g. `cuda:0,cuda:1` or `gpu:0,gpu:1` (gradients averaged on the
    /// host; untested on more than one real GPU, see the README).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        conflicts_with = "device"
    )]
    devices: Vec<pyra_core::backend::DeviceSpec>,
    /// The run's configuration file (TOML).
    #[arg(long, conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// A built-in recipe: panet-dn, panet-s-dn, panet-dm, panet-car, paedsr-x2/x3/x4, and the
    /// bundled models' pyra-dn25, pyra-dn50, pyra-sr2, and pyra-blind (in training).
    #[arg(long)]
    preset: Option<String>,
    /// Override a setting, `section.key=value` (TOML value), e.g. `optim.steps=1000` or
    /// `model.settings.n_feats=32` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the run from its latest checkpoint (same data order, same results as an
    /// uninterrupted run).
    #[arg(long)]
    resume: bool,
    /// Stop with a checkpoint at this step (resume later with --resume).
    #[arg(long, value_name = "STEP")]
    until: Option<u64>,
    /// Stop with a checkpoint after this many minutes.
    #[arg(long, value_name = "MINUTES")]
    time_limit: Option<f64>,
    /// Print the configuration (TOML) and exit.
    #[arg(long)]
    print_config: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Memory budget in MiB for one training step or validation forward (default: 70% of the
    /// available memory); a run estimated to need more is refused before it starts.
    #[arg(long, value_name = "MIB")]
    memory_budget: Option<u64>,
}

/// The devices of a data-parallel run (each described on stderr), or none: the device of
/// `--device`.
fn select_devices(args: &TrainArgs) -> Result<Vec<pyra_core::burn::tensor::Device>> {
    let Some(first) = args.devices.first() else {
        args.device.select()?;
        return Ok(Vec::new());
    };
    pyra_core::backend::select(first.choice).map_err(anyhow::Error::msg)?;
    let mut devices = Vec::new();
    for (i, spec) in args.devices.iter().enumerate() {
        let device = spec.device().map_err(anyhow::Error::msg)?;
        let line = pyra_core::backend::describe(&device).map_err(anyhow::Error::msg)?;
        eprintln!("device {i}: {line}");
        devices.push(device);
    }
    Ok(devices)
}

pub fn run(args: TrainArgs) -> Result<()> {
    let devices = select_devices(&args)?;
    let run = match (&args.config, &args.preset) {
        (Some(path), _) => config::read_run(path, &args.overrides).map_err(anyhow::Error::msg)?,
        (None, Some(name)) => {
            let text = config::preset(name).map_err(anyhow::Error::msg)?;
            config::parse_run(text, &args.overrides)
                .map_err(|e| anyhow::anyhow!("preset {name}: {e}"))?
        }
        (None, None) => {
            let names: Vec<&str> = config::PRESETS.iter().map(|(n, _)| *n).collect();
            bail!(
                "give --config FILE or --preset NAME (presets: {})",
                names.join(", ")
            )
        }
    };
    if args.print_config {
        print!("{}", run.to_toml());
        return Ok(());
    }
    if let Some(minutes) = args.time_limit {
        if !(minutes > 0.0 && minutes.is_finite()) {
            bail!("--time-limit must be a positive number of minutes");
        }
    }
    let options = RunOptions {
        resume: args.resume,
        until_step: args.until,
        time_limit: args.time_limit.map(|m| Duration::from_secs_f64(m * 60.0)),
        progress: !args.quiet,
        handle_interrupt: true,
        memory_budget: args.memory_budget.map(|mib| mib << 20),
        devices,
    };
    eprintln!(
        "training {} ({}) for {} steps into {}",
        run.name,
        run.model.arch,
        run.optim.steps,
        run.run_dir().display()
    );
    let summary = train(&run, &options).map_err(anyhow::Error::msg)?;
    let why = match summary.stop {
        Stop::Finished => "finished",
        Stop::UntilStep => "stopped at --until",
        Stop::TimeLimit => "stopped at --time-limit",
        Stop::Interrupted => "interrupted",
    };
    println!(
        "{}: step {}/{} ({why}); loss {}; best validation {}; {:.2} patches/s; {:.0} s in all",
        summary.run_dir.display(),
        summary.step,
        run.optim.steps,
        summary.last_loss.map_or("-".into(), |l| format!("{l:.5}")),
        summary
            .best_psnr
            .map_or("-".into(), |p| format!("{p:.3} dB")),
        summary.patches_per_s,
        summary.elapsed_s
    );
    if summary.stop != Stop::Finished {
        println!("continue with the same command and --resume");
    }
    Ok(())
}
