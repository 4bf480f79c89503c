//! Validation during training: fixed degraded inputs (made once, seeded per image), the model
//! run on whole images (networks with pyramid attention: the official chop, as the official
//! validation does, since whole-image attention grows with the image squared), outputs
//! quantized to 8 bits, PSNR/SSIM as the benchmark tables score the task (#3's
//! MATLAB-compatible metrics).

use pyra_core::burn::tensor::Device;
use pyra_core::networks::ArchConfig;
use pyra_core::weights::{load_state_dict, LoadOptions, StateDict};
use pyra_infer::{ChopOptions, Mode, Restorer};
use pyra_tasks::image::Image;
use pyra_tasks::metrics::{psnr, ssim, MetricOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::TaskConfig;
use crate::data::{degrade_with_level, ImageSet};

/// Scores of one validation pass (means over the images).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub psnr: f64,
    pub ssim: f64,
}

/// Degraded/clean pairs and how to score them.
pub struct Validator {
    pairs: Vec<(Image, Image)>,
    /// The noise level each input was made with (denoising).
    levels: Vec<Option<f64>>,
    options: MetricOptions,
}

/// How the papers' tables score `task`.
pub fn metric_options(task: &TaskConfig) -> MetricOptions {
    match task {
        TaskConfig::Sr { scale } => MetricOptions {
            y_channel: true,
            shave: *scale,
        },
        _ => MetricOptions {
            y_channel: false,
            shave: 0,
        },
    }
}

impl Validator {
    /// Up to `max_images` of `set`, centre-cropped to `crop` (target side) if given.
    /// The largest network input (height, width) among the validation images.
    pub fn largest_input(&self) -> (usize, usize) {
        self.pairs
            .iter()
            .map(|(input, _)| (input.height, input.width))
            .max_by_key(|&(h, w)| h * w)
            .unwrap_or((0, 0))
    }

    pub fn new(
        set: &ImageSet,
        task: &TaskConfig,
        crop: Option<usize>,
        max_images: usize,
    ) -> Result<Self, String> {
        let scale = task.scale();
        let mut pairs = Vec::new();
        let mut levels = Vec::new();
        for (index, clean) in set.images.iter().take(max_images).enumerate() {
            let image = clean.to_image();
            let side_w = crop.unwrap_or(image.width).min(image.width);
            let side_h = crop.unwrap_or(image.height).min(image.height);
            let (w, h) = (side_w - side_w % scale, side_h - side_h % scale);
            if w < scale * 4 || h < scale * 4 {
                return Err(format!(
                    "validation image {} is too small ({}x{})",
                    clean.name, image.width, image.height
                ));
            }
            let target = image.crop((image.width - w) / 2, (image.height - h) / 2, w, h);
            if let Some(smoother) = task.smoother()? {
                // The crop is filtered as an image of its own.
                let filtered = smoother.apply(&target)?;
                pairs.push((target, filtered));
                levels.push(None);
                continue;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(0x5EED_0000 + index as u64);
            let (input, level) = degrade_with_level(task, &target, &mut rng);
            levels.push(level);
            pairs.push((input, target));
        }
        if pairs.is_empty() {
            return Err("no validation images".into());
        }
        Ok(Self {
            pairs,
            levels,
            options: metric_options(task),
        })
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Score `weights` (a network of `config`) on `device` without autodiff.
    pub fn run(
        &self,
        config: &ArchConfig,
        weights: &StateDict,
        device: &Device,
    ) -> Result<Scores, String> {
        let (network, _) = load_state_dict(config.init(device), weights, &LoadOptions::default())
            .map_err(|e| e.to_string())?;
        let restorer = Restorer {
            scale: config.scale(),
            rgb_range: config.rgb_range(),
            network,
            mode: if config.has_attention() {
                Mode::Chop(ChopOptions::official(config.scale()))
            } else {
                Mode::Whole
            },
            quantize: true,
            ensemble: false,
            device: device.clone(),
        };
        let (mut p, mut s) = (0.0, 0.0);
        let mut restorer = restorer;
        for ((input, target), level) in self.pairs.iter().zip(&self.levels) {
            // A network told the noise level gets the level this input was made with.
            if let Some(level) = level {
                restorer.network.set_noise_level(*level);
            }
            let output = restorer.restore(input);
            p += psnr(target, &output, self.options)?;
            s += ssim(target, &output, self.options)?;
        }
        let n = self.pairs.len() as f64;
        Ok(Scores {
            psnr: p / n,
            ssim: s / n,
        })
    }
}
