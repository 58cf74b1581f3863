//! Image files to RGB pixels, as the original's `cv2.imread` saw them.
//!
//! JPEG goes through libjpeg-turbo (`jpeg`), PNG through the `image` crate
//! (lossless, so any correct decoder agrees). The format is taken from the
//! file's first bytes, not its name. Dimensions are checked against
//! [`Limits`] from the header, before any pixel buffer exists.

pub mod jpeg;
pub mod orientation;

use image::RgbImage;

/// Why a file gave no picture; every one answers error_code 2.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JPEG or PNG image")]
    UnknownFormat,
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// Data ends early or is damaged (a file the camera is still writing).
    #[error("incomplete image: {0}")]
    Incomplete(String),
    #[error("image is {width}x{height} pixels, more than images.max_pixels ({max})")]
    TooLarge { width: u32, height: u32, max: u64 },
}

/// Bounds on what one decode may allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Width x height at most (3 bytes each once decoded).
    pub max_pixels: u64,
    /// Largest image file read.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // 40 MP: a 2592x1944 camera frame is 5 MP; 40 MP of RGB is 120 MB.
        // 64 MiB: a 5 MP camera JPEG is 1-3 MB, a 5 MP PNG about 15 MB.
        Limits { max_pixels: 40_000_000, max_file_bytes: 64 << 20 }
    }
}

impl Limits {
    fn check(&self, width: u32, height: u32) -> Result<(), DecodeError> {
        if width == 0 || height == 0 {
            return Err(DecodeError::Corrupt(format!("image is {width}x{height} pixels")));
        }
        if width as u64 * height as u64 > self.max_pixels {
            return Err(DecodeError::TooLarge { width, height, max: self.max_pixels });
        }
        Ok(())
    }
}

/// Decodes a JPEG or PNG file's bytes to RGB.
pub fn decode_image(bytes: &[u8], limits: &Limits) -> Result<RgbImage, DecodeError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg::decode(bytes, limits)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, limits)
    } else {
        Err(DecodeError::UnknownFormat)
    }
}

/// PNG: grey replicated and alpha dropped, as imread's IMREAD_COLOR does. A
/// file without its IEND chunk is still being written.
fn decode_png(bytes: &[u8], limits: &Limits) -> Result<RgbImage, DecodeError> {
    const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
    if !bytes.windows(IEND.len()).rev().any(|w| w == IEND) {
        return Err(DecodeError::Incomplete("PNG ends before its IEND chunk".into()));
    }
    check_palette(bytes)?;
    use image::{ImageDecoder, ImageFormat, ImageReader};
    use std::io::Cursor;
    let corrupt = |e: image::ImageError| DecodeError::Corrupt(e.to_string());
    let dec = image::codecs::png::PngDecoder::new(Cursor::new(bytes)).map_err(corrupt)?;
    let (w, h) = dec.dimensions();
    limits.check(w, h)?;
    let img = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Png).decode().map_err(corrupt)?;
    Ok(img.into_rgb8())
}

/// A PLTE chunk must hold 1 to 256 whole RGB entries (PNG spec 11.2.3). The
/// png crate indexes past the end of a palette that does not (found by the
/// `decode` fuzz target), so such a file is refused here first.
fn check_palette(bytes: &[u8]) -> Result<(), DecodeError> {
    let mut at = 8;
    while let (Some(len), Some(kind)) = (bytes.get(at..at + 4), bytes.get(at + 4..at + 8)) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if kind == b"PLTE" && (len == 0 || !len.is_multiple_of(3) || len > 768) {
            return Err(DecodeError::Corrupt(format!("PNG palette of {len} bytes is not 1 to 256 RGB entries")));
        }
        if kind == b"IEND" {
            break;
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    Ok(())
}
