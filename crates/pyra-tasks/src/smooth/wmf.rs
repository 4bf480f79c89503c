//! Weighted median filter (Zhang, Xu, Jia, "100+ Times Faster Weighted Median Filter", CVPR
//! 2014), one of the three filters PNEN learns to imitate.
//!
//! Each output pixel is the weighted median of the source values in the `(2r+1)²` window
//! around it (clipped at the image border), a neighbour `q` of the centre `p` weighing
//! `w(p, q) = exp(-|F_p - F_q|² / (2σ²))` for the guide `F` (the source itself by default).
//! The median is the smallest value `m` whose weight from below reaches the weight above:
//! `Σ_{I_q ≤ m} w ≥ Σ_{I_q > m} w`.
//!
//! The joint-histogram algorithm of the paper, not a sort per pixel: the window's pixels are
//! counted in a histogram over (source value, guide index); sliding down a column adds one row
//! and removes one; a balance-count box (BCB) holds, per guide index, the pixels at or below
//! the current cut minus those above it, so the balance at a pixel is one dot product with
//! that pixel's weight row and the cut moves a few values per pixel. Sparse lists of the
//! non-empty cells (the paper's "necklace tables") keep both sums proportional to what the
//! window holds rather than to 256.
//!
//! Guide indices: a gray guide uses its 256 values. A colour guide is clustered, as in the
//! paper: its colours, reduced to 6 bits per channel, are grouped into at most 256 clusters
//! by k-means (k-means++ seeding from a fixed seed, weighted by pixel count), and distances
//! are taken between cluster centres, with σ scaled to the 6-bit range. OpenCV does the same
//! but with its own k-means (unweighted, its own random generator), so colour-guided outputs
//! differ from OpenCV's by the clustering; gray-guided outputs are the same.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::image::{round_u8, Image};

/// Parameters of [`weighted_median`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WmfOptions {
    /// Window radius (PNEN: 10).
    pub radius: usize,
    /// Range standard deviation on the guide's 0-255 scale.
    pub sigma: f64,
}

impl Default for WmfOptions {
    fn default() -> Self {
        Self {
            radius: 10,
            sigma: 50.0,
        }
    }
}

/// A set of small integers with O(1) insert/remove and iteration over its members (the
/// paper's necklace table).
#[derive(Clone)]
struct SparseSet {
    members: Vec<u16>,
    position: Vec<u32>,
}

const ABSENT: u32 = u32::MAX;

impl SparseSet {
    fn new(capacity: usize) -> Self {
        Self {
            members: Vec::with_capacity(capacity),
            position: vec![ABSENT; capacity],
        }
    }
    fn insert(&mut self, v: usize) {
        if self.position[v] == ABSENT {
            self.position[v] = self.members.len() as u32;
            self.members.push(v as u16);
        }
    }
    fn remove(&mut self, v: usize) {
        let at = self.position[v];
        if at != ABSENT {
            let last = *self.members.last().expect("non-empty");
            self.members.swap_remove(at as usize);
            if last as usize != v {
                self.position[last as usize] = at;
            }
            self.position[v] = ABSENT;
        }
    }
    fn clear(&mut self) {
        for &m in &self.members {
            self.position[m as usize] = ABSENT;
        }
        self.members.clear();
    }
}

/// Guide indices per pixel and the weight between every pair of indices.
struct Guide {
    index: Vec<u16>,
    count: usize,
    weights: Vec<f32>,
}

fn gray_guide(plane: &[f32], sigma: f64) -> Guide {
    let divider = 1.0 / (2.0 * sigma * sigma);
    let mut weights = vec![0.0f32; 256 * 256];
    for i in 0..256 {
        for j in 0..256 {
            let d = i as f64 - j as f64;
            weights[i * 256 + j] = (-(d * d) * divider).exp() as f32;
        }
    }
    Guide {
        index: plane.iter().map(|&v| round_u8(v) as u16).collect(),
        count: 256,
        weights,
    }
}

