//! A network ready to restore images: image in, image out, on the network's value range.

use pyra_core::burn::tensor::{Device, Tensor};
use pyra_core::networks::AnyNetwork;
use pyra_tasks::image::Image;

use crate::chop::{forward_chop, ChopOptions};
use crate::ensemble::self_ensemble;
use crate::tile::{forward_tiled, TileOptions};

/// How a whole image goes through the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// One pass over the whole image (global attention; memory grows with the image).
    Whole,
    /// The official recursive quadrant split.
    Chop(ChopOptions),
    /// Fixed-size tiles with overlap and smooth blending.
    Tile(TileOptions),
}

pub struct Restorer {
    pub network: AnyNetwork,
    /// Output size / input size.
    pub scale: usize,
    /// Value range the network works in (official: 1, pixels divided by 255).
    pub rgb_range: f32,
    pub mode: Mode,
    /// Round the output to 8-bit levels as the official test does (`quantize`); off for the
    /// float protocols, whose scores use the raw output.
    pub quantize: bool,
    /// Average over the 8 flips/transpositions (self-ensemble x8).
    pub ensemble: bool,
    pub device: Device,
}

impl Restorer {
    /// Run the network on a tensor already on the network's scale.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let once = |x: Tensor<4>| match self.mode {
            Mode::Whole => self.network.forward(x),
            Mode::Chop(options) => {
                forward_chop(x, self.scale, options, &|t| self.network.forward(t))
            }
            Mode::Tile(options) => {
                forward_tiled(x, self.scale, options, &|t| self.network.forward(t))
            }
        };
        if self.ensemble {
            self_ensemble(x, &once)
        } else {
            once(x)
        }
    }

    /// Restore one image (0-255 scale in and out).
    pub fn restore(&self, image: &Image) -> Image {
        let y = self.forward(image.to_tensor(self.rgb_range, &self.device));
        let mut out = if self.quantize {
            Image::from_tensor(y, self.rgb_range)
        } else {
            Image::from_tensor_unquantized(y, self.rgb_range)
        };
        out.bit_depth = image.bit_depth;
        if self.scale == 1 {
            out.alpha = image.alpha.clone();
        }
        out
    }
}
