//! Pyra tasks: images, degradations that make the papers' inputs, and MATLAB-compatible
//! metrics. Uses `pyra-core` only for tensors.

pub mod degrade;
pub mod image;
pub mod metrics;
pub mod noise_level;
pub mod smooth;

pub use image::{read_image, write_float_image, write_png, Depth, Image};
pub use metrics::{psnr, ssim, MetricOptions};
