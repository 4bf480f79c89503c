//! Stride-1 "same" convolutions (odd `k x k` kernels, any dilation, with bias) forward and
//! backward, over plain `f32` slices in NCHW layout: the 3x3 and 1x1 convolutions that make up
//! almost all of PANet, PA-EDSR, EDSR, RDN, MemNet, PNEN and DnCNN.
//!
//! ## Algorithms
//!
//! - forward and input gradient on CPUs with AVX2 + FMA or AVX-512: the register-blocked direct
//!   convolution of [`super::conv_direct`] (no im2col; the measured winner, see below);
//! - elsewhere (the baseline ISA), and for the weight gradient: banded im2col + GEMM.
//!
//! Banded im2col + GEMM: the output is cut into bands of whole image rows (about
//! [`BAND_COLUMNS`] pixels each). For a band, the `Cin·k²` shifted copies of its input rows (zero outside the image: the padding)
//! are laid out as a `[Cin·k², pixels]` matrix that stays in the core's L2 cache, and one GEMM
//! `W [Cout, Cin·k²] · cols` writes the band of every output plane in place (the output's row
//! stride is the plane, so no copy follows). A 1x1 convolution needs no copy at all: the GEMM
//! reads the input planes directly. Bands of every sample run in parallel; each GEMM is one
//! thread's.
//!
//! - input gradient: the adjoint of a stride-1 "same" convolution is the same convolution with
//!   the kernel flipped and its two channel axes swapped, so it runs through the forward;
//! - weight gradient: `dWᵀ += cols_band · dY_bandᵀ` (`[Cin·k², pixels] · [pixels, Cout]`), per worker over a fixed
//!   split of the bands, summed in a fixed order (bit-reproducible for a given thread count);
//! - bias gradient: per-channel sums of `dY` in f64.
//!
//! ## Why by hand
//!
//! burn's Flex convolution materialises the whole im2col matrix (`Cin·k²·H·W` floats: 150 MB
//! for a 64-channel 256x256 map, far outside any cache) before its GEMM, and its backward does
//! the same twice. No crate offers a cache-blocked convolution on Flex's buffers; the GEMM
//! itself stays the `gemm` crate's (its AVX-512 or AVX2 microkernels, chosen at run time), so
//! what is written here is the banding, the im2col of one band, and the reductions.
//!
//! ## Measured
//!
//! Intel Xeon (family 6, model 167, AVX-512), 2 threads, fp32 peak 256 GFLOP/s (a hand-written
//! FMA loop reaches 260), 3x3 conv 64->64 on `[1,64,256,256]` (4.83 GFLOP), `pyra bench-speed
//! --torch python3 --only conv3x3-256,conv3x3-train`:
//!
//! | path | forward | fraction of peak | forward + both gradients, `[16,64,48,48]` |
//! |---|---:|---:|---:|
//! | direct AVX-512 kernel (this file's forward) | 24-38 ms | 49-75% | 72-105 ms |
//! | direct AVX2 kernel (`PYRA_ISA=avx2`) | 80-102 ms | 37-47% of the AVX2 peak (128) | - |
//! | burn Flex im2col + GEMM (`PYRA_CONV=burn`) | 83-103 ms | 18-23% | 185-215 ms |
//! | PyTorch 2.15 / oneDNN | 46-55 ms | 35-41% | 69-88 ms |
//!
//! The weight gradient (GEMMs through `gemm`, with the packing of the im2col band) is the
//! slowest of the three parts; ranges are over runs on one machine, whose load varied.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::conv_direct;
use super::isa::{self, Isa};

/// Pixels of one band: the im2col of a 64-channel 3x3 band is then `576 x 1024` floats
/// (2.25 MiB), which with the GEMM's packed panels stays in a 2 MiB-per-core L2 cache.
pub const BAND_COLUMNS: usize = 256;

