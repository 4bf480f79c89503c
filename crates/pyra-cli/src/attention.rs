//! `pyra attention IN OUT.png --weights FILE --pixel X,Y ...`: PANet's Fig. 8 and PNEN's
//! Fig. 5. For each chosen pixel, the attention weights over every pyramid level (PANet's
//! pyramid attention) or over the keys of every scale (a pyramid non-local block of PNEN,
//! RDN or MemNet; `--block N` picks which), drawn as a heatmap over the image at that level;
//! one row per pixel, one column per level (levels drawn at their own size), the query pixel
//! marked with a cross. Pyramid attention has one softmax over all levels, so its colours
//! are normalised per pixel over all levels and a row compares directly; the PNB has one
//! softmax per scale, so each of its cells is normalised on its own.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use pyra_tasks::image::{read_image, write_png, Depth, Image};

use crate::model;

#[derive(Args, Debug)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    /// The (degraded) input image the network would restore.
    input: PathBuf,
    /// The PNG to write.
    output: PathBuf,
    /// Weights of a network with pyramid attention (PANet, PA-EDSR) or pyramid non-local
    /// blocks (PNEN, RDN/MemNet with PNB).
    #[arg(long)]
    weights: PathBuf,
    /// Which pyramid non-local block (PNEN: the group; RDN/MemNet: the inserted block).
    #[arg(long, default_value_t = 0)]
    block: usize,
    /// Query pixel `X,Y` in input coordinates (repeatable).
    #[arg(long = "pixel", value_name = "X,Y", required = true)]
    pixels: Vec<String>,
    /// Architecture (default: detected from the checkpoint).
    #[arg(long)]
    arch: Option<String>,
    /// Override a setting (e.g. `interp=modern`); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

/// A perceptual dark-blue → yellow ramp (approximately viridis).
fn colormap(t: f32) -> [f32; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let t = t.clamp(0.0, 1.0) * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [
        a[0] + (b[0] - a[0]) * f,
        a[1] + (b[1] - a[1]) * f,
        a[2] + (b[2] - a[2]) * f,
    ]
}

pub fn run(args: AttentionArgs) -> Result<()> {
    let device = args.device.select()?;
    let (config, network) =
        model::open(&args.weights, args.arch.as_deref(), &args.settings, &device)?;
    let image = read_image(&args.input)?;
    if image.channels != config.input_channels() {
        bail!(
            "the image has {} channel(s) but the model expects {}",
            image.channels,
            config.input_channels()
        );
    }
    let pixels: Vec<(usize, usize)> = args
        .pixels
        .iter()
        .map(|p| {
            let (x, y) = p
                .split_once(',')
                .with_context(|| format!("--pixel expects X,Y, got `{p}`"))?;
            let (x, y): (usize, usize) = (x.trim().parse()?, y.trim().parse()?);
            if x >= image.width || y >= image.height {
                bail!(
                    "--pixel {x},{y} is outside the {}x{} image",
                    image.width,
                    image.height
                );
            }
            Ok((y, x))
        })
        .collect::<Result<_>>()?;

    let x = image.to_tensor(config.rgb_range(), &device);
    // (feature height, width), the key grid of every level, the weights of every pixel over
    // all levels' keys, and whether each level has its own softmax.
    let (h, w, levels, weights, per_level) =
        if let Some((features, attention)) = network.attention_input(x.clone()) {
            let [_, _, h, w] = features.dims();
            let levels = attention.level_sizes(h, w);
            let weights = attention
                .attention_at(features, &pixels)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32");
            (h, w, levels, weights, false)
        } else if let Some((features, block)) = network.pyramid_non_local_input(x, args.block) {
            let [_, _, h, w] = features.dims();
            let maps = block.attention_maps(features);
            let levels: Vec<(usize, usize)> = (1..=maps.len())
                .map(|s| (h.div_ceil(1 << s), w.div_ceil(1 << s)))
                .collect();
            let mut weights = Vec::new();
            for &(py, px) in &pixels {
                for map in &maps {
                    let row = map.clone().narrow(1, py * w + px, 1);
                    weights.extend(
                        row.into_data()
                            .convert::<f32>()
                            .try_into_vec::<f32>()
                            .expect("f32"),
                    );
                }
            }
            (h, w, levels, weights, true)
        } else {
            bail!(
                "this network has no pyramid attention nor a pyramid non-local block number {}",
                args.block
            );
        };
    let blocks: usize = levels.iter().map(|(a, b)| a * b).sum();

    // Layout: rows = pixels, columns = levels, each cell the level's size, 4 px gaps.
    let gap = 4;
    let canvas_w = levels.iter().map(|l| l.1).sum::<usize>() + gap * (levels.len() + 1);
    // Rows as tall as the largest level (the input's size for pyramid attention, half of it
    // for the PNB's first scale).
    let row_h = levels.iter().map(|l| l.0).max().unwrap_or(h);
    let canvas_h = (row_h + gap) * pixels.len() + gap;
    let mut canvas = Image::new(canvas_w, canvas_h, 3, vec![255.0; 3 * canvas_w * canvas_h]);
    let gray = image.to_gray();
    for (row, &(py, px)) in pixels.iter().enumerate() {
        let row_weights = &weights[row * blocks..(row + 1) * blocks];
        let peak_of = |values: &[f32]| values.iter().cloned().fold(f32::MIN, f32::max).max(1e-12);
        let row_peak = peak_of(row_weights);
        let (mut offset, mut cx) = (0, gap);
        let cy = gap + row * (row_h + gap);
        for &(lh, lw) in &levels {
            let peak = if per_level {
                peak_of(&row_weights[offset..offset + lh * lw])
            } else {
                row_peak
            };
            for y in 0..lh {
                for xx in 0..lw {
                    // Background: the image at this level (nearest sample), dimmed.
                    let sy = (y * image.height / lh).min(image.height - 1);
                    let sx = (xx * image.width / lw).min(image.width - 1);
                    let base = gray.at(0, sy, sx) / 255.0;
                    let heat = colormap((row_weights[offset + y * lw + xx] / peak).sqrt());
                    for (c, value) in heat.iter().enumerate() {
                        let v = 0.65 * value + 0.35 * 255.0 * base;
                        canvas.data[(c * canvas_h + cy + y) * canvas_w + cx + xx] = v;
                    }
                }
            }
            // The query pixel, mapped to this level: a red cross.
            let (qy, qx) = (py * lh / h, px * lw / w);
            for d in -3i64..=3 {
                for (yy, xx) in [(qy as i64 + d, qx as i64), (qy as i64, qx as i64 + d)] {
                    if yy >= 0 && xx >= 0 && (yy as usize) < lh && (xx as usize) < lw {
                        let i = (cy + yy as usize) * canvas_w + cx + xx as usize;
                        canvas.data[i] = 255.0;
                        canvas.data[canvas_h * canvas_w + i] = 0.0;
                        canvas.data[2 * canvas_h * canvas_w + i] = 0.0;
                    }
                }
            }
            offset += lh * lw;
            cx += lw + gap;
        }
    }
    write_png(&canvas, &args.output, Depth::Eight)?;
    println!(
        "wrote {}: {} pixel(s) x {} levels ({})",
        args.output.display(),
        pixels.len(),
        levels.len(),
        levels
            .iter()
            .map(|(a, b)| format!("{b}x{a}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
