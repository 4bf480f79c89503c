//! Pyramid attention (PANet, Mei et al., eqs. (4)-(5)), exactly as the official module computes
//! it.
//!
//! For the block input `x` (`[N, C, H, W]`) and the pyramid `F = { y^s = bicubic(x, s) : s ∈ S }`
//! with `S = {1.0, 0.9, 0.8, 0.7, 0.6}` by default:
//!
//! ```text
//!   (4)  y_i = 1/σ(x) · Σ_{s∈S} Σ_{j ∈ y^s} φ(x_{δ(i)}, y^s_{δ(j)}) · θ(y^s_{δ(j)})
//!   (5)  φ(x_{δ(i)}, y_{δ(j)}) = exp( f(x_{δ(i)})ᵀ · ĝ(y_{δ(j)}) · softmax_scale )
//! ```
//!
//! where `δ(i)` is the `ksize x ksize` block around pixel `i`, `f`, `g`, `θ` are `1 x 1`
//! convolutions followed by PReLU (`conv_match_L_base`, `conv_match`, `conv_assembly`; `g` and
//! `θ` shared by all levels), `ĝ = g / max(‖g‖₂, escape_NaN)` is the normalised key block, and
//! `σ(x) = Σ_s Σ_j φ(...)` makes one softmax over every block of every level. The sum of `θ`
//! blocks is pasted back with overlap (each output pixel collects the `ksize²` blocks covering
//! it), divided by 4, and the input added: `out = paste(y) / 4 + res_scale · x`.
//!
//! The official quirks reproduced on purpose (see the fixtures README): the division by 4 (not
//! 9), "same" zero padding of blocks, keys normalised by `max(norm, 1e-4)` with the buffer
//! `escape_NaN` loaded from the checkpoint, the query not normalised, no self-masking,
//! `res_scale` on the skip rather than the attention branch, and attention per sample. Hard
//! attention (`average = false`) replaces each pixel's softmax by the 0/1 mask of its maxima,
//! with no gradient through it.
//!
//! Knobs beyond the official code: any list of scales (the official `level = n` is the first n
//! of the default list); `stride` samples the key/value blocks every `stride` pixels of each
//! level while pasting stays on the query grid (the official code accepts `stride` but its
//! pasting `conv_transpose2d(..., stride)` then produces a map of the wrong size, so only
//! `stride = 1` ran there); `ksize` must be odd (the official pasting hard-codes `padding=1`,
//! so only `ksize = 3` ran there).

// Field names are the official state-dict keys (`conv_match_L_base`, `escape_NaN`), also in the
// code the Module derive generates from them.
#![allow(non_snake_case)]

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use super::conv::{basic_block, basic_block_1x1, BasicBlock};
use crate::ops::chunked_attention::{chunked_pyramid_attention, ChunkSpec};
use crate::ops::fused_attention::{self, fused_pyramid_attention, AttentionSpec};
use crate::ops::streaming_attention::Normalisation;
use crate::ops::{extract_patches, paste_patches, resize, Interp};

/// How many bytes of scores the chunked formulation computes at once (one `[N, r, R]` array;
/// a few are alive at a time, see [`PyramidAttention::forward_chunked`]).
pub const SCORE_CHUNK_BYTES: usize = 64 << 20;

/// How many bytes of scores the streaming CPU kernel holds per worker thread (see
/// [`PyramidAttention::forward_streaming`]); larger tiles waste less work on their halo.
pub const STREAM_TILE_BYTES: usize = 128 << 20;

/// The pyramid scales of the paper, level 0 first.
pub const PAPER_SCALES: [f64; 5] = [1.0, 0.9, 0.8, 0.7, 0.6];

#[derive(Config, Debug, PartialEq)]
pub struct PyramidAttentionConfig {
    /// Feature channels of the block input (`channel`).
    #[config(default = 64)]
    pub channel: usize,
    /// Query/key embeddings have `channel / reduction` channels.
    #[config(default = 2)]
    pub reduction: usize,
    /// Block size of matching and pasting (odd).
    #[config(default = 3)]
    pub ksize: usize,
    /// Sampling stride of key/value blocks on each level.
    #[config(default = 1)]
    pub stride: usize,
    /// Multiplies the matching scores before the softmax.
    #[config(default = 10.0)]
    pub softmax_scale: f64,
    /// Soft attention (true) or hard arg-max attention (false).
    #[config(default = true)]
    pub average: bool,
    /// Multiplies the skip connection.
    #[config(default = 1.0)]
    pub res_scale: f64,
    /// Pyramid scales, one level each; 1.0 is the input itself.
    #[config(default = "PAPER_SCALES.to_vec()")]
    pub scales: Vec<f64>,
    /// Interpolation of the pyramid (legacy = what the official weights were trained with).
    #[config(default = "Interp::Legacy")]
    pub interp: Interp,
}