/// Pixels of one band of the weight gradient, whose GEMMs sum over the band's pixels: longer
/// bands mean fewer passes over the `[Cout, Cin·k²]` accumulator.
pub const WEIGHT_BAND_COLUMNS: usize = 2048;

/// The geometry of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub channels_in: usize,
    pub channels_out: usize,
    pub height: usize,
    pub width: usize,
    /// Kernel side (odd).
    pub ksize: usize,
    /// Dilation; the zero padding is `dilation * (ksize / 2)` on every side.
    pub dilation: usize,
}

impl ConvShape {
    fn plane(&self) -> usize {
        self.height * self.width
    }

    fn taps(&self) -> usize {
        self.ksize * self.ksize
    }

    /// Rows of the GEMM's inner dimension: `Cin·k²`.
    fn depth(&self) -> usize {
        self.channels_in * self.taps()
    }

    /// Multiply-adds x 2 of the forward.
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.channels_out * self.depth() * self.plane()) as f64
    }

    /// The shape of the input-gradient convolution (channels swapped).
    fn transposed(&self) -> ConvShape {
        ConvShape {
            channels_in: self.channels_out,
            channels_out: self.channels_in,
            ..*self
        }
    }

    /// Row bands `(first row, rows)` of about `columns` pixels covering the image.
    fn bands(&self, columns: usize) -> Vec<(usize, usize)> {
        self.bands_of_rows((columns / self.width.max(1)).clamp(1, self.height.max(1)))
    }

    /// The work items: every band of every sample, `(sample, band)`.
    fn items(&self, bands: &[(usize, usize)]) -> Vec<(usize, (usize, usize))> {
        (0..self.batch)
            .flat_map(|s| bands.iter().map(move |&band| (s, band)))
            .collect()
    }

    /// Row bands `(first row, rows)` of `rows` rows (the last one shorter) covering the image.
    fn bands_of_rows(&self, rows: usize) -> Vec<(usize, usize)> {
        (0..self.height)
            .step_by(rows)
            .map(|r0| (r0, rows.min(self.height - r0)))
            .collect()
    }

    fn check(&self, x: &[f32], weight: &[f32]) {
        assert!(self.ksize % 2 == 1, "odd kernels only, got {}", self.ksize);
        assert!(self.dilation >= 1, "dilation must be at least 1");
        assert_eq!(
            x.len(),
            self.batch * self.channels_in * self.plane(),
            "input size"
        );
        assert_eq!(
            weight.len(),
            self.channels_out * self.depth(),
            "weight size"
        );
    }
}

/// A pointer that may be shared by the workers writing disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every user writes only the elements of its own band (disjoint per work item).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`, which is `Sync`).
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// `cols[(ci·k² + t), j]` = the input pixel that tap `t` of output pixel `j` of the band reads
/// (0 outside the image): the band's im2col, `[Cin·k², rows·W]`.
fn im2col(shape: &ConvShape, x: &[f32], (row0, rows): (usize, usize), cols: &mut Vec<f32>) {
    let (h, w, k, d) = (shape.height, shape.width, shape.ksize, shape.dilation);
    let r = (k / 2) as isize;
    let n = rows * w;
    cols.clear();
    cols.resize(shape.depth() * n, 0.0);
    for ci in 0..shape.channels_in {
        let plane = &x[ci * h * w..][..h * w];
        for ky in 0..k {
            let dy = (ky as isize - r) * d as isize;
            for kx in 0..k {
                let dx = (kx as isize - r) * d as isize;
                let row = &mut cols[((ci * k + ky) * k + kx) * n..][..n];
                // Output columns j whose source column j + dx lies inside the image.
                let lo = (-dx).clamp(0, w as isize) as usize;
                let hi = (w as isize - dx).clamp(lo as isize, w as isize) as usize;
                for i in 0..rows {
                    let iy = (row0 + i) as isize + dy;
                    if iy < 0 || iy >= h as isize || lo == hi {
                        continue; // stays 0
                    }
                    let src = &plane[iy as usize * w..][..w];
                    let from = (lo as isize + dx) as usize;
                    row[i * w + lo..i * w + hi].copy_from_slice(&src[from..from + (hi - lo)]);
                }
            }
        }
    }
}

