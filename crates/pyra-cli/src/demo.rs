//! `pyra demo`: restore the bundled sample photo with a bundled model, with no data or network
//! needed. Denoising: add Gaussian noise (PANet protocol: clipped, 8-bit), denoise, score both
//! against the clean photo. SR: MATLAB-bicubic downscale, upscale with the model and with
//! bicubic, score on Y with the scale shaved. Writes `degraded | restored | clean` side by side.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use pyra_core::backend;
use pyra_infer::{bundled, Mode, Restorer};
use pyra_tasks::degrade::{add_gaussian_noise, imresize, NoiseProtocol, Resize};
use pyra_tasks::image::{decode_image, read_image, write_png, Depth, Image};
use pyra_tasks::metrics::{psnr, ssim, MetricOptions};

use crate::model;

/// A CBSD432 photo (`95006`) that the bundled models never trained on (it is one of the
/// images their recipes hold out for validation).
const SAMPLE: &[u8] = include_bytes!("../../../assets/sample/95006.png");

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoTask {
    Denoise,
    Sr,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    #[arg(long, value_enum, default_value_t = DemoTask::Denoise)]
    task: DemoTask,
    /// Noise level for denoising: 25 or 50 (the bundled denoisers).
    #[arg(long, default_value_t = 25)]
    sigma: u32,
    /// A clean colour photo to use instead of the bundled sample.
    #[arg(long)]
    image: Option<PathBuf>,
    /// The side-by-side PNG to write.
    #[arg(long, default_value = "pyra_demo.png")]
    out: PathBuf,
    /// Noise seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `images` left to right with 8 white pixels between them.
fn side_by_side(images: &[&Image]) -> Image {
    const GAP: usize = 8;
    let height = images.iter().map(|i| i.height).max().unwrap_or(0);
    let width = images.iter().map(|i| i.width).sum::<usize>() + GAP * (images.len() - 1);
    let mut out = Image::new(width, height, 3, vec![255.0; width * height * 3]);
    let mut x0 = 0;
    for image in images {
        for c in 0..3 {
            let src = image.plane(c.min(image.channels - 1));
            let dst = out.plane_mut(c);
            for y in 0..image.height {
                dst[y * width + x0..][..image.width]
                    .copy_from_slice(&src[y * image.width..][..image.width]);
            }
        }
        x0 += image.width + GAP;
    }
    out
}

pub fn run(args: DemoArgs) -> Result<()> {
    args.device.select()?;
    let clean = match &args.image {
        Some(path) => read_image(path)?,
        None => decode_image(SAMPLE, "the bundled sample")?,
    };
    if clean.channels != 3 {
        bail!("the demo models are for colour photos; the image is gray");
    }
    let name = match args.task {
        DemoTask::Denoise => match args.sigma {
            25 => "pyra-dn25",
            50 => "pyra-dn50",
            other => bail!("no bundled denoiser for sigma {other}; use --sigma 25 or 50"),
        },
        DemoTask::Sr => "pyra-sr2",
    };
    let bundled = bundled::find(name).expect("listed in bundled::BUNDLED");
    let device = backend::default_device();
    let (config, network) = model::open(std::path::Path::new(name), None, &[], &device)?;
    let restorer = Restorer {
        scale: config.scale(),
        rgb_range: config.rgb_range(),
        network,
        mode: Mode::Whole,
        quantize: true,
        ensemble: false,
        device,
    };

    let (clean, degraded, shown, options, label) = match args.task {
        DemoTask::Denoise => {
            let noisy =
                add_gaussian_noise(&clean, args.sigma as f64, args.seed, NoiseProtocol::Clip8);
            let options = MetricOptions {
                y_channel: false,
                shave: 0,
            };
            (
                clean,
                noisy.clone(),
                noisy,
                options,
                format!("noisy (sigma {})", args.sigma),
            )
        }
        DemoTask::Sr => {
            let clean = clean.mod_crop(2);
            let low = imresize(&clean, Resize { scale: 0.5 });
            let bicubic = imresize(&low, Resize { scale: 2.0 });
            let options = MetricOptions {
                y_channel: true,
                shave: 2,
            };
            (clean, low, bicubic, options, "bicubic x2".to_string())
        }
    };
    let started = Instant::now();
    let restored = restorer.restore(&degraded);
    let took = started.elapsed().as_secs_f64();
    let before = psnr(&clean, &shown, options).map_err(anyhow::Error::msg)?;
    let after = psnr(&clean, &restored, options).map_err(anyhow::Error::msg)?;
    let ssim_before = ssim(&clean, &shown, options).map_err(anyhow::Error::msg)?;
    let ssim_after = ssim(&clean, &restored, options).map_err(anyhow::Error::msg)?;
    write_png(
        &side_by_side(&[&shown, &restored, &clean]),
        &args.out,
        Depth::Eight,
    )?;
    println!(
        "{} ({}), {}x{} photo, {took:.2} s",
        bundled.name, bundled.summary, clean.width, clean.height
    );
    println!("{label:<20} PSNR {before:6.2} dB  SSIM {ssim_before:.4}");
    println!(
        "{:<20} PSNR {after:6.2} dB  SSIM {ssim_after:.4}",
        "restored"
    );
    println!(
        "wrote {} ({} | restored | clean)",
        args.out.display(),
        label
    );
    Ok(())
}
