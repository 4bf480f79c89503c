//! Any bytes through the image loading path (format sniffing, the pixel budget, the JPEG
//! completeness check, PNG/JPEG/TIFF/BMP decoding, conversion to planes): an image or an
//! error, never a panic, an abort or an allocation beyond the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(image) = pyra_tasks::image::decode_image(bytes, "fuzz input") {
        assert_eq!(
            image.data.len(),
            image.width * image.height * image.channels
        );
    }
});