/// `y = conv(x, weight) + bias` for `x` `[N, Cin, H, W]`, `weight` `[Cout, Cin, k, k]`
/// (PyTorch's layout), `bias` `[Cout]`; returns `[N, Cout, H, W]`.
/// The kernel is the direct one of [`conv_direct`] where the CPU has AVX2 or AVX-512 (as
/// `ops::isa` allows), the banded im2col + GEMM elsewhere.
pub fn forward(shape: &ConvShape, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    forward_with(isa::isa(), shape, x, weight, bias)
}

/// [`forward`] with the kernel of `level` (which the CPU must have).
fn forward_with(
    level: Isa,
    shape: &ConvShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    shape.check(x, weight);
    assert!(
        level <= isa::detected(),
        "{level:?} is not available on this CPU"
    );
    match level {
        Isa::Avx512 => forward_direct(conv_direct::Kernel::Avx512, shape, x, weight, bias),
        Isa::Avx2 => forward_direct(conv_direct::Kernel::Avx2, shape, x, weight, bias),
        Isa::Baseline => forward_gemm(shape, x, weight, bias),
    }
}

fn forward_direct(
    kernel: conv_direct::Kernel,
    shape: &ConvShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (cin, cout, plane) = (shape.channels_in, shape.channels_out, shape.plane());
    let packed = conv_direct::pack(kernel, shape, weight, bias);
    let len = shape.batch * cout * plane;
    let mut y: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: the bands below write every row of every output plane of every sample before
    // `y` is read (f32 has no invalid bit patterns either way).
    #[allow(clippy::uninit_vec)]
    unsafe {
        y.set_len(len)
    };
    let out = Shared(y.as_mut_ptr());
    let items = shape
        .items(&shape.bands_of_rows(conv_direct::band_rows(shape, rayon::current_num_threads())));
    items
        .par_iter()
        .for_each_init(conv_direct::BandBuffers::default, |buffers, &(s, band)| {
            let input = &x[s * cin * plane..][..cin * plane];
            // SAFETY: each item writes only its band's rows of its sample; `isa()` chose a
            // kernel the CPU has.
            unsafe {
                conv_direct::band(
                    shape,
                    &packed,
                    input,
                    band,
                    out.ptr().add(s * cout * plane),
                    buffers,
                )
            };
        });
    y
}

