//! Tensor operations the blocks are written in, on top of burn.

pub mod bicubic;
pub mod fused_attention;
pub mod patches;
pub mod streaming_attention;

pub use bicubic::{resize, Interp};
pub use patches::{extract_patches, paste_patches, same_padding};
