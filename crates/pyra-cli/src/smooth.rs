//! `pyra smooth l0|wmf|sd IN OUT`: the classic edge-preserving filters PNEN imitates, on an
//! image or a folder; 8-bit in, 8-bit PNG out (written atomically).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use pyra_tasks::image::{read_image, write_png, Depth, Image};
use pyra_tasks::smooth::{
    l0_smooth, sd_filter, weighted_median, L0Boundary, L0Options, SdOptions, WmfOptions,
};

use crate::files::plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Boundary {
    /// Periodic differences, consistent with the FFT solve (Xu et al.).
    Periodic,
    /// OpenCV's `l0Smooth` border handling (replicate / reflect-101).
    Opencv,
}

#[derive(Subcommand, Debug)]
pub enum Filter {
    /// L0 gradient minimisation (Xu et al. 2011).
    L0 {
        input: PathBuf,
        output: PathBuf,
        #[arg(long = "lambda", default_value_t = 0.02)]
        lambda: f64,
        #[arg(long, default_value_t = 2.0)]
        kappa: f64,
        #[arg(long, value_enum, default_value_t = Boundary::Periodic)]
        boundary: Boundary,
    },
    /// Weighted median filter (Zhang et al. 2014), Gaussian range weight on the guide.
    Wmf {
        input: PathBuf,
        output: PathBuf,
        #[arg(long, default_value_t = 10)]
        radius: usize,
        #[arg(long, default_value_t = 50.0)]
        sigma: f64,
        /// Guide image (default: the input itself); gray or colour, same size.
        #[arg(long)]
        guide: Option<PathBuf>,
    },
    /// SD filter (Ham et al.): static and dynamic guidance, majorise-minimise.
    Sd {
        input: PathBuf,
        output: PathBuf,
        #[arg(long = "lambda", default_value_t = 15.0)]
        lambda: f64,
        #[arg(long, default_value_t = 500.0)]
        mu: f64,
        #[arg(long, default_value_t = 200.0)]
        nu: f64,
        /// Majorise-minimise steps.
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        /// Static guide (default: the input itself).
        #[arg(long)]
        guide: Option<PathBuf>,
        /// Print the energy after every step.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Args, Debug)]
pub struct SmoothArgs {
    #[command(subcommand)]
    filter: Filter,
}

fn positive(name: &str, v: f64) -> Result<()> {
    if v.is_nan() || v <= 0.0 || v.is_infinite() {
        bail!("--{name} must be a positive number");
    }
    Ok(())
}

pub fn run(args: SmoothArgs) -> Result<()> {
    let (input, output) = match &args.filter {
        Filter::L0 { input, output, .. }
        | Filter::Wmf { input, output, .. }
        | Filter::Sd { input, output, .. } => (input, output),
    };
    let guide = match &args.filter {
        Filter::Wmf { guide, .. } | Filter::Sd { guide, .. } => guide
            .as_ref()
            .map(read_image)
            .transpose()
            .context("cannot read the guide")?,
        Filter::L0 { .. } => None,
    };
    let operation = |image: &Image| -> Result<Image> {
        Ok(match &args.filter {
            Filter::L0 {
                lambda,
                kappa,
                boundary,
                ..
            } => {
                positive("lambda", *lambda)?;
                if kappa.is_nan() || *kappa <= 1.0 {
                    bail!("--kappa must be greater than 1");
                }
                l0_smooth(
                    image,
                    L0Options {
                        lambda: *lambda,
                        kappa: *kappa,
                        boundary: match boundary {
                            Boundary::Periodic => L0Boundary::Periodic,
                            Boundary::Opencv => L0Boundary::OpenCv,
                        },
                        ..Default::default()
                    },
                )
            }
            Filter::Wmf { radius, sigma, .. } => weighted_median(
                image,
                guide.as_ref(),
                WmfOptions {
                    radius: *radius,
                    sigma: *sigma,
                },
            )
            .map_err(anyhow::Error::msg)?,
            Filter::Sd {
                lambda,
                mu,
                nu,
                iterations,
                verbose,
                ..
            } => {
                positive("lambda", *lambda)?;
                positive("mu", *mu)?;
                positive("nu", *nu)?;
                let result = sd_filter(
                    image,
                    guide.as_ref(),
                    SdOptions {
                        lambda: *lambda,
                        mu: *mu,
                        nu: *nu,
                        iterations: *iterations,
                    },
                )
                .map_err(anyhow::Error::msg)?;
                if *verbose {
                    for (c, trace) in result.energies.iter().enumerate() {
                        let steps: Vec<String> = trace.iter().map(|e| format!("{e:.4}")).collect();
                        eprintln!("channel {c} energy: {}", steps.join(" -> "));
                    }
                }
                result.image
            }
        })
    };
    let jobs = plan(input, output, "png")?;
    for (from, to) in &jobs {
        let image = read_image(from)?;
        let smoothed = operation(&image).with_context(|| format!("{}", from.display()))?;
        write_png(&smoothed, to, Depth::Eight)?;
    }
    println!(
        "smooth: wrote {} image(s) to {}",
        jobs.len(),
        output.display()
    );
    Ok(())
}
