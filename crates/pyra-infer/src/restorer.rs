//! A network ready to restore images: image in, image out, on the network's value range.

use pyra_core::burn::tensor::{Device, Tensor};
use pyra_core::networks::AnyNetwork;
use pyra_tasks::image::Image;

use crate::chop::{forward_chop, ChopOptions};
use crate::ensemble::self_ensemble;
use crate::tile::{forward_tiled_with_progress, TileOptions};

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
        self.forward_with_progress(x, &|_, _| {})
    }

    /// [`Restorer::forward`], calling `progress(done, total)` as tiles (tile mode) or passes
    /// finish.
    pub fn forward_with_progress(
        &self,
        x: Tensor<4>,
        progress: &dyn Fn(usize, usize),
    ) -> Tensor<4> {
        let passes = if self.ensemble { 8 } else { 1 };
        let finished = std::cell::Cell::new(0usize);
        let once = |x: Tensor<4>| {
            let y = match self.mode {
                Mode::Whole => {
                    let y = self.network.forward(x);
                    progress(finished.get() + 1, passes);
                    y
                }
                Mode::Chop(options) => {
                    let y = forward_chop(x, self.scale, options, &|t| self.network.forward(t));
                    progress(finished.get() + 1, passes);
                    y
                }
                Mode::Tile(options) => {
                    let base = finished.get();
                    forward_tiled_with_progress(
                        x,
                        self.scale,
                        options,
                        &|t| self.network.forward(t),
                        &|done, total| progress(base * total + done, passes * total),
                    )
                }
            };
            finished.set(finished.get() + 1);
            y
        };
        if self.ensemble {
            self_ensemble(x, &once)
        } else {
            once(x)
        }
    }

    /// Restore one image (0-255 scale in and out).
    pub fn restore(&self, image: &Image) -> Image {
        self.restore_with_progress(image, &|_, _| {})
    }

    /// [`Restorer::restore`], reporting progress as [`Restorer::forward_with_progress`] does.
    pub fn restore_with_progress(&self, image: &Image, progress: &dyn Fn(usize, usize)) -> Image {
        let y = self.forward_with_progress(image.to_tensor(self.rgb_range, &self.device), progress);
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
