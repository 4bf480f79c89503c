//! `pyra runs`: what training runs cost and reached — each run's legs (machine, steps, wall
//! and CPU time), its validation scores with the CPU hours spent to reach them, and a chart
//! of validation PSNR against CPU hours for several runs at once (PSNR per CPU hour).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use pyra_train::legs::{validation_costs, Legs};
use pyra_train::plot::{chart, Series};

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// Run folders (each with `validation.csv`, and `legs.csv` for the CPU time).
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Also draw validation PSNR against CPU hours for every run into this PNG.
    #[arg(long, value_name = "PNG")]
    chart: Option<PathBuf>,
    /// The chart's title.
    #[arg(long, default_value = "Validation PSNR per CPU hour")]
    title: String,
}

pub fn run(args: RunsArgs) -> Result<()> {
    let mut series = Vec::new();
    for dir in &args.runs {
        if !dir.is_dir() {
            bail!("{} is not a run folder", dir.display());
        }
        let legs = Legs::read(dir).map_err(anyhow::Error::msg)?;
        let costs = validation_costs(dir).map_err(anyhow::Error::msg)?;
        let (steps, wall, cpu) = legs.totals();
        println!("## {}", dir.display());
        if legs.rows.is_empty() {
            println!("no legs.csv: CPU time unknown");
        } else {
            println!();
            println!("| leg | started (UTC) | machine | cores | steps | wall s | CPU s | note |");
            println!("|---|---|---|---:|---|---:|---:|---|");
            for leg in &legs.rows {
                println!(
                    "| {} | {} | {} | {} | {} -> {} | {:.0} | {} | {} |",
                    leg.leg,
                    leg.started_utc,
                    leg.machine,
                    leg.cores,
                    leg.first_step,
                    leg.last_step,
                    leg.wall_s,
                    leg.cpu_s.map_or("unknown".into(), |c| format!("{c:.0}")),
                    leg.note
                );
            }
            println!(
                "| **sum** | | | | **{steps}** | **{wall:.0}** | **{}** | |",
                cpu.map_or("unknown".into(), |c| format!(
                    "{c:.0} ({:.2} CPU h)",
                    c / 3600.0
                ))
            );
        }
        println!();
        println!("| step | PSNR | SSIM | CPU h |");
        println!("|---:|---:|---:|---:|");
        for v in &costs {
            println!(
                "| {} | {:.2} | {:.4} | {} |",
                v.step,
                v.psnr,
                v.ssim,
                v.cpu_h.map_or("unknown".into(), |h| format!("{h:.2}"))
            );
        }
        println!();
        let points: Vec<(f64, f64)> = costs
            .iter()
            .filter_map(|v| Some((v.cpu_h?, v.psnr)))
            .collect();
        if args.chart.is_some() && points.is_empty() {
            eprintln!(
                "note: {} has no validation with a known CPU time; it is not on the chart",
                dir.display()
            );
        }
        let label = dir
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
        series.push(Series {
            label: Some(label),
            points,
        });
    }
    if let Some(path) = &args.chart {
        chart(
            path,
            &args.title,
            "CPU hours (user + system, all legs)",
            "validation PSNR (dB)",
            &series,
            false,
        )
        .map_err(anyhow::Error::msg)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
