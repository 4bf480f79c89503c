//! Building blocks, one file each, with fields named after the official state-dict keys.

pub mod batch_norm;
pub mod conv;
pub mod mean_shift;
pub mod prelu;
pub mod pyramid_attention;
pub mod res_block;
pub mod upsampler;

pub use batch_norm::BatchNorm;
pub use conv::{default_conv, BasicBlock};
pub use mean_shift::MeanShift;
pub use prelu::Prelu;
pub use pyramid_attention::{PyramidAttention, PyramidAttentionConfig};
pub use res_block::{Activation, ResBlock};
pub use upsampler::{Upsampler, UpsamplerLayer};
