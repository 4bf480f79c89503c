//! Training data: clean images decoded once and cached as 8-bit planes, random patches, the 8
//! flips/rotations, the task's degradation, and worker threads that make batches ahead of the
//! model.
//!
//! Every batch is a pure function of `(seed, step)`: its generator is ChaCha8 seeded with the
//! run's seed on stream `step`. Any worker can make any batch, the order never depends on
//! thread timing, and a resumed run sees exactly the batches an uninterrupted run sees: the
//! data RNG state of a checkpoint is `(seed, step)`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use pyra_tasks::degrade::{
    add_gaussian_noise, imresize, jpeg_round_trip, mosaic_grbg, NoiseProtocol, Resize,
};
use pyra_tasks::image::{list_images, read_image, write_png, Depth, Image};
use pyra_tasks::smooth::Smoother;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{TaskConfig, TrainProtocol};

/// A clean image kept as 8-bit planes (a quarter of the memory of f32).
#[derive(Debug, Clone)]
pub struct CleanImage {
    pub name: String,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// Planar: `pixels[(c * height + y) * width + x]`.
    pub pixels: Vec<u8>,
}

impl CleanImage {
    fn from_image(name: String, image: &Image) -> Self {
        Self {
            name,
            width: image.width,
            height: image.height,
            channels: image.channels,
            pixels: image.to_u8_values(),
        }
    }

    /// The whole image as an [`Image`].
    pub fn to_image(&self) -> Image {
        Image::new(
            self.width,
            self.height,
            self.channels,
            self.pixels.iter().map(|&v| v as f32).collect(),
        )
    }

    /// A `size x size` patch at (x, y) under one of the 8 dihedral transforms (bit 0: mirror
    /// left-right, bit 1: mirror top-bottom, bit 2: transpose), as the official `augment`.
    pub fn patch(&self, x: usize, y: usize, size: usize, transform: u8) -> Image {
        let mut out = Image::zeros(size, size, self.channels);
        for c in 0..self.channels {
            let plane = &self.pixels[c * self.width * self.height..][..self.width * self.height];
            let dst = out.plane_mut(c);
            for oy in 0..size {
                for ox in 0..size {
                    let (mut sy, mut sx) = if transform & 4 != 0 {
                        (ox, oy)
                    } else {
                        (oy, ox)
                    };
                    if transform & 1 != 0 {
                        sx = size - 1 - sx;
                    }
                    if transform & 2 != 0 {
                        sy = size - 1 - sy;
                    }
                    dst[oy * size + ox] = plane[(y + sy) * self.width + x + sx] as f32;
                }
            }
        }
        out
    }
}

/// The clean images of one or more folders, in name order.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    pub images: Vec<CleanImage>,
}

impl ImageSet {
    /// Decode every image of `folders` (gray: BT.601 luma, as the gray tasks use).
    pub fn load(folders: &[PathBuf], gray: bool) -> Result<Self, String> {
        let mut images = Vec::new();
        for folder in folders {
            let files = list_images(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
            if files.is_empty() {
                return Err(format!("{} holds no images", folder.display()));
            }
            for file in files {
                let image = read_image(&file).map_err(|e| e.to_string())?;
                let image = if gray && image.channels != 1 {
                    image.to_gray().quantized()
                } else if !gray && image.channels == 1 {
                    return Err(format!(
                        "{} is gray but the task trains on colour",
                        file.display()
                    ));
                } else {
                    image
                };
                let name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                images.push(CleanImage::from_image(name, &image));
            }
        }
        Ok(Self { images })
    }

    /// Keep the last `count` images apart: `(training, held out)`.
    pub fn split_holdout(mut self, count: usize) -> Result<(Self, Self), String> {
        if count >= self.images.len() {
            return Err(format!(
                "data.holdout {count} leaves no training images (there are {})",
                self.images.len()
            ));
        }
        let held = self.images.split_off(self.images.len() - count);
        Ok((self, Self { images: held }))
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// Degrade a clean image as `task` does, drawing its random choices (noise level, noise seed,
/// quality) from `rng`. Returns the network input.
pub fn degrade(task: &TaskConfig, clean: &Image, rng: &mut ChaCha8Rng) -> Image {
    degrade_with_level(task, clean, rng).0
}

/// [`degrade`], also returning the noise level drawn (denoising only).
pub fn degrade_with_level(
    task: &TaskConfig,
    clean: &Image,
    rng: &mut ChaCha8Rng,
) -> (Image, Option<f64>) {
    let uniform = |rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)| {
        if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            lo
        }
    };
    let image = match task {
        TaskConfig::Denoise {
            sigma, protocol, ..
        } => {
            let sigma = uniform(rng, sigma.bounds());
            let protocol = match protocol {
                TrainProtocol::Clip8 => NoiseProtocol::Clip8,
                TrainProtocol::Float => NoiseProtocol::Float,
                TrainProtocol::Mixed if rng.random_range(0..2u8) == 0 => NoiseProtocol::Clip8,
                TrainProtocol::Mixed => NoiseProtocol::Float,
            };
            return (
                add_gaussian_noise(clean, sigma, rng.next_u64(), protocol),
                Some(sigma),
            );
        }
        TaskConfig::Jpeg { quality } => {
            let q = uniform(rng, quality.bounds()).round().clamp(1.0, 100.0) as u8;
            jpeg_round_trip(clean, q).expect("libjpeg encodes an 8-bit image")
        }
        TaskConfig::Mosaic {} => mosaic_grbg(clean),
        // The network sees the clean image; the filtered one is the target.
        TaskConfig::Smooth { .. } => clean.clone(),
        TaskConfig::Sr { scale } => imresize(
            clean,
            Resize {
                scale: 1.0 / *scale as f64,
            },
        ),
    };
    (image, None)
}

/// One batch, NCHW values scaled to the network's pixel range.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub step: u64,
    pub input: Vec<f32>,
    pub input_shape: [usize; 4],
    pub target: Vec<f32>,
    pub target_shape: [usize; 4],
}

