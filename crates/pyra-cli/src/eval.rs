//! `pyra eval --gt DIR --pred DIR [--y] [--shave N] [--json FILE]`: PSNR/SSIM of restored
//! images against ground truth, MATLAB-compatible (see `pyra_tasks::metrics`). Images pair up
//! by file stem; a ground truth larger than its prediction by less than 8 pixels per side is
//! cropped from the top left (the SR "modcrop").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use pyra_tasks::image::{list_images, read_image, Image};
use pyra_tasks::metrics::{psnr, ssim, MetricOptions};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Ground-truth image or folder.
    #[arg(long)]
    gt: PathBuf,
    /// Restored image or folder (files pair with the ground truth by name).
    #[arg(long)]
    pred: PathBuf,
    /// Score the BT.601 luma (Y) instead of every channel.
    #[arg(long)]
    y: bool,
    /// Pixels removed from each border before scoring (SR: the scale).
    #[arg(long, default_value_t = 0)]
    shave: usize,
    /// Also write the scores as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The images of a folder (or one file) by file stem.
pub fn by_stem(path: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let files = if path.is_dir() {
        list_images(path)?
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        bail!("{} does not exist", path.display());
    };
    Ok(files
        .into_iter()
        .map(|f| {
            (
                f.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                f,
            )
        })
        .collect())
}

/// Crop the ground truth to the prediction's size when it is larger by a few pixels, and take
/// its luma when the prediction is gray and the ground truth colour.
pub fn align(gt: Image, pred: &Image) -> Result<Image> {
    let gt = if gt.channels == 3 && pred.channels == 1 {
        gt.to_gray()
    } else {
        gt
    };
    if (gt.width, gt.height) == (pred.width, pred.height) {
        return Ok(gt);
    }
    if gt.width >= pred.width
        && gt.height >= pred.height
        && gt.width - pred.width < 8
        && gt.height - pred.height < 8
    {
        return Ok(gt.crop(0, 0, pred.width, pred.height));
    }
    bail!(
        "sizes differ: ground truth {}x{}, prediction {}x{}",
        gt.width,
        gt.height,
        pred.width,
        pred.height
    )
}

pub fn run(args: EvalArgs) -> Result<()> {
    let gts = by_stem(&args.gt)?;
    let preds = by_stem(&args.pred)?;
    let single = gts.len() == 1 && preds.len() == 1 && args.gt.is_file() && args.pred.is_file();
    let pairs: Vec<(String, PathBuf, PathBuf)> = if single {
        let (name, gt) = gts.into_iter().next().unwrap();
        let (_, pred) = preds.into_iter().next().unwrap();
        vec![(name, gt, pred)]
    } else {
        let missing: Vec<_> = gts
            .keys()
            .filter(|k| !preds.contains_key(*k))
            .cloned()
            .collect();
        if !missing.is_empty() {
            bail!(
                "no prediction for {} ground-truth image(s): {}",
                missing.len(),
                missing.join(", ")
            );
        }
        gts.into_iter()
            .map(|(k, gt)| (k.clone(), gt, preds[&k].clone()))
            .collect()
    };
    let options = MetricOptions {
        y_channel: args.y,
        shave: args.shave,
    };
    let mut rows = Vec::new();
    println!("| image | PSNR (dB) | SSIM |\n|---|---:|---:|");
    for (name, gt_path, pred_path) in &pairs {
        let pred = read_image(pred_path)?;
        let gt = align(read_image(gt_path)?, &pred).with_context(|| name.clone())?;
        let p = psnr(&gt, &pred, options)
            .map_err(anyhow::Error::msg)
            .with_context(|| name.clone())?;
        let s = ssim(&gt, &pred, options)
            .map_err(anyhow::Error::msg)
            .with_context(|| name.clone())?;
        println!("| {name} | {p:.4} | {s:.4} |");
        rows.push((name.clone(), p, s));
    }
    let n = rows.len() as f64;
    let mean_psnr = rows.iter().map(|r| r.1).sum::<f64>() / n;
    let mean_ssim = rows.iter().map(|r| r.2).sum::<f64>() / n;
    println!(
        "| **mean of {}** | **{mean_psnr:.4}** | **{mean_ssim:.4}** |",
        rows.len()
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "y_channel": args.y,
            "shave": args.shave,
            "mean_psnr": mean_psnr,
            "mean_ssim": mean_ssim,
            "images": rows.iter().map(|(name, p, s)| serde_json::json!({"name": name, "psnr": p, "ssim": s})).collect::<Vec<_>>(),
        });
        pyra_core::fs::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