impl PyramidAttentionConfig {
    /// The official `level = n` knob: the first `n` scales `1 - i/10`.
    pub fn with_levels(self, levels: usize) -> Self {
        let scales = (0..levels).map(|i| 1.0 - i as f64 / 10.0).collect();
        self.with_scales(scales)
    }

    /// Check the configuration; the message names the offending knob.
    pub fn validate(&self) -> Result<(), String> {
        if self.channel == 0 || self.reduction == 0 || !self.channel.is_multiple_of(self.reduction)
        {
            return Err(format!(
                "channel ({}) must be a positive multiple of reduction ({})",
                self.channel, self.reduction
            ));
        }
        if self.ksize.is_multiple_of(2) {
            return Err(format!("ksize must be odd, got {}", self.ksize));
        }
        if self.stride == 0 {
            return Err("stride must be at least 1".into());
        }
        if self.scales.is_empty() || self.scales.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
            return Err(format!(
                "scales must be positive numbers, got {:?}",
                self.scales
            ));
        }
        if !self.softmax_scale.is_finite() || !self.res_scale.is_finite() {
            return Err("softmax_scale and res_scale must be finite".into());
        }
        Ok(())
    }

    /// Build the block with PyTorch's default initialisation (PReLU slopes 0.25).
    ///
    /// # Panics
    /// If [`PyramidAttentionConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> PyramidAttention {
        if let Err(message) = self.validate() {
            panic!("invalid pyramid attention configuration: {message}");
        }
        let reduced = self.channel / self.reduction;
        PyramidAttention {
            escape_NaN: Param::from_tensor(Tensor::full([1], 1e-4, device)).set_require_grad(false),
            conv_match_L_base: basic_block_1x1(self.channel, reduced, device),
            conv_match: basic_block_1x1(self.channel, reduced, device),
            conv_assembly: basic_block_1x1(self.channel, self.channel, device),
            ksize: self.ksize,
            stride: self.stride,
            softmax_scale: self.softmax_scale,
            average: self.average,
            res_scale: self.res_scale,
            scales: self.scales.clone(),
            interp: self.interp,
            window: None,
        }
    }
}

/// The official `PyramidAttention` module; field names are its state-dict keys.
#[derive(Module, Debug)]
pub struct PyramidAttention {
    /// Lower bound of key norms (a buffer, 1e-4; loaded from checkpoints, never trained).
    pub escape_NaN: Param<Tensor<1>>,
    /// `f`: query embedding of the full-resolution input.
    pub conv_match_L_base: BasicBlock,
    /// `g`: key embedding, applied to every level.
    pub conv_match: BasicBlock,
    /// `θ`: value embedding, applied to every level.
    pub conv_assembly: BasicBlock,
    pub ksize: usize,
    pub stride: usize,
    pub softmax_scale: f64,
    pub average: bool,
    pub res_scale: f64,
    pub scales: Vec<f64>,
    #[module(skip)]
    pub interp: Interp,
    /// `Some(t)`: attend within `t x t` windows of the input instead of over the whole map
    /// (inference on large images, see [`super::window`]); `None` (the default, and what the
    /// official module does): global.
    #[module(skip)]
    pub window: Option<usize>,
}

/// Keys and values of every block of every level, as columns.
struct Pyramid {
    /// `ĝ(y^s_{δ(j)})`, normalised: `[N, C/r * k², L]`.
    keys: Tensor<3>,
    /// `θ(y^s_{δ(j)})`: `[N, C * k², L]`.
    values: Tensor<3>,
}