/// Makes the batch of any step.
///
/// Super-resolution pairs are cut from whole images downscaled once (MATLAB bicubic of the
/// image cropped to a multiple of the scale), at aligned LR/HR positions, as the official
/// code cuts them from pre-made LR images; a patch downscaled on its own would differ at its
/// borders. JPEG patches start on the 8x8 block grid, so compressing the patch gives exactly
/// the pixels of the compressed whole image (gray JPEG codes each block on its own).
#[derive(Debug, Clone)]
pub struct Sampler {
    /// Clean (target) images; for SR, cropped to a multiple of the scale.
    pub images: Arc<ImageSet>,
    /// For SR, the downscaled `images` (the inputs); for smoothing, the filtered `images` (the
    /// targets); empty otherwise.
    pub paired: Arc<Vec<CleanImage>>,
    pub task: TaskConfig,
    /// Target patch side.
    pub patch_size: usize,
    pub batch_size: usize,
    pub augment: bool,
    pub seed: u64,
    pub rgb_range: f32,
}

/// How a [`Sampler`] cuts and scales its batches.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerOptions {
    /// Target patch side.
    pub patch_size: usize,
    pub batch_size: usize,
    /// The 8 flips/rotations.
    pub augment: bool,
    pub seed: u64,
    /// The network's pixel range.
    pub rgb_range: f32,
    /// For the smoothing task: where the filtered targets are cached.
    pub target_cache: Option<PathBuf>,
}

impl Sampler {
    /// A sampler over `images` (checked: every image must give a patch).
    pub fn new(
        images: ImageSet,
        task: TaskConfig,
        options: SamplerOptions,
    ) -> Result<Self, String> {
        let SamplerOptions {
            patch_size,
            batch_size,
            augment,
            seed,
            rgb_range,
            target_cache,
        } = options;
        let cache = target_cache.as_deref();
        if let Some(smoother) = task.smoother()? {
            let targets = smoothing_targets(&images, &smoother, cache)?;
            let sampler = Self {
                images: Arc::new(images),
                paired: Arc::new(targets),
                task,
                patch_size,
                batch_size,
                augment,
                seed,
                rgb_range,
            };
            sampler.check()?;
            return Ok(sampler);
        }
        let (images, low_res) = match task {
            TaskConfig::Sr { scale } => {
                let mut high = Vec::new();
                let mut low = Vec::new();
                for clean in images.images {
                    let hr = clean.to_image().mod_crop(scale);
                    let lr = imresize(
                        &hr,
                        Resize {
                            scale: 1.0 / scale as f64,
                        },
                    );
                    low.push(CleanImage::from_image(clean.name.clone(), &lr));
                    high.push(CleanImage::from_image(clean.name, &hr));
                }
                (ImageSet { images: high }, low)
            }
            _ => (images, Vec::new()),
        };
        let sampler = Self {
            images: Arc::new(images),
            paired: Arc::new(low_res),
            task,
            patch_size,
            batch_size,
            augment,
            seed,
            rgb_range,
        };
        sampler.check()?;
        Ok(sampler)
    }