fn colour_guide(image: &Image, sigma: f64) -> Guide {
    const LEVELS: usize = 64;
    let n = image.width * image.height;
    let cell_of = |i: usize| -> usize {
        let c = |k: usize| (round_u8(image.plane(k)[i]) >> 2) as usize;
        (c(0) * LEVELS + c(1)) * LEVELS + c(2)
    };
    let mut population = vec![0u32; LEVELS * LEVELS * LEVELS];
    let cells: Vec<usize> = (0..n).map(cell_of).collect();
    for &c in &cells {
        population[c] += 1;
    }
    let occupied: Vec<usize> = (0..population.len())
        .filter(|&c| population[c] > 0)
        .collect();
    let point = |c: usize| -> [f64; 3] {
        [
            (c / (LEVELS * LEVELS)) as f64,
            (c / LEVELS % LEVELS) as f64,
            (c % LEVELS) as f64,
        ]
    };
    let distance = |a: [f64; 3], b: [f64; 3]| {
        (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
    };
    let k = occupied.len().min(256);
    // k-means++ seeding, weighted by pixel count, from a fixed seed.
    let mut rng = ChaCha8Rng::seed_from_u64(0x574D46);
    let total: f64 = occupied.iter().map(|&c| population[c] as f64).sum();
    let mut centres: Vec<[f64; 3]> = Vec::with_capacity(k);
    let mut pick = rng.random_range(0.0..total);
    for &c in &occupied {
        pick -= population[c] as f64;
        if pick < 0.0 {
            centres.push(point(c));
            break;
        }
    }
    if centres.is_empty() {
        centres.push(point(occupied[0]));
    }
    let mut nearest: Vec<f64> = occupied
        .iter()
        .map(|&c| distance(point(c), centres[0]))
        .collect();
    while centres.len() < k {
        let mass: f64 = occupied
            .iter()
            .zip(&nearest)
            .map(|(&c, d)| population[c] as f64 * d)
            .sum();
        let mut chosen = occupied.len() - 1;
        if mass > 0.0 {
            let mut pick = rng.random_range(0.0..mass);
            for (i, (&c, d)) in occupied.iter().zip(&nearest).enumerate() {
                pick -= population[c] as f64 * d;
                if pick < 0.0 {
                    chosen = i;
                    break;
                }
            }
        }
        let centre = point(occupied[chosen]);
        centres.push(centre);
        for (i, &c) in occupied.iter().enumerate() {
            nearest[i] = nearest[i].min(distance(point(c), centre));
        }
    }
    // Lloyd iterations, weighted by pixel count.
    let mut label = vec![0usize; occupied.len()];
    for _ in 0..100 {
        let mut changed = false;
        for (i, &c) in occupied.iter().enumerate() {
            let p = point(c);
            let best = (0..k)
                .min_by(|&a, &b| distance(p, centres[a]).total_cmp(&distance(p, centres[b])))
                .expect("k >= 1");
            if best != label[i] {
                label[i] = best;
                changed = true;
            }
        }
        let mut sums = vec![[0.0f64; 4]; k];
        for (i, &c) in occupied.iter().enumerate() {
            let (p, m) = (point(c), population[c] as f64);
            let s = &mut sums[label[i]];
            s[0] += p[0] * m;
            s[1] += p[1] * m;
            s[2] += p[2] * m;
            s[3] += m;
        }
        for (centre, s) in centres.iter_mut().zip(&sums) {
            if s[3] > 0.0 {
                *centre = [s[0] / s[3], s[1] / s[3], s[2] / s[3]];
            }
        }
        if !changed {
            break;
        }
    }
    let mut index_of_cell = vec![0u16; population.len()];
    for (i, &c) in occupied.iter().enumerate() {
        index_of_cell[c] = label[i] as u16;
    }
    let scaled = sigma / 256.0 * LEVELS as f64;
    let divider = 1.0 / (2.0 * scaled * scaled);
    let mut weights = vec![0.0f32; k * k];
    for i in 0..k {
        for j in 0..k {
            weights[i * k + j] = (-distance(centres[i], centres[j]) * divider).exp() as f32;
        }
    }
    Guide {
        index: cells.iter().map(|&c| index_of_cell[c]).collect(),
        count: k,
        weights,
    }
}

/// Weighted-median-filter one 8-bit plane (values 0..=255) with `guide`.
fn filter_plane(source: &[u8], guide: &Guide, width: usize, height: usize, r: usize) -> Vec<u8> {
    const VALUES: usize = 256;
    let nf = guide.count;
    let mut out = vec![0u8; width * height];
    // Joint histogram [value][guide index], its non-empty cells per value, the balance box.
    let mut histogram = vec![0i32; VALUES * nf];
    let mut cells: Vec<SparseSet> = vec![SparseSet::new(nf); VALUES];
    let mut balance_count = vec![0i32; nf];
    let mut balance_cells = SparseSet::new(nf);
    for x in 0..width {
        histogram.iter_mut().for_each(|h| *h = 0);
        cells.iter_mut().for_each(SparseSet::clear);
        balance_count.iter_mut().for_each(|b| *b = 0);
        balance_cells.clear();
        // Cut point: values <= cut are "below"; -1 = nothing below.
        let mut cut: i32 = -1;
        let x0 = x.saturating_sub(r);
        let x1 = (x + r).min(width - 1);
        let add = |y: usize,
                   sign: i32,
                   cut: i32,
                   histogram: &mut [i32],
                   cells: &mut [SparseSet],
                   balance_count: &mut [i32],
                   balance_cells: &mut SparseSet| {
            for xx in x0..=x1 {
                let i = y * width + xx;
                let v = source[i] as usize;
                let f = guide.index[i] as usize;
                let h = &mut histogram[v * nf + f];
                *h += sign;
                if *h == 0 {
                    cells[v].remove(f);
                } else {
                    cells[v].insert(f);
                }
                let below = if (v as i32) <= cut { 1 } else { -1 };
                balance_count[f] += sign * below;
                if balance_count[f] == 0 {
                    balance_cells.remove(f);
                } else {
                    balance_cells.insert(f);
                }
            }
        };
        for y in 0..=r.min(height - 1) {
            add(
                y,
                1,
                cut,
                &mut histogram,
                &mut cells,
                &mut balance_count,
                &mut balance_cells,
            );
        }
        for y in 0..height {
            let centre = guide.index[y * width + x] as usize;
            let w = &guide.weights[centre * nf..][..nf];
            let mut balance: f32 = balance_cells
                .members
                .iter()
                .map(|&f| balance_count[f as usize] as f32 * w[f as usize])
                .sum();
            let mut shift = |value: usize, sign: i32, balance_count: &mut [i32]| -> f32 {
                let mut moved = 0.0f32;
                for &f in &cells[value].members {
                    let f = f as usize;
                    let n = histogram[value * nf + f];
                    moved += (2 * n) as f32 * w[f];
                    balance_count[f] += sign * 2 * n;
                    if balance_count[f] == 0 {
                        balance_cells.remove(f);
                    } else {
                        balance_cells.insert(f);
                    }
                }
                moved
            };
            if balance >= 0.0 {
                // Too much weight below: move the cut down.
                while balance >= 0.0 && cut >= 0 {
                    balance -= shift(cut as usize, -1, &mut balance_count);
                    cut -= 1;
                }
            } else {
                while balance < 0.0 && cut < VALUES as i32 - 1 {
                    balance += shift((cut + 1) as usize, 1, &mut balance_count);
                    cut += 1;
                }
            }
            // The smallest value whose weight from below reaches the weight above.
            out[y * width + x] = if balance < 0.0 { cut + 1 } else { cut }.clamp(0, 255) as u8;
            if y + r + 1 < height {
                add(
                    y + r + 1,
                    1,
                    cut,
                    &mut histogram,
                    &mut cells,
                    &mut balance_count,
                    &mut balance_cells,
                );
            }
            if y >= r {
                add(
                    y - r,
                    -1,
                    cut,
                    &mut histogram,
                    &mut cells,
                    &mut balance_count,
                    &mut balance_cells,
                );
            }
        }
    }
    out
}

/// Weighted median of every channel of `image` (8-bit values), guided by `guide` (the image
/// itself when `None`; gray or colour, the same size).
pub fn weighted_median(
    image: &Image,
    guide: Option<&Image>,
    options: WmfOptions,
) -> Result<Image, String> {
    let guide_image = guide.unwrap_or(image);
    if (guide_image.width, guide_image.height) != (image.width, image.height) {
        return Err(format!(
            "the guide is {}x{} but the image is {}x{}",
            guide_image.width, guide_image.height, image.width, image.height
        ));
    }
    if options.radius == 0 || options.sigma.is_nan() || options.sigma <= 0.0 {
        return Err("the radius and sigma must be positive".into());
    }
    let guide = if guide_image.channels == 1 {
        gray_guide(guide_image.plane(0), options.sigma)
    } else {
        colour_guide(guide_image, options.sigma)
    };
    let (w, h) = (image.width, image.height);
    let mut data = Vec::with_capacity(w * h * image.channels);
    for c in 0..image.channels {
        let plane: Vec<u8> = image.plane(c).iter().map(|&v| round_u8(v)).collect();
        data.extend(
            filter_plane(&plane, &guide, w, h, options.radius)
                .into_iter()
                .map(|v| v as f32),
        );
    }
    Ok(Image::new(w, h, image.channels, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, computed by sorting every window.
    fn brute_force(
        source: &[u8],
        guide: &[u8],
        w: usize,
        h: usize,
        r: usize,
        sigma: f64,
    ) -> Vec<u8> {
        let mut out = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let c = guide[y * w + x] as f64;
                let mut items: Vec<(u8, f64)> = Vec::new();
                for yy in y.saturating_sub(r)..=(y + r).min(h - 1) {
                    for xx in x.saturating_sub(r)..=(x + r).min(w - 1) {
                        let d = guide[yy * w + xx] as f64 - c;
                        items.push((
                            source[yy * w + xx],
                            (-(d * d) / (2.0 * sigma * sigma)).exp(),
                        ));
                    }
                }
                let total: f64 = items.iter().map(|i| i.1).sum();
                out[y * w + x] = (0..=255u8)
                    .find(|&m| {
                        let below: f64 = items.iter().filter(|i| i.0 <= m).map(|i| i.1).sum();
                        below >= total - below - 1e-3
                    })
                    .unwrap();
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_on_a_gray_image() {
        let (w, h) = (23, 17);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let source: Vec<u8> = (0..w * h)
            .map(|i| ((i % w) * 9 + rng.random_range(0..40usize)) as u8)
            .collect();
        let image = Image::new(w, h, 1, source.iter().map(|&v| v as f32).collect());
        for (r, sigma) in [(1, 10.0), (3, 25.0), (6, 100.0)] {
            let ours = weighted_median(&image, None, WmfOptions { radius: r, sigma }).unwrap();
            let expected = brute_force(&source, &source, w, h, r, sigma);
            let ours: Vec<u8> = ours.data.iter().map(|&v| v as u8).collect();
            let differing = ours.iter().zip(&expected).filter(|(a, b)| a != b).count();
            // Ties within float rounding may land either way; nothing else may differ.
            assert!(
                differing <= 2,
                "r={r} sigma={sigma}: {differing} pixels differ"
            );
        }
    }
}
