//! Strict checkpoint loading: a renamed, missing, extra, reshaped or inconsistent key is an
//! error that names it; Pyra's own safetensors round-trip exactly.

mod common;

use common::*;
use pyra_core::backend;
use pyra_core::networks::PaNetConfig;
use pyra_core::weights::{
    load_state_dict, read_safetensors, state_dict_of, write_safetensors, LoadOptions, StateDict,
    TensorValues,
};

fn official() -> StateDict {
    StateDict::read(committed("panet_small_model_best.pt")).unwrap()
}

fn load_error(dict: &StateDict) -> String {
    let device = backend::cpu();
    let model = PaNetConfig::new().with_n_resblocks(2).init(&device);
    match load_state_dict(model, dict, &LoadOptions::default()) {
        Ok(_) => panic!("loading should have failed"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn renamed_key_is_named() {
    let mut dict = official();
    let t = dict
        .tensors
        .iter_mut()
        .find(|t| t.name == "tail.0.weight")
        .unwrap();
    t.name = "tail.0.kernel".into();
    let err = load_error(&dict);
    assert!(err.contains("missing key(s) `tail.0.weight`"), "{err}");
    assert!(err.contains("unexpected key(s) `tail.0.kernel`"), "{err}");
}

#[test]
fn missing_key_is_named() {
    let mut dict = official();
    dict.tensors
        .retain(|t| t.name != "body.1.conv_match.0.bias");
    let err = load_error(&dict);
    assert!(err.contains("`body.1.conv_match.0.bias`"), "{err}");
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn reshaped_key_is_named() {
    let mut dict = official();
    let t = dict
        .tensors
        .iter_mut()
        .find(|t| t.name == "head.0.weight")
        .unwrap();
    t.shape = vec![64, 3, 1, 9];
    let err = load_error(&dict);
    assert!(
        err.contains("`head.0.weight` has shape [64, 3, 1, 9]"),
        "{err}"
    );
    assert!(err.contains("[64, 3, 3, 3]"), "{err}");
}

#[test]
fn extra_key_is_an_error_unless_allowed() {
    let mut dict = official();
    let mut extra = dict.get("tail.0.bias").unwrap().clone();
    extra.name = "tail.1.bias".into();
    dict.push(extra);
    let err = load_error(&dict);
    assert!(err.contains("unexpected key(s) `tail.1.bias`"), "{err}");
    let device = backend::cpu();
    let model = PaNetConfig::new().with_n_resblocks(2).init(&device);
    let options = LoadOptions {
        allow_extra: true,
        ..Default::default()
    };
    let (_, report) = load_state_dict(model, &dict, &options).unwrap();
    assert_eq!(report.skipped, vec!["tail.1.bias".to_string()]);
}

#[test]
fn disagreeing_aliases_are_an_error() {
    let mut dict = official();
    let t = dict
        .tensors
        .iter_mut()
        .find(|t| t.name == "body.2.body.1.weight")
        .unwrap();
    t.values = TensorValues::F32(vec![0.123]);
    let err = load_error(&dict);
    assert!(
        err.contains("`body.0.body.1.weight` and `body.2.body.1.weight`"),
        "{err}"
    );
}

#[test]
fn wrong_architecture_lists_keys() {
    // A PANet-2 checkpoint offered to a PANet-4 model.
    let device = backend::cpu();
    let model = PaNetConfig::new().with_n_resblocks(4).init(&device);
    let err = load_state_dict(model, &official(), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    // PANet-4 has its attention at body.2; the checkpoint has it at body.1.
    assert!(
        err.contains("missing key(s) `body.1.body.0.weight`"),
        "{err}"
    );
    assert!(
        err.contains("unexpected key(s) `body.1.escape_NaN`"),
        "{err}"
    );
    assert!(err.contains("more"), "long lists are cut: {err}");
}

#[test]
fn safetensors_round_trip_keeps_keys_and_values() {
    let device = backend::cpu();
    let (model, _) = load_state_dict(
        PaNetConfig::new().with_n_resblocks(2).init(&device),
        &official(),
        &LoadOptions::default(),
    )
    .unwrap();
    let saved = state_dict_of(&model);
    // Same keys in the official order, aliases included.
    let official = official();
    assert_eq!(
        saved.names().collect::<Vec<_>>(),
        official.names().collect::<Vec<_>>()
    );
    for t in &saved.tensors {
        assert_eq!(
            t.values,
            official.require(&t.name).unwrap().values,
            "{}",
            t.name
        );
    }
    let bytes = write_safetensors(&saved, None).unwrap();
    let reread = read_safetensors(&bytes).unwrap();
    let (_, _) = load_state_dict(
        PaNetConfig::new().with_n_resblocks(2).init(&device),
        &reread,
        &LoadOptions::default(),
    )
    .unwrap();
    for t in &reread.tensors {
        assert_eq!(
            t.values,
            official.require(&t.name).unwrap().values,
            "{}",
            t.name
        );
    }
}

#[test]
fn truncated_checkpoint_is_an_error() {
    let bytes = std::fs::read(committed("panet_small_model_best.pt")).unwrap();
    let dir = std::env::temp_dir().join(format!("pyra-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cut.pt");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = StateDict::read(&path).unwrap_err().to_string();
    assert!(err.contains("cut.pt"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn architectures_are_detected_from_checkpoints() {
    use pyra_core::networks::{detect, Arch};
    let panet = detect(&official()).unwrap();
    assert_eq!(panet.arch, Arch::PaNet);
    assert_eq!(
        panet.describe(),
        "PaNet (n_resblocks=2, n_feats=64, n_colors=3, reduction=2, rgb_range=1)"
    );
    // The detected configuration loads its checkpoint strictly.
    let device = backend::cpu();
    let config = panet.config_with(&[]).unwrap();
    assert!(load_state_dict(config.init(&device), &official(), &LoadOptions::default()).is_ok());
    // Models built from configs are recognised from their own state dicts.
    let cases = [
        (
            "edsr",
            "n_resblocks=3 n_feats=16 scale=4",
            "Edsr (n_resblocks=3, n_feats=16, n_colors=3, scale=4, res_scale=1, rgb_range=1)",
        ),
        (
            "edsr",
            "n_resblocks=3 n_feats=16 scale=2 rgb_range=255",
            "Edsr (n_resblocks=3, n_feats=16, n_colors=3, scale=2, res_scale=1, rgb_range=255)",
        ),
        (
            "edsr",
            "n_resblocks=2 n_feats=8 scale=3 n_colors=1",
            "Edsr (n_resblocks=2, n_feats=8, n_colors=1, scale=3, res_scale=1, rgb_range=1)",
        ),
        (
            "paedsr",
            "n_resblocks=4 n_feats=16 scale=2",
            "PaEdsr (n_resblocks=4, n_feats=16, n_colors=3, scale=2, res_scale=1, reduction=8, rgb_range=1)",
        ),
        (
            "pnen",
            "n_feats=8 n_groups=2 key_channels=6 value_channels=4 scales=2",
            "Pnen (n_colors=3, n_feats=8, n_groups=2, non_local=pnb, key_channels=6, value_channels=4, scales=2)",
        ),
        (
            "pnen",
            "n_feats=8 n_groups=1 non_local=nlb n_colors=1",
            "Pnen (n_colors=1, n_feats=8, n_groups=1, non_local=nlb)",
        ),
        (
            "rdn",
            "G0=8 D=7 C=3 G=4 scale=3 key_channels=6 value_channels=4 scales=2",
            "Rdn (n_colors=3, G0=8, D=7, C=3, G=4, scale=3, non_local_every=5, non_local=pnb, key_channels=6, value_channels=4, scales=2)",
        ),
        (
            "rdn",
            "G0=8 D=4 C=2 G=4 scale=4 non_local=nlb non_local_every=2",
            "Rdn (n_colors=3, G0=8, D=4, C=2, G=4, scale=4, non_local_every=2, non_local=nlb)",
        ),
        (
            "rdn",
            "G0=8 D=2 C=2 G=4 non_local=none",
            "Rdn (n_colors=3, G0=8, D=2, C=2, G=4, scale=1, non_local=none)",
        ),
        (
            "memnet",
            "n_feats=8 n_memblocks=6 n_resblocks=3 key_channels=4 value_channels=2 scales=1",
            "MemNet (n_colors=1, n_feats=8, n_memblocks=6, n_resblocks=3, non_local_every=5, non_local=pnb, key_channels=4, value_channels=2, scales=1)",
        ),
        (
            "dncnn",
            "depth=5 n_channels=8",
            "Dncnn (depth=5, n_channels=8, image_channels=1)",
        ),
    ];
    for (arch, settings, expected) in cases {
        let settings: Vec<(String, String)> = settings
            .split(' ')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let config =
            pyra_core::networks::ArchConfig::from_settings(arch.parse().unwrap(), &settings)
                .unwrap();
        let dict = state_dict_of(&config.init(&device));
        assert_eq!(detect(&dict).unwrap().describe(), expected);
    }
    let err = detect(&StateDict::default()).unwrap_err();
    assert!(err.contains("unrecognised checkpoint"), "{err}");
}