    /// Check that every image can give a patch.
    pub fn check(&self) -> Result<(), String> {
        if self.images.is_empty() {
            return Err("no training images".into());
        }
        if let Some(small) = self
            .images
            .images
            .iter()
            .find(|i| i.width < self.patch_size || i.height < self.patch_size)
        {
            return Err(format!(
                "training image {} ({}x{}) is smaller than the patch size {}",
                small.name, small.width, small.height, self.patch_size
            ));
        }
        Ok(())
    }

    /// The batch of `step`.
    pub fn batch(&self, step: u64) -> Batch {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(step);
        let p = self.patch_size;
        let s = self.task.scale();
        let channels = self.images.images[0].channels;
        let lr = p / s;
        let mut input = Vec::with_capacity(self.batch_size * channels * lr * lr);
        let mut target = Vec::with_capacity(self.batch_size * channels * p * p);
        let unit = self.rgb_range / 255.0;
        let noise_map = self.task.noise_map();
        for _ in 0..self.batch_size {
            let index = rng.random_range(0..self.images.len());
            let image = &self.images.images[index];
            // Positions on the grid of the LR image (SR) or of the JPEG blocks.
            let grid = match self.task {
                TaskConfig::Jpeg { .. } => 8,
                _ => s,
            };
            let x = rng.random_range(0..=(image.width - p) / grid) * grid;
            let y = rng.random_range(0..=(image.height - p) / grid) * grid;
            let transform = if self.augment {
                rng.random_range(0..8u8)
            } else {
                0
            };
            let clean = image.patch(x, y, p, transform);
            let (degraded, clean, level) = match self.task {
                TaskConfig::Sr { .. } => (
                    self.paired[index].patch(x / s, y / s, lr, transform),
                    clean,
                    None,
                ),
                TaskConfig::Smooth { .. } => {
                    (clean, self.paired[index].patch(x, y, p, transform), None)
                }
                _ => {
                    let (degraded, level) = degrade_with_level(&self.task, &clean, &mut rng);
                    (degraded, clean, level)
                }
            };
            input.extend(degraded.data.iter().map(|v| v * unit));
            if noise_map {
                let level = level.unwrap_or(0.0) as f32 * unit;
                input.extend(std::iter::repeat_n(level, lr * lr));
            }
            target.extend(clean.data.iter().map(|v| v * unit));
        }
        let input_channels = channels + usize::from(noise_map);
        Batch {
            step,
            input,
            input_shape: [self.batch_size, input_channels, lr, lr],
            target,
            target_shape: [self.batch_size, channels, p, p],
        }
    }
}

/// The filtered version of every image, computed on all cores; with a `cache` folder, each
/// is read from `cache/<name>.png` when there and written there (atomically) when made, so
/// a resumed or repeated run does not filter again.
pub fn smoothing_targets(
    images: &ImageSet,
    smoother: &Smoother,
    cache: Option<&Path>,
) -> Result<Vec<CleanImage>, String> {
    if let Some(dir) = cache {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the target cache {}: {e}", dir.display()))?;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(usize, CleanImage), String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(clean) = images.images.get(i) else {
                            break;
                        };
                        done.push(smoothing_target(clean, smoother, cache).map(|t| (i, t)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a filter thread panicked"))
            .collect()
    });
    let mut targets: Vec<Option<CleanImage>> = vec![None; images.len()];
    for result in results {
        let (i, target) = result?;
        targets[i] = Some(target);
    }
    Ok(targets
        .into_iter()
        .map(|t| t.expect("every image filtered"))
        .collect())
}

fn smoothing_target(
    clean: &CleanImage,
    smoother: &Smoother,
    cache: Option<&Path>,
) -> Result<CleanImage, String> {
    let cached = cache.map(|dir| dir.join(format!("{}.png", clean.name)));
    if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
        let image = read_image(path).map_err(|e| e.to_string())?;
        if (image.width, image.height, image.channels)
            == (clean.width, clean.height, clean.channels)
        {
            return Ok(CleanImage::from_image(clean.name.clone(), &image));
        }
    }
    let target = smoother.apply(&clean.to_image())?;
    if let Some(path) = cached {
        write_png(&target, &path, Depth::Eight).map_err(|e| e.to_string())?;
    }
    Ok(CleanImage::from_image(clean.name.clone(), &target))
}

/// Worker threads that make batches `first_step, first_step + 1, ...` ahead of the model and
/// hand them over in step order.
pub struct Prefetcher {
    receivers: Vec<Receiver<Batch>>,
    next_step: u64,
    first_step: u64,
    handles: Vec<JoinHandle<()>>,
}

