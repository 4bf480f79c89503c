//! `pyra`: the command-line front end.

mod allocator;
mod attention;
mod bench;
mod bench_speed;
mod convert;
mod degrade;
mod demo;
mod device;
mod eval;
mod files;
mod forward;
mod model;
mod profile;
mod report;
mod restore;
mod runs;
mod smooth;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pyra",
    version,
    about = "Pyramid attention networks (PANet, PNEN) for image restoration, in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Restore the bundled sample photo with a bundled model and show the gain (no data
    /// needed).
    Demo(demo::DemoArgs),
    /// Run one module on a tensor from a safetensors file (the parity contract with PyTorch).
    Forward(forward::ForwardArgs),
    /// Convert a checkpoint (official `.pt` or safetensors) to safetensors with the same keys.
    Convert(convert::ConvertArgs),
    /// Write a freshly initialised model as safetensors.
    Init(convert::InitArgs),
    /// Make degraded copies of an image or folder (noise, mosaic, jpeg, bicubic).
    Degrade(degrade::DegradeArgs),
    /// Score restored images against ground truth (PSNR/SSIM, MATLAB-compatible).
    Eval(eval::EvalArgs),
    /// Run a model over benchmark sets and print a paper-style table.
    Bench(bench::BenchArgs),
    /// Restore a photo or a folder of photos with a model (architecture read from the weights).
    Restore(restore::RestoreArgs),
    /// Draw the pyramid attention of chosen pixels over every level (PANet Fig. 8).
    Attention(attention::AttentionArgs),
    /// Train a network from a recipe (TOML file or preset); resumable.
    Train(train::TrainArgs),
    /// What training runs cost and reached: legs, CPU hours, validation PSNR per CPU hour.
    Runs(runs::RunsArgs),
    /// Edge-preserving smoothing: L0 gradient minimisation, weighted median, SD filter.
    Smooth(smooth::SmoothArgs),
    /// Parameters, FLOPs, time and peak memory of a network or non-local block at a size.
    Profile(profile::ProfileArgs),
    /// Time the performance workloads (attention, PANet-80, PA-EDSR, a training step, a
    /// convolution), each in its own process; with PyTorch's numbers beside them on request.
    BenchSpeed(bench_speed::BenchSpeedArgs),
}

fn main() -> ExitCode {
    allocator::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Forward(args) => forward::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Init(args) => convert::init(args),
        Command::Degrade(args) => degrade::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Attention(args) => attention::run(args),
        Command::Train(args) => train::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Smooth(args) => smooth::run(args),
        Command::Profile(args) => profile::run(args),
        Command::BenchSpeed(args) => bench_speed::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