impl PyramidAttention {
    /// `out = paste(Σ softmax(f·ĝ) θ) / 4 + res_scale · x`.
    ///
    /// Ways to the same numbers, picked by where `x` lives ([`Path::for_device`]):
    /// - on the Flex CPU backend with key stride 1, inference and training: the fused streaming
    ///   kernel ([`PyramidAttention::forward_streaming`]), 9x fewer multiply-adds, bounded
    ///   memory, with its own tiled backward;
    /// - elsewhere (GPU, strided keys), inference and training: [`SCORE_CHUNK_BYTES`] of scores
    ///   at a time over the query pixels, block products summed over the block's offsets on
    ///   flat canvases, a backward that recomputes each chunk's weights
    ///   ([`PyramidAttention::forward_chunked`]), so neither the `[H*W, L]` map nor the
    ///   `[C·k², L]` block columns ever exist.
    ///
    /// `PYRA_ATTENTION=whole|chunked|streaming` forces one (for comparisons).
    ///
    /// With [`PyramidAttention::window`] set, each window of the input goes through that
    /// forward on its own (as one batch).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self.window {
            Some(size) => super::window::windowed(x, size, |x| self.forward_global(x)),
            None => self.forward_global(x),
        }
    }

    /// The forward over the whole map, whatever [`PyramidAttention::window`] says.
    pub fn forward_global(&self, x: Tensor<4>) -> Tensor<4> {
        match Path::for_device(&x.device(), self.stride) {
            Path::Streaming => self.forward_streaming(x, STREAM_TILE_BYTES),
            Path::Whole => self.forward_whole(x),
            Path::Chunked => self.forward_chunked(x, SCORE_CHUNK_BYTES),
        }
    }

    /// The forward with the whole `[N, H*W, L]` score map in memory (the official way).
    pub fn forward_whole(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, height, width] = x.dims();
        let pyramid = self.pyramid(x.clone());
        let attention = self.attention(x.clone(), &pyramid.keys);
        // Σ_j φ_ij θ_j for every pixel i, as block columns [N, C*k², H*W] ...
        let blocks = pyramid.values.matmul(attention.swap_dims(1, 2));
        // ... pasted with overlap and divided by 4, as the official deconvolution does.
        let reconstruction = paste_patches(blocks, height, width, self.ksize).div_scalar(4.0);
        reconstruction + x.mul_scalar(self.res_scale)
    }

    /// The forward in chunks of query pixels against all blocks of all levels
    /// ([`crate::ops::chunked_attention`]), `chunk_bytes` of scores at a time, with nothing
    /// larger than a chunk or a level map: inference and training (its backward recomputes
    /// each chunk's weights) on any backend, any key stride. Each row's softmax (or arg-max
    /// mask) is exact and complete within its chunk.
    pub fn forward_chunked(&self, x: Tensor<4>, chunk_bytes: usize) -> Tensor<4> {
        self.chunked(x, chunk_bytes, None)
    }

    /// The first `chunks` chunks of [`PyramidAttention::forward_chunked`] (the other query
    /// pixels get no attention), and how many chunks the whole forward has: for measuring
    /// memory and time per chunk of a forward too long to run whole on a slow device.
    pub fn forward_chunked_sample(
        &self,
        x: Tensor<4>,
        chunk_bytes: usize,
        chunks: usize,
    ) -> (Tensor<4>, usize) {
        let [n, _, height, width] = x.dims();
        let spec = ChunkSpec {
            attention: self.spec(self.level_sizes(height, width), chunk_bytes),
            stride: self.stride,
            first_chunks: None,
        };
        let total = spec.chunk_count(n, height, width);
        (self.chunked(x, chunk_bytes, Some(chunks)), total)
    }

    fn chunked(&self, x: Tensor<4>, chunk_bytes: usize, first_chunks: Option<usize>) -> Tensor<4> {
        let (query, keys, values, levels) = self.embedded(x.clone());
        let spec = ChunkSpec {
            attention: self.spec(levels, chunk_bytes),
            stride: self.stride,
            first_chunks,
        };
        let pasted = chunked_pyramid_attention(query, keys, values, spec);
        pasted.div_scalar(4.0) + x.mul_scalar(self.res_scale)
    }

    /// The forward through the fused CPU kernel of [`crate::ops::streaming_attention`]: scores
    /// from pixel products and a `k x k` diagonal sum (9x fewer multiply-adds than block
    /// products), one exact softmax per row over all levels, and the pasting folded into the
    /// weights, tile by tile, with at most `budget_bytes` of scores per worker thread. On an
    /// autodiff device the backward is the kernel's tiled backward, which recomputes the
    /// weights per tile instead of storing them. Flex devices only, stride 1.
    pub fn forward_streaming(&self, x: Tensor<4>, budget_bytes: usize) -> Tensor<4> {
        assert_eq!(
            self.stride, 1,
            "the streaming kernel samples keys at stride 1"
        );
        let (query, keys, values, levels) = self.embedded(x.clone());
        let spec = self.spec(levels, budget_bytes);
        let pasted = fused_pyramid_attention(query, keys, values, spec);
        pasted.div_scalar(4.0) + x.mul_scalar(self.res_scale)
    }

    /// `f(x)` `[N, C/r, H, W]`, and `g(y^s)` `[N, C/r, L]`, `θ(y^s)` `[N, C, L]` of every
    /// level flattened and concatenated, with the levels' sizes: the maps the fused and
    /// chunked formulations start from (neither builds block columns).
    fn embedded(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<3>, Tensor<3>, Vec<(usize, usize)>) {
        let [n, channels, _, _] = x.dims();
        let query = basic_block(&self.conv_match_L_base, x.clone());
        let [_, match_channels, _, _] = query.dims();
        let mut sizes = Vec::with_capacity(self.scales.len());
        let mut keys = Vec::with_capacity(self.scales.len());
        let mut values = Vec::with_capacity(self.scales.len());
        for level in self.levels(x) {
            let [_, _, h, w] = level.dims();
            sizes.push((h, w));
            keys.push(basic_block(&self.conv_match, level.clone()).reshape([
                n,
                match_channels,
                h * w,
            ]));
            values.push(basic_block(&self.conv_assembly, level).reshape([n, channels, h * w]));
        }
        (query, Tensor::cat(keys, 2), Tensor::cat(values, 2), sizes)
    }

    /// What the fused and chunked formulations need to know beyond the tensors.
    fn spec(&self, levels: Vec<(usize, usize)>, budget_bytes: usize) -> AttentionSpec {
        AttentionSpec {
            levels,
            ksize: self.ksize,
            softmax_scale: self.softmax_scale as f32,
            escape: self.escape_NaN.val().into_scalar::<f32>(),
            normalisation: if self.average {
                Normalisation::Softmax
            } else {
                Normalisation::ArgMax
            },
            budget_bytes,
        }
    }

    /// The attention weights `[N, H*W, L]`: for each pixel (row-major), its weights over the
    /// blocks of all levels (level-major, then row-major block centres). Rows sum to 1 (soft)
    /// or hold the 0/1 arg-max mask (hard).
    pub fn attention_weights(&self, x: Tensor<4>) -> Tensor<3> {
        let pyramid = self.pyramid(x.clone());
        self.attention(x, &pyramid.keys)
    }

    /// The soft attention weights `[P, L]` of the chosen query pixels `(y, x)` only, over the
    /// blocks of all levels: what PANet's Fig. 8 draws. Costs one row of the score map per pixel,
    /// so it works on images of any size.
    pub fn attention_at(&self, x: Tensor<4>, pixels: &[(usize, usize)]) -> Tensor<2> {
        let [_, _, _, width] = x.dims();
        let pyramid = self.pyramid(x.clone());
        let query = extract_patches(basic_block(&self.conv_match_L_base, x), self.ksize, 1);
        let device = query.device();
        let index: Vec<i64> = pixels
            .iter()
            .map(|&(y, px)| (y * width + px) as i64)
            .collect();
        let index = Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(index, [pixels.len()]),
            &device,
        );
        let [_, dim, _] = query.dims();
        let chosen = query.select(2, index).reshape([dim, pixels.len()]);
        let [_, _, blocks] = pyramid.keys.dims();
        let keys = pyramid.keys.reshape([dim, blocks]);
        let scores = chosen
            .swap_dims(0, 1)
            .matmul(keys)
            .mul_scalar(self.softmax_scale);
        softmax(scores, 1)
    }

    /// The smallest input side whose every pyramid level keeps at least one pixel (2 for the
    /// paper's scales: `floor(1 * 0.9) = 0`).
    pub fn min_input_side(&self) -> usize {
        (1..)
            .find(|&n| self.level_sizes(n, n).iter().all(|&(h, _)| h > 0))
            .expect("scales are positive")
    }

    /// Sizes `(h, w)` of every pyramid level for an `height x width` input.
    pub fn level_sizes(&self, height: usize, width: usize) -> Vec<(usize, usize)> {
        self.scales
            .iter()
            .map(|&s| {
                if s == 1.0 {
                    (height, width)
                } else {
                    (
                        crate::ops::bicubic::scaled_len(height, s),
                        crate::ops::bicubic::scaled_len(width, s),
                    )
                }
            })
            .collect()
    }

    /// Eq. (5) and the softmax of eq. (4): `softmax_j(scale · f(x_{δ(i)})ᵀ ĝ(y_{δ(j)}))`.
    fn attention(&self, x: Tensor<4>, keys: &Tensor<3>) -> Tensor<3> {
        // f(x_{δ(i)}): query blocks at every pixel, [N, C/r * k², H*W].
        let query = extract_patches(basic_block(&self.conv_match_L_base, x), self.ksize, 1);
        // Scores laid out [N, H*W, L] so that the softmax runs over the last dimension.
        let scores = query
            .swap_dims(1, 2)
            .matmul(keys.clone())
            .mul_scalar(self.softmax_scale);
        self.normalise(scores)
    }

    /// Scores `[N, P, L]` to weights: the softmax over the last dimension, or (hard
    /// attention) the 0/1 mask of each row's maxima, with no gradient through it.
    fn normalise(&self, scores: Tensor<3>) -> Tensor<3> {
        let weights = softmax(scores, 2);
        if self.average {
            weights
        } else {
            let [n, pixels, blocks] = weights.dims();
            let best = weights.clone().max_dim(2).expand([n, pixels, blocks]);
            weights.equal(best).float().detach()
        }
    }

    /// The feature pyramid and its blocks: `y^s = bicubic(x, s)`, keys `ĝ(y^s)`, values
    /// `θ(y^s)`, concatenated over levels.
    fn pyramid(&self, x: Tensor<4>) -> Pyramid {
        let escape = self.escape_NaN.val().into_scalar::<f32>();
        let mut keys = Vec::with_capacity(self.scales.len());
        let mut values = Vec::with_capacity(self.scales.len());
        for level in self.levels(x) {
            values.push(extract_patches(
                basic_block(&self.conv_assembly, level.clone()),
                self.ksize,
                self.stride,
            ));
            keys.push(extract_patches(
                basic_block(&self.conv_match, level),
                self.ksize,
                self.stride,
            ));
        }
        let keys = Tensor::cat(keys, 2);
        let norms = keys.clone().square().sum_dim(1).sqrt().clamp_min(escape);
        Pyramid {
            keys: keys / norms,
            values: Tensor::cat(values, 2),
        }
    }

    /// The feature pyramid `{ y^s = bicubic(x, s) : s ∈ S }`, level 0 first.
    fn levels(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let [_, _, height, width] = x.dims();
        self.scales
            .iter()
            .zip(self.level_sizes(height, width))
            .map(|(&scale, (h, w))| {
                assert!(
                    h > 0 && w > 0,
                    "a {height}x{width} input is too small for the pyramid level at scale {scale}"
                );
                if scale == 1.0 {
                    x.clone()
                } else {
                    resize(x.clone(), scale, self.interp)
                }
            })
            .collect()
    }
}

