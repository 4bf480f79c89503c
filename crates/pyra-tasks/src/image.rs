//! Images on disk and in memory, and their conversion to and from tensors.
//!
//! In memory an [`Image`] is planar (channel, row, column) `f32` on the 0-255 scale, 1 (gray)
//! or 3 (RGB) channels, whatever the file's bit depth (16-bit files are divided by 257). The
//! alpha channel of gray+alpha / RGBA files is kept aside, untouched by restoration, and written
//! back unchanged when the output has the same size; degradations and metrics never see it.
//!
//! Tensors follow the official pipeline: `pixel * rgb_range / 255` (rgb_range 1 for the
//! official models), and outputs go back through the official `quantize`: scale to 0-255,
//! clamp, round (half to even, as `torch.round`).

use std::path::Path;

use image::{DynamicImage, ImageBuffer, ImageReader, Luma, LumaA, Rgb, Rgba};
use pyra_core::burn::tensor::{Device, Tensor, TensorData};

/// Errors of reading and writing images; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Pixel budget before decoding: larger images are refused (a decompression bomb guard).
pub const MAX_PIXELS: u64 = 200_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Planar values on the 0-255 scale: `data[(c * height + y) * width + x]`.
    pub data: Vec<f32>,
    /// The alpha plane (0-255 scale), if the file had one.
    pub alpha: Option<Vec<f32>>,
    /// 8 or 16: the bit depth of the file it came from (and to write by default); 32 for
    /// float images.
    pub bit_depth: u8,
}

impl Image {
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), width * height * channels, "image data length");
        Self {
            width,
            height,
            channels,
            data,
            alpha: None,
            bit_depth: 8,
        }
    }

    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Self::new(
            width,
            height,
            channels,
            vec![0.0; width * height * channels],
        )
    }

    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[c * n..(c + 1) * n]
    }

    pub fn plane_mut(&mut self, c: usize) -> &mut [f32] {
        let n = self.width * self.height;
        &mut self.data[c * n..(c + 1) * n]
    }

    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// The same image with values rounded to integers in 0..=255 (MATLAB's uint8 conversion:
    /// saturate, round half away from zero).
    pub fn to_u8_values(&self) -> Vec<u8> {
        self.data.iter().map(|&v| round_u8(v)).collect()
    }

    /// Values rounded to 0..=255 and stored back as f32.
    pub fn quantized(mut self) -> Self {
        for v in &mut self.data {
            *v = round_u8(*v) as f32;
        }
        self
    }

    /// Crop to `(x, y, width, height)`.
    pub fn crop(&self, x: usize, y: usize, width: usize, height: usize) -> Self {
        assert!(
            x + width <= self.width && y + height <= self.height,
            "crop out of bounds"
        );
        let mut data = Vec::with_capacity(width * height * self.channels);
        for c in 0..self.channels {
            for row in y..y + height {
                let start = (c * self.height + row) * self.width + x;
                data.extend_from_slice(&self.data[start..start + width]);
            }
        }
        let alpha = self.alpha.as_ref().map(|a| {
            let mut out = Vec::with_capacity(width * height);
            for row in y..y + height {
                out.extend_from_slice(&a[row * self.width + x..row * self.width + x + width]);
            }
            out
        });
        Self {
            width,
            height,
            channels: self.channels,
            data,
            alpha,
            bit_depth: self.bit_depth,
        }
    }

    /// Crop the bottom/right so both sides are multiples of `m` (the SR "modcrop").
    pub fn mod_crop(&self, m: usize) -> Self {
        self.crop(
            0,
            0,
            self.width - self.width % m,
            self.height - self.height % m,
        )
    }

    /// Interleaved (HWC) values, for encoders.
    pub fn interleaved(&self) -> Vec<f32> {
        let n = self.width * self.height;
        let mut out = vec![0f32; n * self.channels];
        for c in 0..self.channels {
            for (i, &v) in self.plane(c).iter().enumerate() {
                out[i * self.channels + c] = v;
            }
        }
        out
    }

    /// Build from interleaved (HWC) values.
    pub fn from_interleaved(width: usize, height: usize, channels: usize, values: &[f32]) -> Self {
        let n = width * height;
        let mut data = vec![0f32; n * channels];
        for c in 0..channels {
            for i in 0..n {
                data[c * n + i] = values[i * channels + c];
            }
        }
        Self::new(width, height, channels, data)
    }

    /// `[1, C, H, W]` tensor with values `pixel * rgb_range / 255`.
    pub fn to_tensor(&self, rgb_range: f32, device: &Device) -> Tensor<4> {
        let scale = rgb_range / 255.0;
        let values: Vec<f32> = self.data.iter().map(|&v| v * scale).collect();
        Tensor::from_data(
            TensorData::new(values, [1, self.channels, self.height, self.width]),
            device,
        )
    }

    /// Image from a `[1, C, H, W]` tensor with values on the `rgb_range` scale, through the
    /// official `quantize` (x 255 / rgb_range, clamp to 0-255, round half to even).
    pub fn from_tensor(tensor: Tensor<4>, rgb_range: f32) -> Self {
        let mut image = Self::from_tensor_unquantized(tensor, rgb_range);
        for v in &mut image.data {
            *v = v.clamp(0.0, 255.0).round_ties_even();
        }
        image
    }

    /// Image from a tensor without rounding or clamping (float protocols).
    pub fn from_tensor_unquantized(tensor: Tensor<4>, rgb_range: f32) -> Self {
        let [n, c, h, w] = tensor.dims();
        assert_eq!(n, 1, "one image per tensor");
        let data = tensor.into_data().convert::<f32>();
        let scale = 255.0 / rgb_range;
        let values: Vec<f32> = data
            .try_into_vec::<f32>()
            .expect("f32 tensor")
            .into_iter()
            .map(|v| v * scale)
            .collect();
        Self::new(w, h, c, values)
    }

    /// The image in gray: the BT.601 luma `Y` (studio range, MATLAB `rgb2ycbcr`) rounded to
    /// 0..=255, as the papers' grayscale JPEG sets were made from colour images. Gray images are
    /// returned unchanged.
    /// A gray image as RGB (the plane copied three times, as the official `set_channel`
    /// does); RGB images unchanged.
    pub fn gray_to_rgb(&self) -> Self {
        if self.channels != 1 {
            return self.clone();
        }
        let mut out = Self::new(self.width, self.height, 3, self.data.repeat(3));
        out.bit_depth = self.bit_depth;
        out
    }

    /// The mean of the channels as a one-channel image (undoes [`Image::gray_to_rgb`]).
    pub fn channel_mean(&self) -> Self {
        let n = self.width * self.height;
        let mut data = vec![0f32; n];
        for c in 0..self.channels {
            for (d, v) in data.iter_mut().zip(self.plane(c)) {
                *d += v / self.channels as f32;
            }
        }
        let mut out = Self::new(self.width, self.height, 1, data);
        out.bit_depth = self.bit_depth;
        out
    }

    pub fn to_gray(&self) -> Self {
        if self.channels == 1 {
            return self.clone();
        }
        let y = crate::metrics::luma(self);
        let mut out = Self::new(self.width, self.height, 1, y);
        out.bit_depth = self.bit_depth;
        out.quantized()
    }
}