/// The banded im2col + GEMM forward (the baseline path).
fn forward_gemm(shape: &ConvShape, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (cin, cout, plane) = (shape.channels_in, shape.channels_out, shape.plane());
    let mut y = vec![0.0f32; shape.batch * cout * plane];
    let out = Shared(y.as_mut_ptr());
    let items = shape.items(&shape.bands(BAND_COLUMNS));
    items
        .par_iter()
        .for_each_init(Vec::new, |cols, &(s, (row0, rows))| {
            let input = &x[s * cin * plane..][..cin * plane];
            let (start, n) = (row0 * shape.width, rows * shape.width);
            // The band of every output plane: `cout` rows of `n`, `plane` apart.
            let dst = unsafe { out.ptr().add(s * cout * plane + start) };
            if let Some(bias) = bias {
                for (co, &b) in bias.iter().enumerate() {
                    // SAFETY: row `co` of this sample's band, inside `y`, written by this item only.
                    let row = unsafe { std::slice::from_raw_parts_mut(dst.add(co * plane), n) };
                    row.fill(b);
                }
            }
            let (rhs, rhs_rs): (&[f32], usize) = if shape.taps() == 1 {
                (&input[start..], plane)
            } else {
                im2col(shape, input, (row0, rows), cols);
                (cols.as_slice(), n)
            };
            // SAFETY: dst covers rows `co * plane + j` (j < n) of this band only; lhs is
            // `[cout, depth]` contiguous; rhs has `depth` rows of `n` at stride `rhs_rs`.
            unsafe {
                gemm(
                    cout,
                    n,
                    shape.depth(),
                    dst,
                    1,
                    plane as isize,
                    bias.is_some(),
                    weight.as_ptr(),
                    1,
                    shape.depth() as isize,
                    rhs.as_ptr(),
                    1,
                    rhs_rs as isize,
                    if bias.is_some() { 1.0 } else { 0.0 },
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        });
    y
}

/// The flipped, channel-swapped kernel `[Cin, Cout, k, k]` whose forward is the adjoint.
fn adjoint_weight(shape: &ConvShape, weight: &[f32]) -> Vec<f32> {
    let (cin, cout, taps) = (shape.channels_in, shape.channels_out, shape.taps());
    let mut flipped = vec![0.0f32; weight.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for t in 0..taps {
                flipped[(ci * cout + co) * taps + (taps - 1 - t)] =
                    weight[(co * cin + ci) * taps + t];
            }
        }
    }
    flipped
}

/// The gradients of [`forward`] with respect to its input, weight and bias, given the output's
/// gradient `dy` `[N, Cout, H, W]`.
pub struct ConvGradients {
    pub input: Vec<f32>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// `dx` only: the forward of the adjoint kernel over `dy`.
pub fn backward_input(shape: &ConvShape, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    forward(
        &shape.transposed(),
        dy,
        &adjoint_weight(shape, weight),
        None,
    )
}

/// `dW` `[Cout, Cin, k, k]` and `db` `[Cout]`.
pub fn backward_weight(shape: &ConvShape, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (cin, cout, plane, depth) = (
        shape.channels_in,
        shape.channels_out,
        shape.plane(),
        shape.depth(),
    );
    assert_eq!(dy.len(), shape.batch * cout * plane, "output gradient size");
    let items = shape.items(&shape.bands(WEIGHT_BAND_COLUMNS));
    // A fixed split of the items into one contiguous group per worker.
    let groups = rayon::current_num_threads().clamp(1, items.len().max(1));
    let per_group = items.len().div_ceil(groups);
    let partials: Vec<Vec<f32>> = items
        .par_chunks(per_group.max(1))
        .map(|group| {
            let mut grad = vec![0.0f32; cout * depth];
            let mut cols = Vec::new();
            for &(s, (row0, rows)) in group {
                let input = &x[s * cin * plane..][..cin * plane];
                let grad_out = &dy[s * cout * plane..][..cout * plane];
                let (start, n) = (row0 * shape.width, rows * shape.width);
                // rhs[j, kk] = cols[kk, j]: `n x depth`, row stride 1, column stride `n`
                // (or the input planes' `plane` for 1x1).
                let (rhs, rhs_cs): (&[f32], usize) = if shape.taps() == 1 {
                    (&input[start..], plane)
                } else {
                    im2col(shape, input, (row0, rows), &mut cols);
                    (cols.as_slice(), n)
                };
                // dWᵀ [depth, cout] += cols [depth, n] · dyᵀ [n, cout] (M = depth is the long
                // side, which suits the microkernel's register block).
                // SAFETY: lhs is `depth x n` (row stride `rhs_cs`, column stride 1) inside
                // `cols` or the input planes; rhs is `n x cout` (row stride 1, column stride
                // `plane`) inside this sample's dy; dst is the `cout x depth` accumulator read
                // transposed.
                unsafe {
                    gemm(
                        depth,
                        cout,
                        n,
                        grad.as_mut_ptr(),
                        depth as isize,
                        1,
                        true,
                        rhs.as_ptr(),
                        1,
                        rhs_cs as isize,
                        grad_out[start..].as_ptr(),
                        plane as isize,
                        1,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
            grad
        })
        .collect();
    let mut grad_weight = vec![0.0f32; cout * depth];
    for partial in &partials {
        for (g, p) in grad_weight.iter_mut().zip(partial) {
            *g += p;
        }
    }
    let grad_bias: Vec<f32> = (0..cout)
        .into_par_iter()
        .map(|co| {
            (0..shape.batch)
                .map(|s| {
                    dy[(s * cout + co) * plane..][..plane]
                        .iter()
                        .map(|&v| v as f64)
                        .sum::<f64>()
                })
                .sum::<f64>() as f32
        })
        .collect();
    (grad_weight, grad_bias)
}

/// Every gradient of [`forward`].
pub fn backward(shape: &ConvShape, x: &[f32], weight: &[f32], dy: &[f32]) -> ConvGradients {
    shape.check(x, weight);
    let input = backward_input(shape, weight, dy);
    let (weight, bias) = backward_weight(shape, x, dy);
    ConvGradients {
        input,
        weight,
        bias,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, in f64: `y[co, i, j] = b[co] + Σ w[co, ci, ky, kx] x[ci, i+dy, j+dx]`.
    fn direct(shape: &ConvShape, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
        let (h, wd, k, d) = (shape.height, shape.width, shape.ksize, shape.dilation);
        let r = (k / 2) as isize;
        let mut y = vec![0.0f64; shape.batch * shape.channels_out * h * wd];
        for s in 0..shape.batch {
            for co in 0..shape.channels_out {
                for i in 0..h {
                    for j in 0..wd {
                        let mut acc = b[co] as f64;
                        for ci in 0..shape.channels_in {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = i as isize + (ky as isize - r) * d as isize;
                                    let jx = j as isize + (kx as isize - r) * d as isize;
                                    if iy < 0 || jx < 0 || iy >= h as isize || jx >= wd as isize {
                                        continue;
                                    }
                                    let xv = x[((s * shape.channels_in + ci) * h + iy as usize)
                                        * wd
                                        + jx as usize];
                                    let wv = w[((co * shape.channels_in + ci) * k + ky) * k + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((s * shape.channels_out + co) * h + i) * wd + j] = acc;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn shapes() -> Vec<ConvShape> {
        let base = ConvShape {
            batch: 2,
            channels_in: 3,
            channels_out: 5,
            height: 7,
            width: 9,
            ksize: 3,
            dilation: 1,
        };
        vec![
            base,
            ConvShape { ksize: 1, ..base },
            // More output channels than one register block, and a partial block.
            ConvShape {
                channels_out: 19,
                channels_in: 4,
                ..base
            },
            // A row longer than several vector tiles.
            ConvShape {
                width: 70,
                height: 3,
                ..base
            },
            ConvShape {
                dilation: 2,
                ..base
            },
            ConvShape {
                dilation: 4,
                height: 5,
                ..base
            },
            ConvShape { ksize: 5, ..base },
            // Bands of several rows, and a band shorter than the others.
            ConvShape {
                height: 300,
                width: 7,
                batch: 1,
                ..base
            },
            ConvShape {
                height: 1,
                width: 1,
                ..base
            },
        ]
    }

    /// Every kernel this CPU can run (the direct AVX-512 and AVX2 ones, the GEMM baseline).
    fn levels() -> Vec<Isa> {
        let levels: Vec<Isa> = [Isa::Baseline, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&l| l <= isa::detected())
            .collect();
        if isa::detected() < Isa::Avx512 {
            println!(
                "SKIPPED: the AVX-512 kernel (this CPU has {})",
                isa::detected().name()
            );
        }
        levels
    }

    #[test]
    fn forward_is_the_definition() {
        for level in levels() {
            for shape in shapes() {
                let x = values(shape.batch * shape.channels_in * shape.plane(), 1);
                let w = values(shape.channels_out * shape.depth(), 2);
                let b = values(shape.channels_out, 3);
                let reference = direct(&shape, &x, &w, &b);
                for bias in [Some(&b[..]), None] {
                    let ours = forward_with(level, &shape, &x, &w, bias);
                    let expected: Vec<f64> = match bias {
                        Some(_) => reference.clone(),
                        None => direct(&shape, &x, &w, &vec![0.0; shape.channels_out]),
                    };
                    for (o, r) in ours.iter().zip(&expected) {
                        assert!(
                            (*o as f64 - r).abs() < 1e-5,
                            "{level:?} {shape:?}: {o} vs {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn input_gradient_of_every_kernel() {
        for level in levels() {
            for shape in shapes() {
                let x = values(shape.batch * shape.channels_in * shape.plane(), 4);
                let w = values(shape.channels_out * shape.depth(), 5);
                let dy = values(shape.batch * shape.channels_out * shape.plane(), 6);
                let ours = forward_with(
                    level,
                    &shape.transposed(),
                    &dy,
                    &adjoint_weight(&shape, &w),
                    None,
                );
                let (dx, _) = direct_gradients(&shape, &x, &w, &dy);
                for (o, r) in ours.iter().zip(&dx) {
                    assert!(
                        (*o as f64 - r).abs() < 1e-4,
                        "{level:?} {shape:?}: {o} vs {r}"
                    );
                }
            }
        }
    }

    /// The gradients of the definition's sum, term by term in f64: each term
    /// `w[co, ci, t] x[ci, p + o_t]` of `y[co, p]` sends `dy[co, p] w` to `dx[ci, p + o_t]` and
    /// `dy[co, p] x[ci, p + o_t]` to `dw[co, ci, t]`.
    fn direct_gradients(
        shape: &ConvShape,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let (h, wd, k, d) = (shape.height, shape.width, shape.ksize, shape.dilation);
        let (cin, cout) = (shape.channels_in, shape.channels_out);
        let r = (k / 2) as isize;
        let mut dx = vec![0.0f64; x.len()];
        let mut dw = vec![0.0f64; w.len()];
        for s in 0..shape.batch {
            for co in 0..cout {
                for i in 0..h {
                    for j in 0..wd {
                        let g = dy[((s * cout + co) * h + i) * wd + j] as f64;
                        for ci in 0..cin {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = i as isize + (ky as isize - r) * d as isize;
                                    let jx = j as isize + (kx as isize - r) * d as isize;
                                    if iy < 0 || jx < 0 || iy >= h as isize || jx >= wd as isize {
                                        continue;
                                    }
                                    let xi = ((s * cin + ci) * h + iy as usize) * wd + jx as usize;
                                    let wi = ((co * cin + ci) * k + ky) * k + kx;
                                    dx[xi] += g * w[wi] as f64;
                                    dw[wi] += g * x[xi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        (dx, dw)
    }

    #[test]
    fn gradients_are_the_definitions() {
        for shape in shapes() {
            let x = values(shape.batch * shape.channels_in * shape.plane(), 4);
            let w = values(shape.channels_out * shape.depth(), 5);
            let dy = values(shape.batch * shape.channels_out * shape.plane(), 6);
            let grads = backward(&shape, &x, &w, &dy);
            let (dx, dw) = direct_gradients(&shape, &x, &w, &dy);
            for (i, (o, r)) in grads.input.iter().zip(&dx).enumerate() {
                assert!(
                    (*o as f64 - r).abs() < 1e-4,
                    "{shape:?} dx[{i}]: {o} vs {r}"
                );
            }
            for (i, (o, r)) in grads.weight.iter().zip(&dw).enumerate() {
                assert!(
                    (*o as f64 - r).abs() < 1e-3 * r.abs().max(1.0),
                    "{shape:?} dw[{i}]: {o} vs {r}"
                );
            }
            for co in 0..shape.channels_out {
                let expected: f64 = (0..shape.batch)
                    .flat_map(|s| {
                        let p = shape.plane();
                        dy[(s * shape.channels_out + co) * p..][..p].to_vec()
                    })
                    .map(|v| v as f64)
                    .sum();
                assert!(
                    (grads.bias[co] as f64 - expected).abs() < 1e-4,
                    "{shape:?} db[{co}]"
                );
            }
        }
    }
}
