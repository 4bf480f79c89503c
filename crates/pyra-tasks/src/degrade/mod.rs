//! Degradations that make the papers' test inputs.

pub mod bicubic;
pub mod jpeg;
pub mod mosaic;
pub mod noise;

pub use bicubic::{imresize, Resize};
pub use jpeg::jpeg_round_trip;
pub use mosaic::mosaic_grbg;
pub use noise::{add_gaussian_noise, NoiseProtocol};
