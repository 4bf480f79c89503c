//! Pyra's convolution kernel (`ops::conv_kernel` through `ops::fused_conv::conv2d`) against
//! burn's own convolution, forward and backward (input, weight and bias gradients), on the
//! shapes the networks use: 3x3 and 1x1, dilated 3x3 (PNEN), 3 and 64 channels, with and
//! without bias, batches, odd sizes. And the cases it must leave to burn (strided, grouped).

use pyra_core::backend;
use pyra_core::burn::nn::conv::{Conv2d, Conv2dConfig};
use pyra_core::burn::nn::PaddingConfig2d;
use pyra_core::burn::tensor::{Distribution, Tensor};
use pyra_core::ops::fused_conv::{conv2d, spec_of};

fn relative(a: Tensor<4>, b: Tensor<4>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-30);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn rel_vec(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn conv(cin: usize, cout: usize, k: usize, dilation: usize, bias: bool) -> Conv2d {
    let device = backend::with_autodiff(backend::cpu());
    let p = dilation * (k / 2);
    Conv2dConfig::new([cin, cout], [k, k])
        .with_dilation([dilation, dilation])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(bias)
        .init(&device)
}

#[test]
fn kernel_equals_burns_convolution_forward_and_backward() {
    let device = backend::with_autodiff(backend::cpu());
    device.seed(11);
    let cases = [
        // (cin, cout, k, dilation, bias, [n, h, w])
        (64, 64, 3, 1, true, [2, 23, 19]),
        (3, 64, 3, 1, true, [1, 48, 48]),
        (64, 3, 3, 1, true, [1, 17, 40]),
        (64, 32, 1, 1, true, [2, 15, 16]),
        (16, 16, 3, 2, true, [1, 20, 21]),
        (16, 16, 3, 4, false, [1, 20, 21]),
        (8, 12, 5, 1, false, [3, 9, 11]),
        (64, 256, 3, 1, true, [1, 12, 12]),
    ];
    for (cin, cout, k, d, bias, [n, h, w]) in cases {
        let layer = conv(cin, cout, k, d, bias);
        assert!(
            spec_of(&layer).is_some(),
            "the kernel takes {cin}->{cout} {k}x{k} d{d}"
        );
        let x = Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
        let dy = Tensor::<4>::random([n, cout, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let y = if fused {
                conv2d(&layer, x.clone())
            } else {
                layer.forward(x.clone())
            };
            let grads = (y.clone() * dy.clone()).sum().backward();
            let gx = x.grad(&grads).unwrap();
            let gw = layer.weight.grad(&grads).unwrap();
            let gb = layer.bias.as_ref().map(|b| vec_of(b.grad(&grads).unwrap()));
            (vec_of(y), vec_of(gx), vec_of(gw), gb)
        };
        let (y, gx, gw, gb) = run(true);
        let (y_ref, gx_ref, gw_ref, gb_ref) = run(false);
        let errors = [
            rel_vec(&y, &y_ref),
            rel_vec(&gx, &gx_ref),
            rel_vec(&gw, &gw_ref),
            match (gb, gb_ref) {
                (Some(a), Some(b)) => rel_vec(&a, &b),
                (None, None) => 0.0,
                _ => panic!("bias gradient on one side only"),
            },
        ];
        println!(
            "{cin}->{cout} {k}x{k} d{d} bias={bias} [{n},{h},{w}]: output {:.1e}, input grad {:.1e}, \
             weight grad {:.1e}, bias grad {:.1e}",
            errors[0], errors[1], errors[2], errors[3]
        );
        assert!(errors[0] <= 1e-5 && errors[1] <= 1e-5, "{errors:?}");
        assert!(errors[2] <= 1e-4 && errors[3] <= 1e-4, "{errors:?}");
    }
}

#[test]
fn strided_and_grouped_convolutions_stay_with_burn() {
    let device = backend::cpu();
    let strided = Conv2dConfig::new([4, 4], [2, 2])
        .with_stride([2, 2])
        .init(&device);
    assert!(spec_of(&strided).is_none());
    let grouped = Conv2dConfig::new([4, 4], [3, 3])
        .with_groups(2)
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
    assert!(spec_of(&grouped).is_none());
    let unpadded = Conv2dConfig::new([4, 4], [3, 3]).init(&device);
    assert!(spec_of(&unpadded).is_none());
    // And conv2d still computes them (through burn).
    let x = Tensor::<4>::random([1, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(conv2d(&strided, x.clone()).dims(), [1, 4, 4, 4]);
    assert_eq!(
        relative(conv2d(&grouped, x.clone()), grouped.forward(x)),
        0.0
    );
}