/// MATLAB's conversion to uint8: saturate to 0..=255 and round half away from zero.
pub fn round_u8(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        v.clamp(0.0, 255.0).round() as u8
    }
}

fn read_error(path: &Path, message: impl std::fmt::Display) -> ImageError {
    ImageError::Read {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Read a PNG (8/16-bit), JPEG, TIFF or BMP file (format from its content), or a float image
/// written by the float-noise protocol (`.safetensors`, see [`write_float_image`]).
pub fn read_image(path: impl AsRef<Path>) -> Result<Image, ImageError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    if path.extension().is_some_and(|e| e == "safetensors") {
        return read_float_image(&bytes, path);
    }
    decode_image(&bytes, &path.display().to_string())
}

/// Key of the image tensor in a float image file.
pub const FLOAT_IMAGE_KEY: &str = "image";

fn read_float_image(bytes: &[u8], path: &Path) -> Result<Image, ImageError> {
    let dict = pyra_core::weights::StateDict::from_bytes(bytes, &path.display().to_string())
        .map_err(|e| read_error(path, e))?;
    let t = dict
        .get(FLOAT_IMAGE_KEY)
        .ok_or_else(|| read_error(path, format!("no tensor `{FLOAT_IMAGE_KEY}`")))?;
    let (c, h, w) = match t.shape[..] {
        [c, h, w] | [1, c, h, w] => (c, h, w),
        _ => {
            return Err(read_error(
                path,
                format!("`{FLOAT_IMAGE_KEY}` must be [C, H, W], got {:?}", t.shape),
            ))
        }
    };
    if !(c == 1 || c == 3) || h == 0 || w == 0 {
        return Err(read_error(
            path,
            format!("unsupported image shape {:?}", t.shape),
        ));
    }
    let mut image = Image::new(w, h, c, t.to_f32());
    image.bit_depth = 32;
    Ok(image)
}

/// Write an image without rounding or clipping (values on the 0-255 scale) as a safetensors
/// file holding `image` `[C, H, W]` f32: what the float-noise protocol's inputs need.
pub fn write_float_image(image: &Image, path: impl AsRef<Path>) -> Result<(), ImageError> {
    let path = path.as_ref();
    let mut dict = pyra_core::weights::StateDict::default();
    dict.push(pyra_core::weights::NamedTensor::f32(
        FLOAT_IMAGE_KEY,
        vec![image.channels, image.height, image.width],
        image.data.clone(),
    ));
    pyra_core::weights::save_safetensors(&dict, None, path).map_err(|e| ImageError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Decode an image held in memory (format from its content). The header's size is checked
/// against [`MAX_PIXELS`] before any pixel is decoded.
pub fn decode_image(bytes: &[u8], origin: &str) -> Result<Image, ImageError> {
    let origin = Path::new(origin);
    let reader = || -> Result<ImageReader<std::io::Cursor<&[u8]>>, ImageError> {
        let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| read_error(origin, e))?;
        if reader.format().is_none() {
            return Err(read_error(origin, "not a PNG, JPEG, TIFF or BMP image"));
        }
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_PIXELS * 16);
        reader.limits(limits);
        Ok(reader)
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| read_error(origin, e))?;
    if w == 0 || h == 0 {
        return Err(read_error(origin, "the image has no pixels"));
    }
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(read_error(
            origin,
            format!("{w}x{h} exceeds the pixel budget of {MAX_PIXELS} pixels"),
        ));
    }
    if reader()?.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(read_error(
            origin,
            "the JPEG is truncated (no end-of-image marker after its image data); \
             re-copy or re-download the file",
        ));
    }
    let decoded = reader()?.decode().map_err(|e| read_error(origin, e))?;
    Ok(from_dynamic(decoded))
}