impl Prefetcher {
    /// `workers` threads, each keeping up to `depth` batches ready.
    pub fn start(sampler: Sampler, first_step: u64, workers: usize, depth: usize) -> Self {
        let sampler = Arc::new(sampler);
        let workers = workers.max(1) as u64;
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (sender, receiver) = sync_channel(depth.max(1));
            let sampler = Arc::clone(&sampler);
            handles.push(std::thread::spawn(move || {
                let mut step = first_step + w;
                // Stops when the receiver is dropped.
                while sender.send(sampler.batch(step)).is_ok() {
                    step += workers;
                }
            }));
            receivers.push(receiver);
        }
        Self {
            receivers,
            next_step: first_step,
            first_step,
            handles,
        }
    }

    /// The next batch in step order (blocks until its worker has made it).
    pub fn next_batch(&mut self) -> Batch {
        let worker = ((self.next_step - self.first_step) % self.receivers.len() as u64) as usize;
        let batch = self.receivers[worker]
            .recv()
            .expect("data worker threads live as long as the prefetcher");
        debug_assert_eq!(batch.step, self.next_step);
        self.next_step += 1;
        batch
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Dropping the receivers ends the workers' loops at their next send.
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Level;

    fn sampler(workers_seed: u64) -> Sampler {
        let mut pixels = Vec::new();
        for c in 0..3u32 {
            for y in 0..20u32 {
                for x in 0..30u32 {
                    pixels.push(((x * 7 + y * 3 + c * 50) % 256) as u8);
                }
            }
        }
        let image = CleanImage {
            name: "a".into(),
            width: 30,
            height: 20,
            channels: 3,
            pixels,
        };
        Sampler::new(
            ImageSet {
                images: vec![image],
            },
            TaskConfig::Denoise {
                sigma: Level::Range([10.0, 50.0]),
                gray: false,
                protocol: TrainProtocol::Clip8,
                noise_map: false,
            },
            SamplerOptions {
                patch_size: 8,
                batch_size: 3,
                augment: true,
                seed: workers_seed,
                rgb_range: 1.0,
                target_cache: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn batches_depend_on_seed_and_step_only() {
        let s = sampler(5);
        assert_eq!(s.batch(3), s.batch(3));
        assert_ne!(s.batch(3).input, s.batch(4).input);
        assert_ne!(s.batch(3).input, sampler(6).batch(3).input);
        // Two workers hand over the same sequence as one.
        let mut one = Prefetcher::start(s.clone(), 10, 1, 2);
        let mut two = Prefetcher::start(s.clone(), 10, 2, 1);
        for step in 10..16 {
            let a = one.next_batch();
            assert_eq!(a.step, step);
            assert_eq!(a, two.next_batch());
        }
    }

    /// With a noise map, each patch's last input channel is its sigma / 255; with mixed
    /// protocols some patches keep float noise (values past 0-255 or between levels) and
    /// some are clipped and rounded.
    #[test]
    fn noise_maps_and_mixed_protocols_reach_the_batch() {
        let base = sampler(2);
        let mixed = Sampler {
            task: TaskConfig::Denoise {
                sigma: Level::Range([10.0, 50.0]),
                gray: false,
                protocol: TrainProtocol::Mixed,
                noise_map: true,
            },
            batch_size: 32,
            ..base
        };
        let batch = mixed.batch(7);
        assert_eq!(batch.input_shape, [32, 4, 8, 8]);
        let plane = 64;
        let (mut clipped, mut float) = (0, 0);
        for sample in batch.input.chunks_exact(4 * plane) {
            let (image, map) = sample.split_at(3 * plane);
            let level = map[0] * 255.0;
            assert!((10.0..=50.0).contains(&level), "{level}");
            assert!(map.iter().all(|&v| v == map[0]));
            // Pixels on 8-bit levels in [0, 1] for clipped patches only.
            let on_levels = image.iter().all(|&v| {
                (0.0..=1.0).contains(&v) && ((v * 255.0) - (v * 255.0).round()).abs() < 1e-3
            });
            if on_levels {
                clipped += 1;
            } else {
                float += 1;
            }
        }
        assert!(clipped > 4 && float > 4, "{clipped} clipped, {float} float");
        // The clean target has three channels.
        assert_eq!(batch.target_shape, [32, 3, 8, 8]);
    }

    #[test]
    fn the_eight_transforms_are_distinct_permutations() {
        let s = sampler(1);
        let image = &s.images.images[0];
        let patches: Vec<Image> = (0..8).map(|t| image.patch(2, 3, 5, t)).collect();
        for (i, a) in patches.iter().enumerate() {
            let mut sorted_a = a.data.clone();
            sorted_a.sort_by(f32::total_cmp);
            let mut sorted_0 = patches[0].data.clone();
            sorted_0.sort_by(f32::total_cmp);
            assert_eq!(sorted_a, sorted_0, "transform {i} permutes the same pixels");
            for b in &patches[i + 1..] {
                assert_ne!(a.data, b.data);
            }
        }
        // Transform 0 is the plain crop.
        assert_eq!(
            patches[0].at(1, 0, 0),
            image.pixels[20 * 30 + 3 * 30 + 2] as f32
        );
    }

    #[test]
    fn sr_pairs_are_aligned_crops_of_the_downscaled_whole_image() {
        let base = sampler(1);
        let image = base.images.images[0].clone();
        let sr = Sampler::new(
            ImageSet {
                images: vec![image.clone()],
            },
            TaskConfig::Sr { scale: 2 },
            SamplerOptions {
                patch_size: 8,
                batch_size: 4,
                augment: false,
                seed: 3,
                rgb_range: 255.0,
                target_cache: None,
            },
        )
        .unwrap();
        let hr = image.to_image().mod_crop(2);
        let lr = imresize(&hr, Resize { scale: 0.5 });
        assert_eq!(sr.paired[0].to_image().data, lr.data);
        let batch = sr.batch(0);
        assert_eq!(batch.input_shape, [4, 3, 4, 4]);
        for i in 0..4 {
            let input = &batch.input[i * 48..][..48];
            let target = &batch.target[i * 192..][..192];
            let found = (0..=(lr.height - 4)).any(|y| {
                (0..=(lr.width - 4)).any(|x| {
                    sr.paired[0].patch(x, y, 4, 0).data == input
                        && sr.images.images[0].patch(2 * x, 2 * y, 8, 0).data == target
                })
            });
            assert!(found, "pair {i} is not an aligned LR/HR crop");
        }
    }

    #[test]
    fn smoothing_pairs_are_clean_and_filtered_crops_and_the_targets_are_cached() {
        let base = sampler(1);
        let image = base.images.images[0].clone();
        let task = TaskConfig::Smooth {
            filter: crate::config::SmoothFilter::L0,
            lambda: Some(0.05),
            kappa: None,
            radius: None,
            sigma: None,
        };
        let smoother = task.smoother().unwrap().unwrap();
        let filtered = smoother.apply(&image.to_image()).unwrap();
        assert_ne!(filtered.data, image.to_image().data);
        let cache = std::env::temp_dir().join(format!("pyra-target-cache-{}", std::process::id()));
        let make = || {
            Sampler::new(
                ImageSet {
                    images: vec![image.clone()],
                },
                task.clone(),
                SamplerOptions {
                    patch_size: 8,
                    batch_size: 3,
                    augment: true,
                    seed: 5,
                    rgb_range: 255.0,
                    target_cache: Some(cache.clone()),
                },
            )
            .unwrap()
        };
        let first = make();
        assert_eq!(first.paired[0].to_image().data, filtered.data);
        assert!(cache.join(format!("{}.png", image.name)).exists());
        // A second sampler reads the cached targets and makes the same batches.
        let second = make();
        assert_eq!(first.batch(4), second.batch(4));
        let batch = first.batch(4);
        for i in 0..3 {
            let input = &batch.input[i * 192..][..192];
            let target = &batch.target[i * 192..][..192];
            let found = (0..=(image.height - 8)).any(|y| {
                (0..=(image.width - 8)).any(|x| {
                    (0..8u8).any(|t| {
                        image.patch(x, y, 8, t).data == input
                            && first.paired[0].patch(x, y, 8, t).data == target
                    })
                })
            });
            assert!(found, "pair {i} is not a clean/filtered crop at one place");
        }
        std::fs::remove_dir_all(cache).unwrap();
    }

    #[test]
    fn jpeg_of_a_block_aligned_patch_equals_the_crop_of_the_jpeg_image() {
        let mut data = Vec::new();
        for y in 0..64usize {
            for x in 0..72usize {
                data.push(((x * x + 3 * y * x) % 251) as f32);
            }
        }
        let image = Image::new(72, 64, 1, data);
        let whole = jpeg_round_trip(&image, 20).unwrap();
        let (x, y) = (16, 8);
        let patch = jpeg_round_trip(&image.crop(x, y, 48, 48), 20).unwrap();
        assert_eq!(patch.data, whole.crop(x, y, 48, 48).data);
        // Off the grid it would not be the same.
        let shifted = jpeg_round_trip(&image.crop(x + 3, y, 48, 48), 20).unwrap();
        assert_ne!(shifted.data, whole.crop(x + 3, y, 48, 48).data);
    }
}
