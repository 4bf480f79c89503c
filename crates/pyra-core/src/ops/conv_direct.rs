//! The register-blocked direct convolution behind [`super::conv_kernel::forward`] on CPUs with
//! AVX2 + FMA or AVX-512: no im2col matrix at all.
//!
//! A band of `R` output rows is computed from a zero-padded copy of its `R + 2P` input rows
//! (`P = dilation · k/2`), each row `Wp = W + 2P` wide, all channels: about half a MiB, so it
//! stays in the core's L2 cache. In that copy output pixel `(i, j)` reads tap `t` of channel
//! `ci` at `i·Wp + j + off[ci, t]`, one constant offset per (channel, tap), so each output row is
//! `out[co, j] = b[co] + Σ_k w[co, k] · in[i·Wp + j + off[k]]` over `k = (ci, t)`, written
//! straight into the output planes (the last vector of a row with a masked store).
//! The microkernel holds an `MR x (NV·lanes)` block of outputs in registers (AVX-512: 8
//! channels x 48 pixels = 24 zmm; AVX2: 4 x 24 = 12 ymm), and for each `k` loads `NV` vectors of
//! input pixels once and multiplies them with `MR` broadcast weights (packed `[k][MR]`, so they
//! are consecutive). The channels are taken in chunks whose input rows fit in L1 (16 KiB), the
//! first chunk starting from the bias and the others from the partial sums stored before.
//! The loops run chunk, then block of `MR` output channels, then the band's rows, so one
//! block's weights for a chunk (8 KiB) stay in L1 for the whole band instead of a 256-channel
//! layer's 2.4 MB of weights streaming from L3 for every output row.
//! The input gradient runs through the same kernel (the adjoint kernel's forward).
//!
//! Why by hand: no crate offers a convolution over burn Flex's buffers that avoids the im2col
//! matrix, and a GEMM crate cannot read the shifted rows in place (its packing copies them
//! again). Measured (Intel Xeon, AVX-512, 2 threads, 3x3 64->64 on 256x256): 24-38 ms, 49-75%
//! of the 256 GFLOP/s fp32 peak, against 46-55 ms for PyTorch/oneDNN and 83-103 ms for burn's
//! im2col + GEMM (the table in [`super::conv_kernel`]'s header).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::conv_kernel::ConvShape;

/// Bytes of input rows one tile reads per pass (L1 is 32-48 KiB).
const CHUNK_BYTES: usize = 16 * 1024;

/// The part of a register block that exists: `rows` channels, `last` lanes of its last vector.
#[derive(Clone, Copy)]
struct Tile {
    rows: usize,
    last: usize,
}

/// Which microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Avx512,
    Avx2,
}

impl Kernel {
    /// Output channels per register block.
    fn rows(self) -> usize {
        match self {
            Kernel::Avx512 => 8,
            Kernel::Avx2 => 4,
        }
    }
}

/// The weights `[Cout, Cin, k, k]` repacked as `[Cout / MR][Cin·k²][MR]` (channels padded
/// with zeros to a multiple of `MR`).
pub struct Packed {
    kernel: Kernel,
    weights: Vec<f32>,
    bias: Vec<f32>,
    blocks: usize,
    depth: usize,
    /// `k`s per pass over a tile: whole channels, about 16 KiB of their input rows.
    chunk: usize,
}

pub fn pack(kernel: Kernel, shape: &ConvShape, weight: &[f32], bias: Option<&[f32]>) -> Packed {
    let mr = kernel.rows();
    let depth = shape.channels_in * shape.ksize * shape.ksize;
    let blocks = shape.channels_out.div_ceil(mr);
    let mut weights = vec![0.0f32; blocks * depth * mr];
    for co in 0..shape.channels_out {
        let (block, r) = (co / mr, co % mr);
        for k in 0..depth {
            weights[(block * depth + k) * mr + r] = weight[co * depth + k];
        }
    }
    let mut padded_bias = vec![0.0f32; blocks * mr];
    if let Some(bias) = bias {
        padded_bias[..bias.len()].copy_from_slice(bias);
    }
    let taps = shape.ksize * shape.ksize;
    let tile_row_bytes = shape.ksize * (48 + 2 * shape.dilation * (shape.ksize / 2)) * 4;
    let channels = (CHUNK_BYTES / tile_row_bytes).clamp(1, shape.channels_in);
    Packed {
        kernel,
        weights,
        bias: padded_bias,
        blocks,
        depth,
        chunk: channels * taps,
    }
}

/// Per-thread buffers of one band.
#[derive(Default)]
pub struct BandBuffers {
    input: Vec<f32>,
    offsets: Vec<usize>,
}

/// Rows per band: about 2048 padded pixels, at least one row, and bands enough that every
/// worker thread gets four (a 48x48 PA-EDSR map would otherwise be one band on one core).
pub fn band_rows(shape: &ConvShape, workers: usize) -> usize {
    let pad = shape.dilation * (shape.ksize / 2);
    let by_size = (2048 / (shape.width + 2 * pad)).clamp(1, shape.height.max(1));
    let bands_wanted = (4 * workers).div_ceil(shape.batch.max(1));
    by_size.min(shape.height.div_ceil(bands_wanted).max(1))
}

