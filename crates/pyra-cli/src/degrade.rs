//! `pyra degrade noise|mosaic|jpeg|bicubic IN OUT`: make degraded copies of an image or a
//! folder, as the papers made their test inputs. Outputs are lossless PNG (the JPEG task
//! writes the decoded image); `noise --float` writes unclipped float images as safetensors.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pyra_tasks::degrade::{
    add_gaussian_noise, imresize, jpeg_round_trip, mosaic_grbg, NoiseProtocol, Resize,
};
use pyra_tasks::image::{read_image, write_float_image, write_png, Depth, Image};

use crate::files::plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Additive white Gaussian noise (--sigma, --seed, --float).
    Noise,
    /// GRBG Bayer mosaic, three channels with zeros at the missing samples.
    Mosaic,
    /// IJG libjpeg compression at --quality (--gray converts colour to Y first).
    Jpeg,
    /// MATLAB bicubic downscaling by --scale (the image is first cropped to a multiple of it).
    Bicubic,
}

#[derive(Args, Debug)]
pub struct DegradeArgs {
    kind: Kind,
    /// An image or a folder of images.
    input: PathBuf,
    /// The output image (.png, or .safetensors with --float) or folder.
    output: PathBuf,
    /// Noise standard deviation on the 0-255 scale.
    #[arg(long)]
    sigma: Option<f64>,
    /// Noise seed (every image is noised from this seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// DnCNN/KAIR protocol: float noise, no clipping or rounding (writes .safetensors).
    /// Without it, the PANet protocol: clipped and rounded to 8 bits.
    #[arg(long)]
    float: bool,
    /// JPEG quality, 1-100.
    #[arg(long)]
    quality: Option<u8>,
    /// Convert colour images to gray (BT.601 Y, rounded) before degrading (the papers' gray
    /// JPEG and denoising sets).
    #[arg(long)]
    gray: bool,
    /// Bicubic downscaling factor (2, 3, 4, ...).
    #[arg(long)]
    scale: Option<usize>,
}

/// One degradation, applied to each image.
type Operation = dyn Fn(&Image) -> Result<Image>;

pub fn run(args: DegradeArgs) -> Result<()> {
    let extension = if args.float { "safetensors" } else { "png" };
    if args.float && args.kind != Kind::Noise {
        bail!("--float only applies to `degrade noise`");
    }
    let operation: Box<Operation> = match args.kind {
        Kind::Noise => {
            let sigma = args.sigma.context("`degrade noise` needs --sigma")?;
            if !(sigma >= 0.0 && sigma.is_finite()) {
                bail!("--sigma must be a non-negative number");
            }
            let protocol = if args.float {
                NoiseProtocol::Float
            } else {
                NoiseProtocol::Clip8
            };
            let seed = args.seed;
            Box::new(move |img| Ok(add_gaussian_noise(img, sigma, seed, protocol)))
        }
        Kind::Mosaic => Box::new(|img| {
            if img.channels != 3 {
                bail!("mosaicking needs an RGB image, this one is gray");
            }
            Ok(mosaic_grbg(img))
        }),
        Kind::Jpeg => {
            let quality = args.quality.context("`degrade jpeg` needs --quality")?;
            if !(1..=100).contains(&quality) {
                bail!("--quality must be 1-100");
            }
            Box::new(move |img| jpeg_round_trip(img, quality).map_err(anyhow::Error::msg))
        }
        Kind::Bicubic => {
            let scale = args.scale.context("`degrade bicubic` needs --scale")?;
            if scale < 2 {
                bail!("--scale must be at least 2");
            }
            Box::new(move |img| {
                if img.width < scale || img.height < scale {
                    bail!(
                        "a {}x{} image is smaller than the scale {scale}",
                        img.width,
                        img.height
                    );
                }
                Ok(imresize(
                    &img.mod_crop(scale),
                    Resize {
                        scale: 1.0 / scale as f64,
                    },
                ))
            })
        }
    };
    let jobs = plan(&args.input, &args.output, extension)?;
    if args.gray && args.kind == Kind::Mosaic {
        bail!("--gray makes no sense for mosaicking, which needs RGB");
    }
    for (input, output) in &jobs {
        let image = read_image(input)?;
        let image = if args.gray { image.to_gray() } else { image };
        let degraded = operation(&image).with_context(|| format!("{}", input.display()))?;
        if args.float {
            write_float_image(&degraded, output)?;
        } else {
            let depth = if degraded.bit_depth == 16 {
                Depth::Sixteen
            } else {
                Depth::Eight
            };
            write_png(&degraded, output, depth)?;
        }
    }
    println!(
        "degrade {:?}: wrote {} image(s) to {}",
        args.kind,
        jobs.len(),
        args.output.display()
    );
    Ok(())
}