/// The formulations of [`PyramidAttention::forward_global`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// [`PyramidAttention::forward_streaming`] (Flex only, key stride 1).
    Streaming,
    /// [`PyramidAttention::forward_whole`].
    Whole,
    /// [`PyramidAttention::forward_chunked`].
    Chunked,
}

impl Path {
    /// The formulation for `device`: `PYRA_ATTENTION` where it names one that applies, else
    /// the streaming kernel on Flex with key stride 1, else chunks (inference and training,
    /// soft and hard attention).
    pub fn for_device(device: &Device, stride: usize) -> Path {
        static FORCED: std::sync::OnceLock<Option<Path>> = std::sync::OnceLock::new();
        let forced = *FORCED.get_or_init(|| match std::env::var("PYRA_ATTENTION").ok()?.as_str() {
            "whole" => Some(Path::Whole),
            "chunked" => Some(Path::Chunked),
            "streaming" => Some(Path::Streaming),
            _ => None,
        });
        let streams = fused_attention::supports(device) && stride == 1;
        match forced {
            Some(Path::Streaming) if streams => return Path::Streaming,
            Some(path @ (Path::Whole | Path::Chunked)) => return path,
            _ => {}
        }
        if streams {
            Path::Streaming
        } else {
            Path::Chunked
        }
    }
}