/// Computes output rows `row0..row0 + rows` of one sample (`x`: its `[Cin, H, W]`) into `y`
/// (its `[Cout, H, W]`, only those rows written).
///
/// # Safety
/// `y` must point to this sample's `Cout·H·W` output floats, of which this call writes only
/// the rows of the band; the CPU must support `packed.kernel`.
pub unsafe fn band(
    shape: &ConvShape,
    packed: &Packed,
    x: &[f32],
    (row0, rows): (usize, usize),
    y: *mut f32,
    buffers: &mut BandBuffers,
) {
    let (h, w, k, d) = (shape.height, shape.width, shape.ksize, shape.dilation);
    let pad = d * (k / 2);
    let wp = w + 2 * pad;
    let padded_rows = rows + 2 * pad;
    // Each channel's region: its padded rows plus the over-read of the last vectors.
    let channel_stride = (padded_rows * wp + 2 * pad + 16).div_ceil(16) * 16;
    let cin = shape.channels_in;
    buffers.input.clear();
    buffers.input.resize(cin * channel_stride, 0.0);
    for ci in 0..cin {
        let plane = &x[ci * h * w..][..h * w];
        let region = &mut buffers.input[ci * channel_stride..][..padded_rows * wp];
        for pr in 0..padded_rows {
            let image_row = (row0 + pr) as isize - pad as isize;
            if image_row < 0 || image_row >= h as isize {
                continue;
            }
            region[pr * wp + pad..pr * wp + pad + w]
                .copy_from_slice(&plane[image_row as usize * w..][..w]);
        }
    }
    buffers.offsets.clear();
    for ci in 0..cin {
        for ky in 0..k {
            for kx in 0..k {
                buffers
                    .offsets
                    .push(ci * channel_stride + ky * d * wp + kx * d);
            }
        }
    }
    let input = buffers.input.as_ptr();
    let offsets = &buffers.offsets[..];
    let out = Output {
        y: y.add(row0 * w),
        plane: h * w,
        channels: shape.channels_out,
    };
    let geometry = (rows, w, wp);
    match packed.kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => rows_avx512(packed, offsets, input, out, geometry),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => rows_avx2(packed, offsets, input, out, geometry),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no x86 kernels on this architecture"),
    }
}

/// Where a row's outputs go: channel `c`, pixel `j` at `y[c·plane + j]`; channels at or past
/// `channels` (the zero padding of the last register block) are not stored.
#[derive(Clone, Copy)]
struct Output {
    y: *mut f32,
    plane: usize,
    channels: usize,
}

/// The arguments of one microkernel call.
struct TileCall<'a> {
    offsets: &'a [usize],
    input: *const f32,
    weights: *const f32,
    bias: Option<&'a [f32]>,
    out: Output,
    tile: Tile,
}

/// The band's output rows (`rows` of `w` pixels; input rows `wp` apart): for each chunk of
/// channels whose input rows stay in L1, each block of `mr` output channels, each row, tiles of
/// up to 3 vectors of `lanes` pixels (the last one masked to the row's end). The first chunk
/// starts from the bias, later ones add to the partial sums the one before stored. Rows are
/// inside the block loop so that one block's weights for a chunk (`chunk x mr` floats, 8 KiB)
/// serve every row of the band from L1: with the rows outside, a 256-channel layer streamed
/// all its 2.4 MB of weights from L3 for every output row. `kernel(vectors, call)` runs the
/// microkernel of this ISA; the loops here are control only (each call does a whole chunk of
/// `k`s).
unsafe fn rows(
    packed: &Packed,
    offsets: &[usize],
    input: *const f32,
    out: Output,
    (rows, w, wp): (usize, usize, usize),
    (mr, lanes): (usize, usize),
    kernel: impl Fn(usize, TileCall),
) {
    let mut k0 = 0;
    while k0 < packed.depth {
        let k1 = (k0 + packed.chunk).min(packed.depth);
        for block in 0..packed.blocks {
            let weights = packed
                .weights
                .as_ptr()
                .add((block * packed.depth + k0) * mr);
            let bias = (k0 == 0).then(|| &packed.bias[block * mr..][..mr]);
            let tile_rows = (out.channels - block * mr).min(mr);
            for i in 0..rows {
                let mut j = 0;
                while j < w {
                    let vectors = (w - j).div_ceil(lanes).min(3);
                    let last = (w - j - (vectors - 1) * lanes).min(lanes);
                    let call = TileCall {
                        offsets: &offsets[k0..k1],
                        input: input.add(i * wp + j),
                        weights,
                        bias,
                        out: Output {
                            y: out.y.add(block * mr * out.plane + i * w + j),
                            ..out
                        },
                        tile: Tile {
                            rows: tile_rows,
                            last,
                        },
                    };
                    kernel(vectors, call);
                    j += vectors * lanes;
                }
            }
        }
        k0 = k1;
    }
}

