//! Tiles of a constant image through the official PANet fixture: no seams.

use std::path::PathBuf;

use pyra_core::backend;
use pyra_core::burn::tensor::Tensor;
use pyra_core::networks::detect;
use pyra_core::weights::{load_state_dict, LoadOptions, StateDict};
use pyra_infer::{Mode, Restorer, TileOptions};

#[test]
fn tiled_constant_image_has_no_seams() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/panet/panet_small_model_best.pt");
    let dict = StateDict::read(path).unwrap();
    let config = detect(&dict).unwrap().config_with(&[]).unwrap();
    let device = backend::cpu();
    let (network, _) =
        load_state_dict(config.init(&device), &dict, &LoadOptions::default()).unwrap();
    let restorer = Restorer {
        network,
        scale: 1,
        rgb_range: 1.0,
        mode: Mode::Tile(TileOptions {
            tile: 72,
            overlap: 32,
            batch: 1,
        }),
        quantize: false,
        ensemble: false,
        device: device.clone(),
    };
    // 4 x 5 tiles over 150 x 200.
    let x = Tensor::<4>::full([1, 3, 150, 200], 0.5, &device);
    let y = restorer.forward(x);
    let [_, c, h, w] = y.dims();
    let values = y
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    // Away from the image border (where zero padding acts, as in a whole-image pass), every
    // pixel of a channel must have the same value: a seam would show as a deviation.
    let border = 12;
    let mut worst = 0f32;
    for ch in 0..c {
        let plane = &values[ch * h * w..(ch + 1) * h * w];
        let mut lo = f32::MAX;
        let mut hi = f32::MIN;
        for yy in border..h - border {
            for xx in border..w - border {
                lo = lo.min(plane[yy * w + xx]);
                hi = hi.max(plane[yy * w + xx]);
            }
        }
        worst = worst.max(hi - lo);
    }
    println!(
        "max deviation inside the constant image: {worst:.3e} (1/255 = {:.3e})",
        1.0 / 255.0
    );
    assert!(worst < 1.0 / 255.0, "{worst}");
}
