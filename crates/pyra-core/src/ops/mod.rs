//! Tensor operations the blocks are written in, on top of burn.

pub mod bicubic;
pub mod patches;

pub use bicubic::{resize, Interp};
pub use patches::{extract_patches, paste_patches, same_padding};