/// [`rows`] with the AVX-512 microkernel (8 channels x 16 lanes).
#[cfg(target_arch = "x86_64")]
unsafe fn rows_avx512(
    packed: &Packed,
    offsets: &[usize],
    input: *const f32,
    out: Output,
    geometry: (usize, usize, usize),
) {
    rows(
        packed,
        offsets,
        input,
        out,
        geometry,
        (8, 16),
        |vectors, c| {
            let TileCall {
                offsets,
                input,
                weights,
                bias,
                out,
                tile,
            } = c;
            match vectors {
                3 => tile_avx512::<3>(offsets, input, weights, bias, out, tile),
                2 => tile_avx512::<2>(offsets, input, weights, bias, out, tile),
                _ => tile_avx512::<1>(offsets, input, weights, bias, out, tile),
            }
        },
    )
}

/// [`rows`] with the AVX2 + FMA microkernel (4 channels x 8 lanes).
#[cfg(target_arch = "x86_64")]
unsafe fn rows_avx2(
    packed: &Packed,
    offsets: &[usize],
    input: *const f32,
    out: Output,
    geometry: (usize, usize, usize),
) {
    rows(
        packed,
        offsets,
        input,
        out,
        geometry,
        (4, 8),
        |vectors, c| {
            let TileCall {
                offsets,
                input,
                weights,
                bias,
                out,
                tile,
            } = c;
            match vectors {
                3 => tile_avx2::<3>(offsets, input, weights, bias, out, tile),
                2 => tile_avx2::<2>(offsets, input, weights, bias, out, tile),
                _ => tile_avx2::<1>(offsets, input, weights, bias, out, tile),
            }
        },
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_avx512<const NV: usize>(
    offsets: &[usize],
    input: *const f32,
    weights: *const f32,
    bias: Option<&[f32]>,
    out: Output,
    tile: Tile,
) {
    const MR: usize = 8;
    let mask: __mmask16 = if tile.last == 16 {
        0xffff
    } else {
        (1u16 << tile.last) - 1
    };
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        match bias {
            Some(bias) => *row = [_mm512_set1_ps(bias[r]); NV],
            None => {
                if r < tile.rows {
                    for (v, a) in row.iter_mut().enumerate() {
                        let p = out.y.add(r * out.plane + 16 * v);
                        *a = if v + 1 == NV {
                            _mm512_maskz_loadu_ps(mask, p)
                        } else {
                            _mm512_loadu_ps(p)
                        };
                    }
                }
            }
        }
    }
    for (k, &offset) in offsets.iter().enumerate() {
        let p = input.add(offset);
        let mut x = [_mm512_setzero_ps(); NV];
        for (v, xv) in x.iter_mut().enumerate() {
            *xv = _mm512_loadu_ps(p.add(16 * v));
        }
        let wk = weights.add(k * MR);
        for (r, row) in acc.iter_mut().enumerate() {
            let b = _mm512_set1_ps(*wk.add(r));
            for (a, xv) in row.iter_mut().zip(&x) {
                *a = _mm512_fmadd_ps(b, *xv, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(tile.rows) {
        for (v, a) in row.iter().enumerate() {
            let p = out.y.add(r * out.plane + 16 * v);
            if v + 1 == NV {
                _mm512_mask_storeu_ps(p, mask, *a);
            } else {
                _mm512_storeu_ps(p, *a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_avx2<const NV: usize>(
    offsets: &[usize],
    input: *const f32,
    weights: *const f32,
    bias: Option<&[f32]>,
    out: Output,
    tile: Tile,
) {
    const MR: usize = 4;
    let lanes: [i32; 8] = std::array::from_fn(|l| if l < tile.last { -1 } else { 0 });
    let mask = _mm256_loadu_si256(lanes.as_ptr() as *const __m256i);
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        match bias {
            Some(bias) => *row = [_mm256_set1_ps(bias[r]); NV],
            None => {
                if r < tile.rows {
                    for (v, a) in row.iter_mut().enumerate() {
                        let p = out.y.add(r * out.plane + 8 * v);
                        *a = if v + 1 == NV {
                            _mm256_maskload_ps(p, mask)
                        } else {
                            _mm256_loadu_ps(p)
                        };
                    }
                }
            }
        }
    }
    for (k, &offset) in offsets.iter().enumerate() {
        let p = input.add(offset);
        let mut x = [_mm256_setzero_ps(); NV];
        for (v, xv) in x.iter_mut().enumerate() {
            *xv = _mm256_loadu_ps(p.add(8 * v));
        }
        let wk = weights.add(k * MR);
        for (r, row) in acc.iter_mut().enumerate() {
            let b = _mm256_set1_ps(*wk.add(r));
            for (a, xv) in row.iter_mut().zip(&x) {
                *a = _mm256_fmadd_ps(b, *xv, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(tile.rows) {
        for (v, a) in row.iter().enumerate() {
            let p = out.y.add(r * out.plane + 8 * v);
            if v + 1 == NV {
                _mm256_maskstore_ps(p, mask, *a);
            } else {
                _mm256_storeu_ps(p, *a);
            }
        }
    }
}
