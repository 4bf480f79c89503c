//! Building blocks, one file each, with fields named after the official state-dict keys.

pub mod apnb;
pub mod batch_norm;
pub mod conv;
pub mod dilated_residual;
pub mod mean_shift;
pub mod non_local;
pub mod non_local_choice;
pub mod prelu;
pub mod pyramid_attention;
pub mod pyramid_non_local;
pub mod res_block;
pub mod upsampler;
pub mod window;

pub use apnb::{Apnb, ApnbConfig};
pub use batch_norm::BatchNorm;
pub use conv::{default_conv, BasicBlock};
pub use dilated_residual::{DilatedResidual, DilatedResidualConfig};
pub use mean_shift::MeanShift;
pub use non_local::{NonLocal, NonLocalConfig};
pub use non_local_choice::{NonLocalKind, NonLocalLayer};
pub use prelu::Prelu;
pub use pyramid_attention::{PyramidAttention, PyramidAttentionConfig};
pub use pyramid_non_local::{PyramidNonLocal, PyramidNonLocalConfig};
pub use res_block::{Activation, ResBlock};
pub use upsampler::{Upsampler, UpsamplerLayer};
