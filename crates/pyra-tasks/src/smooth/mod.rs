//! Classic edge-preserving smoothing filters, the targets PNEN learns to imitate.

pub mod l0;
pub mod sd;
pub mod wmf;

pub use l0::{l0_smooth, L0Boundary, L0Options};
pub use sd::{sd_filter, SdOptions, SdResult};
pub use wmf::{weighted_median, WmfOptions};

use crate::image::Image;

/// One of the filters with its parameters: the target a smoothing network learns (PNEN's
/// three experiments), as a value that can be stored in a training configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Smoother {
    L0(L0Options),
    Wmf(WmfOptions),
    Sd(SdOptions),
}

impl Smoother {
    /// The filtered image, rounded to 8 bits (the filters' outputs as PNEN's targets).
    pub fn apply(&self, image: &Image) -> Result<Image, String> {
        let out = match self {
            Self::L0(o) => l0_smooth(image, *o),
            Self::Wmf(o) => weighted_median(image, None, *o)?,
            Self::Sd(o) => sd_filter(image, None, *o)?.image,
        };
        Ok(out.quantized())
    }

    /// A short name with the parameters, for cache folders and logs: `l0-0.02-2`.
    pub fn tag(&self) -> String {
        match self {
            Self::L0(o) => format!("l0-{}-{}-{:?}", o.lambda, o.kappa, o.boundary),
            Self::Wmf(o) => format!("wmf-{}-{}", o.radius, o.sigma),
            Self::Sd(o) => format!("sd-{}-{}-{}-{}", o.lambda, o.mu, o.nu, o.iterations),
        }
    }
}
