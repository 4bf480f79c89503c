//! Tensor operations the blocks are written in, on top of burn.

pub mod bicubic;
pub mod chunked_attention;
pub mod conv_direct;
pub mod conv_kernel;
pub mod fused_attention;
pub mod fused_conv;
pub mod isa;
pub mod patches;
pub mod streaming_attention;
pub mod sub_images;

pub use bicubic::{resize, Interp};
pub use patches::{extract_patches, paste_patches, same_padding};
