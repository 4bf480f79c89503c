//! Data-parallel training (`Trainer::add_replicas`, `pyra train --devices`): copies of the
//! model that each compute a shard of the batch give the loss and the gradients of the whole
//! batch on one copy. The copies share the CPU here; on GPUs each has its own device.

use pyra_core::backend;
use pyra_core::burn::tensor::{Distribution, Tensor};
use pyra_core::networks::{Arch, ArchConfig};
use pyra_train::{Loss, Trainer};

fn small_panet() -> ArchConfig {
    let settings: Vec<(String, String)> = [("n_resblocks", "2"), ("n_feats", "8")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ArchConfig::from_settings(Arch::PaNet, &settings).unwrap()
}

/// Largest |a - b| over every gradient, and the largest |a|.
fn gradient_difference(
    a: &pyra_train::step::Gradients,
    b: &pyra_train::step::Gradients,
) -> (f32, f32) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same parameters have gradients"
    );
    let mut diff = 0.0f32;
    let mut scale = 0.0f32;
    for (key, ga) in a {
        for (x, y) in ga.iter().zip(&b[key]) {
            diff = diff.max((x - y).abs());
            scale = scale.max(x.abs());
        }
    }
    (diff, scale)
}

#[test]
fn shards_on_copies_give_the_whole_batch_gradient() {
    let device = backend::with_autodiff(backend::cpu());
    device.seed(21);
    let config = small_panet();
    let mut single = Trainer::new(config.init(&device), Loss::L1);
    // Five patches: two copies take 3 + 2, three copies 2 + 2 + 1, so an unweighted mean of
    // the shards' gradients would differ from the batch's.
    let clean = Tensor::<4>::random([5, 3, 16, 16], Distribution::Uniform(0.1, 0.9), &device);
    let noisy =
        clean.clone() + Tensor::random([5, 3, 16, 16], Distribution::Normal(0.0, 0.1), &device);
    // A step first, so that the weights are not the initial ones.
    single
        .train_step(noisy.clone(), clean.clone(), 1e-3)
        .unwrap();
    let weights = single.weights();
    let (loss, grads) = single
        .loss_and_gradients(noisy.clone(), clean.clone())
        .unwrap();

    for copies in [2usize, 3] {
        let mut parallel = Trainer::new(config.init(&device), Loss::L1);
        parallel.set_weights(&weights).unwrap();
        parallel
            .add_replicas(&config, &vec![backend::cpu(); copies - 1])
            .unwrap();
        assert_eq!(parallel.copies(), copies);
        let (p_loss, p_grads) = parallel
            .loss_and_gradients(noisy.clone(), clean.clone())
            .unwrap();
        let (diff, scale) = gradient_difference(&grads, &p_grads);
        println!(
            "{copies} copies: loss {loss} vs {p_loss}, max gradient difference {diff:.3e} (max {scale:.3e})"
        );
        assert!(
            (loss - p_loss).abs() <= 1e-6 * loss.abs(),
            "{loss} vs {p_loss}"
        );
        assert!(diff <= 1e-5 * scale, "{diff} against {scale}");
    }

    // A batch smaller than the copies is refused.
    let mut parallel = Trainer::new(config.init(&device), Loss::L1);
    parallel
        .add_replicas(&config, &vec![backend::cpu(); 5])
        .unwrap();
    let e = parallel
        .train_step(noisy.clone(), clean.clone(), 1e-3)
        .unwrap_err();
    assert!(e.contains("cannot be shared by 6 devices"), "{e}");
}

#[test]
fn every_copy_holds_the_updated_weights() {
    let device = backend::with_autodiff(backend::cpu());
    device.seed(22);
    let config = small_panet();
    let mut parallel = Trainer::new(config.init(&device), Loss::L1);
    parallel.add_replicas(&config, &[backend::cpu()]).unwrap();
    let x = Tensor::<4>::random([4, 3, 16, 16], Distribution::Uniform(0.0, 1.0), &device);
    let before = parallel.weights();
    for _ in 0..2 {
        parallel
            .train_step(x.clone(), x.clone().mul_scalar(0.5), 1e-3)
            .unwrap();
    }
    let after = parallel.weights();
    assert_ne!(before, after, "the step changed nothing");
    // The second copy computes the second shard: had it kept the old weights, its loss on a
    // half equal to the first would differ, and so would the mean.
    let half = Tensor::<4>::random([2, 3, 16, 16], Distribution::Uniform(0.0, 1.0), &device);
    let doubled = Tensor::cat(vec![half.clone(), half.clone()], 0);
    let mut single = Trainer::new(config.init(&device), Loss::L1);
    single.set_weights(&after).unwrap();
    let (loss_single, _) = single
        .loss_and_gradients(half.clone(), half.clone().mul_scalar(0.5))
        .unwrap();
    let (loss_parallel, _) = parallel
        .loss_and_gradients(doubled.clone(), doubled.mul_scalar(0.5))
        .unwrap();
    assert!(
        (loss_single - loss_parallel).abs() <= 1e-6 * loss_single.abs(),
        "{loss_single} vs {loss_parallel}"
    );
}
