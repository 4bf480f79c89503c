//! Behaviour without an official fixture: batching, the extra knobs, weight sharing, EDSR keys.

mod common;

use common::*;
use pyra_core::backend;
use pyra_core::blocks::PyramidAttentionConfig;
use pyra_core::burn::tensor::{Distribution, Tensor};
use pyra_core::networks::{EdsrConfig, PaNetConfig};
use pyra_core::weights::{
    load_state_dict, state_dict_of, tie_shared_params, LoadOptions, StateDict,
};

#[test]
fn attention_is_per_sample_in_a_batch() {
    let device = backend::cpu();
    device.seed(7);
    let module = PyramidAttentionConfig::new().with_channel(8).init(&device);
    let a = Tensor::<4>::random([1, 8, 11, 13], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<4>::random([1, 8, 11, 13], Distribution::Normal(0.0, 1.0), &device);
    let batch = module.forward(Tensor::cat(vec![a.clone(), b.clone()], 0));
    let (_, batch) = values(batch);
    let (_, alone_a) = values(module.forward(a));
    let (_, alone_b) = values(module.forward(b));
    let half = alone_a.len();
    assert!(relative_error(&batch[..half], &alone_a) < 1e-5);
    assert!(relative_error(&batch[half..], &alone_b) < 1e-5);
}

#[test]
fn extra_knobs_keep_the_map_size() {
    let device = backend::cpu();
    device.seed(3);
    let x = Tensor::<4>::random([1, 8, 15, 12], Distribution::Normal(0.0, 1.0), &device);
    let configs = [
        PyramidAttentionConfig::new().with_channel(8).with_stride(2),
        PyramidAttentionConfig::new().with_channel(8).with_ksize(5),
        PyramidAttentionConfig::new()
            .with_channel(8)
            .with_scales(vec![1.0, 0.9, 0.8, 0.7, 0.6, 0.5]),
        PyramidAttentionConfig::new().with_channel(8).with_levels(1),
    ];
    for config in configs {
        let module = config.init(&device);
        let y = module.forward(x.clone());
        assert_eq!(y.dims(), [1, 8, 15, 12], "{config:?}");
        // Soft attention rows sum to one over the blocks of every level.
        let blocks: usize = module
            .level_sizes(15, 12)
            .iter()
            .map(|&(h, w)| h.div_ceil(config.stride) * w.div_ceil(config.stride))
            .sum();
        let weights = module.attention_weights(x.clone());
        assert_eq!(weights.dims(), [1, 15 * 12, blocks]);
        let (_, sums) = values(weights.sum_dim(2));
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
    }
}

#[test]
fn one_level_one_block_attention_is_exact() {
    // With a single level and 1x1 blocks every weight is a softmax over the pixels; with
    // softmax_scale 0 it is uniform, so the output is the mean value embedding / 4 plus x.
    let device = backend::cpu();
    device.seed(5);
    let module = PyramidAttentionConfig::new()
        .with_channel(4)
        .with_reduction(1)
        .with_ksize(1)
        .with_levels(1)
        .with_softmax_scale(0.0)
        .with_res_scale(0.0)
        .init(&device);
    let x = Tensor::<4>::random([1, 4, 5, 6], Distribution::Normal(0.0, 1.0), &device);
    let (_, y) = values(module.forward(x.clone()));
    let value = module
        .conv_assembly
        .1
        .forward(module.conv_assembly.0.forward(x));
    let (_, mean) = values(value.mean_dim(3).mean_dim(2).div_scalar(4.0));
    for c in 0..4 {
        for p in 0..30 {
            assert!((y[c * 30 + p] - mean[c]).abs() < 1e-5);
        }
    }
}

#[test]
fn shared_prelu_is_one_parameter_and_re_ties() {
    let device = backend::cpu();
    let model = PaNetConfig::new().with_n_resblocks(4).init(&device);
    let dict = state_dict_of(&model);
    let keys: Vec<_> = dict
        .names()
        .filter(|k| k.ends_with("body.1.weight"))
        .collect();
    assert_eq!(
        keys,
        [
            "body.0.body.1.weight",
            "body.1.body.1.weight",
            "body.3.body.1.weight",
            "body.4.body.1.weight"
        ]
    );
    // Untie one alias by loading different values... which strict loading refuses:
    let mut edited = dict.clone();
    edited
        .tensors
        .iter_mut()
        .find(|t| t.name == "body.4.body.1.weight")
        .unwrap()
        .values = pyra_core::weights::TensorValues::F32(vec![0.9]);
    assert!(load_state_dict(
        PaNetConfig::new().with_n_resblocks(4).init(&device),
        &edited,
        &LoadOptions::default()
    )
    .is_err());
    // ... and tie_shared_params makes every alias the first one's tensor again.
    let tied = tie_shared_params(model);
    let after: StateDict = state_dict_of(&tied);
    for k in &keys {
        assert_eq!(
            after.get(k).unwrap().values,
            after.get(keys[0]).unwrap().values
        );
    }
}

#[test]
fn edsr_has_the_official_key_layout() {
    let device = backend::cpu();
    let model = EdsrConfig::new()
        .with_n_resblocks(2)
        .with_n_feats(8)
        .with_scale(4)
        .init(&device);
    let dict = state_dict_of(&model);
    let keys: Vec<&str> = dict.names().collect();
    assert_eq!(
        keys,
        [
            "sub_mean.weight",
            "sub_mean.bias",
            "add_mean.weight",
            "add_mean.bias",
            "head.0.weight",
            "head.0.bias",
            "body.0.body.0.weight",
            "body.0.body.0.bias",
            "body.0.body.2.weight",
            "body.0.body.2.bias",
            "body.1.body.0.weight",
            "body.1.body.0.bias",
            "body.1.body.2.weight",
            "body.1.body.2.bias",
            "body.2.weight",
            "body.2.bias",
            "tail.0.0.weight",
            "tail.0.0.bias",
            "tail.0.2.weight",
            "tail.0.2.bias",
            "tail.1.weight",
            "tail.1.bias",
        ]
    );
    for scale in [2, 3, 4] {
        let model = EdsrConfig::new()
            .with_n_resblocks(2)
            .with_n_feats(8)
            .with_scale(scale)
            .init(&device);
        let y = model.forward(Tensor::zeros([1, 3, 5, 7], &device));
        assert_eq!(y.dims(), [1, 3, 5 * scale, 7 * scale]);
    }
}