/// Whether a JPEG stream has its end-of-image marker (`FF D9`) after the first start-of-scan
/// (`FF DA`). The decoder pads a stream cut short with grey and reports success; a cut file
/// must be an error instead. Inside the entropy-coded data `FF` is always followed by `00` or
/// a restart marker, so `FF D9` there can only be the real end (an EXIF thumbnail's own
/// markers come before the first scan).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(scan) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

fn from_dynamic(image: DynamicImage) -> Image {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let planar = |channels: usize, values: Vec<f32>, with_alpha: bool, depth: u8| {
        let stride = channels + usize::from(with_alpha);
        let n = w * h;
        let mut data = vec![0f32; n * channels];
        let mut alpha = with_alpha.then(|| vec![0f32; n]);
        for i in 0..n {
            for c in 0..channels {
                data[c * n + i] = values[i * stride + c];
            }
            if let Some(a) = alpha.as_mut() {
                a[i] = values[i * stride + channels];
            }
        }
        Image {
            width: w,
            height: h,
            channels,
            data,
            alpha,
            bit_depth: depth,
        }
    };
    let eight = |v: &[u8]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let sixteen = |v: &[u16]| v.iter().map(|&x| x as f32 / 257.0).collect::<Vec<_>>();
    match image {
        DynamicImage::ImageLuma8(b) => planar(1, eight(b.as_raw()), false, 8),
        DynamicImage::ImageLumaA8(b) => planar(1, eight(b.as_raw()), true, 8),
        DynamicImage::ImageRgb8(b) => planar(3, eight(b.as_raw()), false, 8),
        DynamicImage::ImageRgba8(b) => planar(3, eight(b.as_raw()), true, 8),
        DynamicImage::ImageLuma16(b) => planar(1, sixteen(b.as_raw()), false, 16),
        DynamicImage::ImageLumaA16(b) => planar(1, sixteen(b.as_raw()), true, 16),
        DynamicImage::ImageRgb16(b) => planar(3, sixteen(b.as_raw()), false, 16),
        DynamicImage::ImageRgba16(b) => planar(3, sixteen(b.as_raw()), true, 16),
        other => {
            let b = other.to_rgba32f();
            let values: Vec<f32> = b.as_raw().iter().map(|&x| x * 255.0).collect();
            planar(3, values, true, 16)
        }
    }
}

/// Bit depth of a written PNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Eight,
    Sixteen,
}

