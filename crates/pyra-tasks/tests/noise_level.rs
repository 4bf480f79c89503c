//! The noise-level estimator on a committed photo with noise of known sigma, in both noise
//! protocols (float AWGN, and clipped + rounded to 8 bits).

use pyra_tasks::degrade::{add_gaussian_noise, NoiseProtocol};
use pyra_tasks::noise_level::estimate_noise;
use pyra_tasks::read_image;

#[test]
fn estimate_is_within_ten_percent_at_10_30_50() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/sample/95006.png");
    let clean = read_image(path).unwrap();
    let mut worst = 0.0f64;
    println!("| sigma | float estimate | error | clipped estimate | error |");
    for sigma in [5.0, 10.0, 15.0, 25.0, 30.0, 50.0, 75.0] {
        let mut row = format!("| {sigma} |");
        for protocol in [NoiseProtocol::Float, NoiseProtocol::Clip8] {
            let noisy = add_gaussian_noise(&clean, sigma, 1000 + sigma as u64, protocol);
            let estimate = estimate_noise(&noisy).unwrap().sigma;
            let error = estimate / sigma - 1.0;
            row += &format!(" {estimate:.2} | {:+.1}% |", 100.0 * error);
            if [10.0, 30.0, 50.0].contains(&sigma) {
                worst = worst.max(error.abs());
            }
        }
        println!("{row}");
    }
    assert!(worst < 0.10, "worst relative error at 10/30/50: {worst}");
}
