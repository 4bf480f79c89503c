//! The convolutions of [`super::conv_kernel`] as one differentiable burn operation, recorded
//! the way [`super::fused_attention`] records the attention: a backend extension implemented
//! for Flex (the kernel over `f32` slices) and for `Autodiff<Flex>` with a hand-written backward
//! (input, weight and bias gradients from the kernel's backward).
//!
//! [`conv2d`] is what the blocks call: it takes a burn `Conv2d` module and runs the kernel where
//! the device and the shape fit (Flex, stride 1, one group, an odd square kernel with its
//! "same" padding `dilation * (k / 2)`), and burn's own convolution everywhere else.
//! `PYRA_CONV=burn` sends every convolution to burn's (for comparisons).

use std::sync::OnceLock;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Flex};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::{Device, Tensor};

use super::conv_kernel::{self, ConvShape};
use super::fused_attention::{from_vec, to_vec};

/// What the convolution is beyond its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub ksize: usize,
    pub dilation: usize,
    /// Whether the bias tensor is real (a zero placeholder otherwise).
    pub has_bias: bool,
}

/// The kernel's convolution as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait FusedConvBackend: Backend {
    /// `x` `[N, Cin, H, W]`, `weight` `[Cout, Cin, k, k]`, `bias` `[Cout]` to `[N, Cout, H, W]`.
    fn fused_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self>;
}

/// Whether the kernel runs on `device` (the Flex CPU backend, with or without autodiff) and
/// `PYRA_CONV=burn` does not turn it off.
pub fn supports(device: &Device) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| {
        !matches!(
            std::env::var("PYRA_CONV").as_deref(),
            Ok("burn") | Ok("off")
        )
    });
    enabled && (device == &Device::flex() || device == &Device::flex().autodiff())
}

/// The kernel's spec for `conv`, if the kernel computes it.
pub fn spec_of(conv: &Conv2d) -> Option<ConvSpec> {
    let [kh, kw] = conv.kernel_size;
    let [dh, dw] = conv.dilation;
    let pad = dh * (kh / 2);
    let same = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r] == [pad; 4],
        PaddingConfig2d::Same => true,
        PaddingConfig2d::Valid => kh == 1,
    };
    (conv.stride == [1, 1] && conv.groups == 1 && kh == kw && kh % 2 == 1 && dh == dw && same)
        .then_some(ConvSpec {
            ksize: kh,
            dilation: dh,
            has_bias: conv.bias.is_some(),
        })
}

/// `conv.forward(x)`, through the kernel where it applies.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match spec_of(conv) {
        Some(spec) if supports(&x.device()) => {
            let weight = conv.weight.val();
            let bias = match &conv.bias {
                Some(bias) => bias.val(),
                None => Tensor::zeros([weight.dims()[0]], &weight.device()),
            };
            let out = <burn::backend::Dispatch as FusedConvBackend>::fused_conv2d(
                x.into_dispatch(),
                weight.into_dispatch(),
                bias.into_dispatch(),
                spec,
            );
            Tensor::from_dispatch(out)
        }
        _ => conv.forward(x),
    }
}

/// `f(values, shape)` over the tensor's own storage where it is contiguous f32 (no copy:
/// autodiff keeps clones of inputs, so `into_data` would copy them), else over a copy.
fn with_values<T>(tensor: &FloatTensor<Flex>, f: impl FnOnce(&[f32], &[usize]) -> T) -> T {
    let shape = tensor.layout().shape().to_vec();
    match tensor.as_slice::<f32>() {
        Some(values) => f(values, &shape),
        None => {
            let (values, shape) = to_vec(tensor.clone());
            f(&values, &shape)
        }
    }
}

fn shape_of(x_shape: &[usize], weight_shape: &[usize], spec: ConvSpec) -> ConvShape {
    let [batch, channels_in, height, width] = x_shape else {
        panic!("conv input must be [N, C, H, W], got {x_shape:?}");
    };
    assert_eq!(
        weight_shape,
        [weight_shape[0], *channels_in, spec.ksize, spec.ksize],
        "conv weight shape"
    );
    ConvShape {
        batch: *batch,
        channels_in: *channels_in,
        channels_out: weight_shape[0],
        height: *height,
        width: *width,
        ksize: spec.ksize,
        dilation: spec.dilation,
    }
}

impl FusedConvBackend for Flex {
    fn fused_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        // The weights are read where they are (a parameter's storage is shared, so taking it
        // by value would copy it on every call).
        let (y, shape) = with_values(&weight, |weight, weight_shape| {
            with_values(&bias, |bias, _| {
                with_values(&x, |x, x_shape| {
                    let shape = shape_of(x_shape, weight_shape, spec);
                    let bias = spec.has_bias.then_some(bias);
                    (conv_kernel::forward(&shape, x, weight, bias), shape)
                })
            })
        });
        from_vec(
            y,
            vec![shape.batch, shape.channels_out, shape.height, shape.width],
        )
    }
}

/// The recorded operation; its state is the input, the weight and the spec.
#[derive(Debug)]
struct FusedConvBackward;

impl Backward<Flex, 3> for FusedConvBackward {
    type State = (FloatTensor<Flex>, FloatTensor<Flex>, ConvSpec);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [x_node, weight_node, bias_node] = ops.parents;
        let grad_out = grads.consume::<Flex>(&ops.node);
        let (x, weight, spec) = ops.state;
        let weight_shape = weight.layout().shape().to_vec();
        let x_shape = x.layout().shape().to_vec();
        let shape = shape_of(&x_shape, &weight_shape, spec);
        if let Some(node) = x_node {
            let grad = with_values(&weight, |weight, _| {
                with_values(&grad_out, |grad_out, _| {
                    conv_kernel::backward_input(&shape, weight, grad_out)
                })
            });
            grads.register::<Flex>(node.id, from_vec(grad, x_shape.clone()));
        }
        if weight_node.is_some() || bias_node.is_some() {
            let (grad_weight, grad_bias) = with_values(&x, |x, _| {
                with_values(&grad_out, |grad_out, _| {
                    conv_kernel::backward_weight(&shape, x, grad_out)
                })
            });
            if let Some(node) = weight_node {
                grads.register::<Flex>(node.id, from_vec(grad_weight, weight_shape));
            }
            if let Some(node) = bias_node {
                grads.register::<Flex>(node.id, from_vec(grad_bias, vec![shape.channels_out]));
            }
        }
    }
}

impl<C: CheckpointStrategy> FusedConvBackend for Autodiff<Flex, C> {
    fn fused_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (weight, weight_node) = weight.into_parts();
        let (bias, bias_node) = bias.into_parts();
        match FusedConvBackward
            .prepare::<C>([x_node, weight_node, bias_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (x.clone(), weight.clone(), spec);
                let out = Flex::fused_conv2d(x, weight, bias, spec);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_conv2d(x, weight, bias, spec)),
        }
    }
}
