//! Classic edge-preserving smoothing filters, the targets PNEN learns to imitate.

pub mod l0;
pub mod sd;
pub mod wmf;

pub use l0::{l0_smooth, L0Boundary, L0Options};
pub use sd::{sd_filter, SdOptions, SdResult};
pub use wmf::{weighted_median, WmfOptions};
