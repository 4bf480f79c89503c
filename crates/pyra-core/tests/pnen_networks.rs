//! PNEN and the MemNet/RDN hosts: shapes, where the non-local blocks sit, PNEN's weighted sum
//! of its group predictions, and gradients reaching every trainable tensor in training mode.

use burn::tensor::{Distribution, Tensor};
use pyra_core::backend;
use pyra_core::burn;
use pyra_core::networks::{ArchConfig, MemNetConfig, PnenConfig, RdnConfig};
use pyra_core::weights::{gradients_of, state_dict_of, trainable_keys};

fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn pnen_output_is_the_weighted_sum_of_its_group_predictions() {
    let device = backend::cpu();
    let pnen = PnenConfig::new()
        .with_n_feats(8)
        .with_key_channels(6)
        .with_value_channels(4)
        .init(&device);
    // 13x11: not a multiple of the strides 2, 4, 8.
    let x = Tensor::<4>::random([2, 3, 13, 11], Distribution::Uniform(0.0, 1.0), &device);
    let (y, per_group) = pnen.forward_all(x.clone());
    assert_eq!(per_group.len(), 3);
    assert_eq!(y.dims(), [2, 3, 13, 11]);
    let w: Vec<f32> = pnen.fusion.val().into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(w, vec![1.0 / 3.0; 3]);
    let groups: Vec<Vec<f32>> = per_group.into_iter().map(values).collect();
    for (i, v) in values(y).iter().enumerate() {
        let expected: f32 = groups.iter().zip(&w).map(|(g, w)| g[i] * w).sum();
        assert!((v - expected).abs() < 1e-5);
    }
    // The group predictions are X + R_m: they differ from each other and from X.
    assert_ne!(groups[0], groups[1]);
}

#[test]
fn rdn_places_one_non_local_block_before_every_five_dense_blocks() {
    let device = backend::cpu();
    let config = RdnConfig::new()
        .with_g0(8)
        .with_n_layers(2)
        .with_growth(4)
        .with_key_channels(4)
        .with_value_channels(2);
    assert_eq!(config.non_local_count(), 4); // before blocks 0, 5, 10, 15 of 16
    let keys: Vec<String> = state_dict_of(&config.init(&device))
        .tensors
        .into_iter()
        .map(|t| t.name)
        .filter(|k| k.ends_with("query.weight"))
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for scale in [1, 2, 3, 4] {
        let rdn = config
            .clone()
            .with_n_blocks(3)
            .with_scale(scale)
            .init(&device);
        let x = Tensor::<4>::random([1, 3, 10, 9], Distribution::Uniform(0.0, 1.0), &device);
        assert_eq!(rdn.forward(x).dims(), [1, 3, 10 * scale, 9 * scale]);
    }
    let plain = config.with_non_local(None).init(&device);
    assert!(plain.non_locals.is_empty());
}

#[test]
fn memnet_gates_see_short_and_long_term_memories() {
    let device = backend::cpu();
    let config = MemNetConfig::new()
        .with_n_feats(8)
        .with_n_resblocks(3)
        .with_key_channels(4)
        .with_value_channels(2);
    let memnet = config.init(&device);
    assert_eq!(memnet.non_locals.len(), 2); // before memory blocks 0 and 5 of 6
    for (m, block) in memnet.dense_memory.iter().enumerate() {
        // R short-term memories and B_0..B_{m-1}, i.e. m + 1 long-term ones.
        let [_, channels_in, _, _] = block.gate_unit.conv.weight.dims();
        assert_eq!(channels_in, (3 + m + 1) * 8);
    }
    let x = Tensor::<4>::random([2, 1, 12, 10], Distribution::Uniform(0.0, 1.0), &device);
    assert_eq!(memnet.forward(x).dims(), [2, 1, 12, 10]);
}

/// One backward pass in training mode (BatchNorm on batch statistics): every trainable tensor
/// gets a finite gradient, and not all of it zero.
#[test]
fn gradients_reach_every_trainable_tensor_of_pnen_rdn_and_memnet() {
    let device = backend::with_autodiff(backend::cpu());
    let small = |s: &str| -> Vec<(String, String)> {
        s.split(' ')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let cases = [
        (
            "pnen",
            "n_feats=8 n_groups=2 key_channels=4 value_channels=4",
        ),
        ("pnen", "n_feats=8 n_groups=1 non_local=nlb"),
        (
            "rdn",
            "G0=8 D=6 C=2 G=4 key_channels=4 value_channels=2 scale=2",
        ),
        (
            "memnet",
            "n_feats=8 n_memblocks=6 n_resblocks=2 key_channels=4 value_channels=2 non_local=apnb",
        ),
    ];
    for (arch, settings) in cases {
        let config = ArchConfig::from_settings(arch.parse().unwrap(), &small(settings)).unwrap();
        let network = config.init(&device);
        let channels = config.input_channels();
        let x = Tensor::<4>::random(
            [2, channels, 16, 12],
            Distribution::Uniform(0.0, 1.0),
            &device,
        );
        let loss = network
            .forward_supervised(x)
            .into_iter()
            .map(|y| y.square().mean())
            .reduce(|a, b| a + b)
            .unwrap();
        let grads = gradients_of(&network, &loss.backward());
        let trainable = trainable_keys(&network);
        assert!(!trainable.iter().any(|k| k.contains("running_")), "{arch}");
        assert!(
            trainable.iter().any(|k| k.contains("non_local")),
            "{arch}: the non-local blocks are trainable"
        );
        for key in &trainable {
            let g = grads
                .get(key)
                .unwrap_or_else(|| panic!("{arch} {settings}: no gradient for {key}"))
                .to_f32();
            assert!(g.iter().all(|v| v.is_finite()), "{arch}: {key}");
            assert!(
                g.iter().any(|v| *v != 0.0),
                "{arch} {settings}: zero gradient for {key}"
            );
        }
    }
}