/// Encode as PNG (values rounded and clamped; 16-bit scales 0-255 by 257).
pub fn encode_png(image: &Image, depth: Depth) -> Result<Vec<u8>, ImageError> {
    let (w, h) = (image.width as u32, image.height as u32);
    let alpha = image
        .alpha
        .as_ref()
        .filter(|a| a.len() == image.width * image.height);
    let values = match alpha {
        Some(a) => {
            let mut with_alpha = Image::new(
                image.width,
                image.height,
                image.channels + 1,
                [image.data.as_slice(), a.as_slice()].concat(),
            );
            with_alpha.bit_depth = image.bit_depth;
            with_alpha.interleaved()
        }
        None => image.interleaved(),
    };
    let channels = image.channels + usize::from(alpha.is_some());
    let invalid = || ImageError::Invalid("image buffer size mismatch".into());
    let dynamic = match depth {
        Depth::Eight => {
            let raw: Vec<u8> = values.iter().map(|&v| round_u8(v)).collect();
            match channels {
                1 => DynamicImage::ImageLuma8(
                    ImageBuffer::<Luma<u8>, _>::from_raw(w, h, raw).ok_or_else(invalid)?,
                ),
                2 => DynamicImage::ImageLumaA8(
                    ImageBuffer::<LumaA<u8>, _>::from_raw(w, h, raw).ok_or_else(invalid)?,
                ),
                3 => DynamicImage::ImageRgb8(
                    ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, raw).ok_or_else(invalid)?,
                ),
                _ => DynamicImage::ImageRgba8(
                    ImageBuffer::<Rgba<u8>, _>::from_raw(w, h, raw).ok_or_else(invalid)?,
                ),
            }
        }
        Depth::Sixteen => {
            let raw: Vec<u16> = values
                .iter()
                .map(|&v| (v.clamp(0.0, 255.0) * 257.0).round() as u16)
                .collect();
            match channels {
                1 => DynamicImage::ImageLuma16(
                    ImageBuffer::<Luma<u16>, _>::from_raw(w, h, raw).ok_or_else(invalid)?,
                ),
                2 => DynamicImage::ImageLumaA16(
                    ImageBuffer::<LumaA<u16>, _>::from_raw(w, h, raw).ok_or_else(invalid)?,
                ),
                3 => DynamicImage::ImageRgb16(
                    ImageBuffer::<Rgb<u16>, _>::from_raw(w, h, raw).ok_or_else(invalid)?,
                ),
                _ => DynamicImage::ImageRgba16(
                    ImageBuffer::<Rgba<u16>, _>::from_raw(w, h, raw).ok_or_else(invalid)?,
                ),
            }
        }
    };
    let mut bytes = Vec::new();
    dynamic
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| ImageError::Invalid(format!("PNG encoding failed: {e}")))?;
    Ok(bytes)
}

/// Write a lossless PNG atomically (temporary file, then rename).
pub fn write_png(image: &Image, path: impl AsRef<Path>, depth: Depth) -> Result<(), ImageError> {
    let path = path.as_ref();
    let bytes = encode_png(image, depth)?;
    pyra_core::fs::write_atomic(path, &bytes).map_err(|e| ImageError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The image files of a folder (PNG, JPEG, TIFF, BMP by extension), sorted by name.
pub fn list_images(dir: impl AsRef<Path>) -> Result<Vec<std::path::PathBuf>, ImageError> {
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(|e| read_error(dir, e))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image_path(p))
        .collect();
    files.sort();
    Ok(files)
}

pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "png" | "jpg" | "jpeg" | "tif" | "tiff" | "bmp" | "safetensors"
            )
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_8_and_16_bit_with_alpha() {
        let mut img = Image::new(3, 2, 3, (0..18).map(|v| (v * 14) as f32).collect());
        img.alpha = Some(vec![255.0, 0.0, 128.0, 7.0, 9.0, 200.0]);
        for depth in [Depth::Eight, Depth::Sixteen] {
            let bytes = encode_png(&img, depth).unwrap();
            let back = decode_image(&bytes, "mem").unwrap();
            assert_eq!(back.channels, 3);
            assert_eq!(back.alpha, img.alpha);
            for (a, b) in back.data.iter().zip(&img.data) {
                assert!((a - b).abs() < 1e-3, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn tiff_and_bmp_decode() {
        let raw: Vec<u8> = (0..4 * 3 * 3).map(|v| (v * 7) as u8).collect();
        let buffer = ImageBuffer::<Rgb<u8>, _>::from_raw(4, 3, raw.clone()).unwrap();
        for format in [image::ImageFormat::Tiff, image::ImageFormat::Bmp] {
            let mut bytes = Vec::new();
            DynamicImage::ImageRgb8(buffer.clone())
                .write_to(&mut std::io::Cursor::new(&mut bytes), format)
                .unwrap();
            let img = decode_image(&bytes, "mem").unwrap();
            assert_eq!((img.width, img.height, img.channels), (4, 3, 3));
            let back: Vec<u8> = img.interleaved().iter().map(|&v| v as u8).collect();
            assert_eq!(back, raw, "{format:?}");
        }
    }

    #[test]
    fn official_quantize_rounds_half_to_even() {
        let device = pyra_core::backend::cpu();
        let t = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32 / 255.0, 1.5 / 255.0, -0.2, 1.3], [1, 1, 2, 2]),
            &device,
        );
        let img = Image::from_tensor(t, 1.0);
        assert_eq!(img.data, vec![0.0, 2.0, 0.0, 255.0]);
    }

    #[test]
    fn matlab_uint8_rounds_half_away() {
        assert_eq!(round_u8(0.5), 1);
        assert_eq!(round_u8(2.5), 3);
        assert_eq!(round_u8(-3.0), 0);
        assert_eq!(round_u8(300.0), 255);
    }
}
