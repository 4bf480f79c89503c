//! JPEG compression at quality `q` through the IJG libjpeg API (see `csrc/ijg_jpeg.c`): the
//! standard IJG quantisation tables scaled by quality, the accurate integer DCT, and decoding
//! with the same library, which is how MATLAB's `imwrite` and the papers made their inputs.

use std::ffi::c_char;
use std::os::raw::{c_int, c_uchar, c_ulong};

use crate::image::Image;

unsafe extern "C" {
    fn pyra_jpeg_encode(
        pixels: *const c_uchar,
        width: c_int,
        height: c_int,
        channels: c_int,
        quality: c_int,
        out: *mut *mut c_uchar,
        out_len: *mut c_ulong,
        message: *mut c_char,
        message_len: c_int,
    ) -> c_int;
    fn pyra_jpeg_header(
        data: *const c_uchar,
        len: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        channels: *mut c_int,
        message: *mut c_char,
        message_len: c_int,
    ) -> c_int;
    fn pyra_jpeg_decode(
        data: *const c_uchar,
        len: c_ulong,
        pixels: *mut c_uchar,
        width: c_int,
        height: c_int,
        channels: c_int,
        message: *mut c_char,
        message_len: c_int,
    ) -> c_int;
    fn pyra_jpeg_free(buffer: *mut c_uchar);
}

fn message(buffer: &[c_char]) -> String {
    let bytes: Vec<u8> = buffer
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Encode an 8-bit image (values rounded to 0..=255) as a JPEG file at `quality` (1-100).
pub fn encode_jpeg(image: &Image, quality: u8) -> Result<Vec<u8>, String> {
    if !(1..=100).contains(&quality) {
        return Err(format!("JPEG quality must be 1-100, got {quality}"));
    }
    let interleaved: Vec<u8> = image
        .interleaved()
        .iter()
        .map(|&v| crate::image::round_u8(v))
        .collect();
    let mut out: *mut c_uchar = std::ptr::null_mut();
    let mut out_len: c_ulong = 0;
    let mut msg = [0 as c_char; 256];
    // SAFETY: `interleaved` holds width*height*channels bytes as the bridge reads them; the
    // bridge allocates `out` with malloc and we free it with pyra_jpeg_free after copying.
    let rc = unsafe {
        pyra_jpeg_encode(
            interleaved.as_ptr(),
            image.width as c_int,
            image.height as c_int,
            image.channels as c_int,
            quality as c_int,
            &mut out,
            &mut out_len,
            msg.as_mut_ptr(),
            msg.len() as c_int,
        )
    };
    if rc != 0 {
        return Err(format!("libjpeg could not encode: {}", message(&msg)));
    }
    // SAFETY: on success `out` points to `out_len` bytes owned by us.
    let bytes = unsafe { std::slice::from_raw_parts(out, out_len as usize) }.to_vec();
    unsafe { pyra_jpeg_free(out) };
    Ok(bytes)
}

/// Decode a JPEG with libjpeg (accurate integer IDCT).
pub fn decode_jpeg(bytes: &[u8]) -> Result<Image, String> {
    let (mut w, mut h, mut c) = (0 as c_int, 0 as c_int, 0 as c_int);
    let mut msg = [0 as c_char; 256];
    // SAFETY: the bridge only reads `bytes.len()` bytes.
    let rc = unsafe {
        pyra_jpeg_header(
            bytes.as_ptr(),
            bytes.len() as c_ulong,
            &mut w,
            &mut h,
            &mut c,
            msg.as_mut_ptr(),
            msg.len() as c_int,
        )
    };
    if rc != 0 {
        return Err(format!(
            "libjpeg could not read the header: {}",
            message(&msg)
        ));
    }
    let pixels = (w as u64) * (h as u64);
    if pixels == 0 || pixels > crate::image::MAX_PIXELS {
        return Err(format!("JPEG of {w}x{h} pixels refused"));
    }
    let mut raw = vec![0u8; (w * h * c) as usize];
    // SAFETY: `raw` holds exactly width*height*channels bytes, which the bridge fills.
    let rc = unsafe {
        pyra_jpeg_decode(
            bytes.as_ptr(),
            bytes.len() as c_ulong,
            raw.as_mut_ptr(),
            w,
            h,
            c,
            msg.as_mut_ptr(),
            msg.len() as c_int,
        )
    };
    if rc != 0 {
        return Err(format!("libjpeg could not decode: {}", message(&msg)));
    }
    let values: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
    Ok(Image::from_interleaved(
        w as usize, h as usize, c as usize, &values,
    ))
}

/// Compress at `quality` and decode again: the JPEG-degraded image.
pub fn jpeg_round_trip(image: &Image, quality: u8) -> Result<Image, String> {
    let mut out = decode_jpeg(&encode_jpeg(image, quality)?)?;
    out.bit_depth = 8;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_100_is_nearly_lossless_and_10_is_not() {
        let data: Vec<f32> = (0..64 * 64)
            .map(|i| (((i % 64) * 3 + (i / 64) * 2) % 256) as f32)
            .collect();
        let img = Image::new(64, 64, 1, data);
        let hi = jpeg_round_trip(&img, 100).unwrap();
        let lo = jpeg_round_trip(&img, 10).unwrap();
        let err = |o: &Image| {
            o.data
                .iter()
                .zip(&img.data)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / 4096.0
        };
        assert!(err(&hi) < 1.5, "{}", err(&hi));
        assert!(err(&lo) > err(&hi) * 3.0);
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        assert!(decode_jpeg(b"\xff\xd8\xff\xe0 not really a jpeg").is_err());
    }
}
