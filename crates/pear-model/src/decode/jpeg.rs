//! JPEG through the system's libjpeg-turbo, as OpenCV's `imread` decodes it.
//!
//! The `image` crate's own decoder rounds its IDCT and chroma upsampling
//! differently, which moved the classifier's confidence by up to 9 points on
//! camera JPEGs. libjpeg-turbo with imread's settings gives the original's
//! pixels exactly; `jpeg_shim.c` keeps libjpeg's longjmp errors out of Rust.

use super::{orientation, DecodeError, Limits};
use image::RgbImage;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

#[repr(C)]
struct RawJpeg {
    _private: [u8; 0],
}

extern "C" {
    fn pear_jpeg_new() -> *mut RawJpeg;
    fn pear_jpeg_free(j: *mut RawJpeg);
    fn pear_jpeg_error(j: *const RawJpeg) -> *const c_char;
    fn pear_jpeg_warnings(j: *const RawJpeg) -> c_int;
    fn pear_jpeg_warning(j: *const RawJpeg) -> *const c_char;
    fn pear_jpeg_header(j: *mut RawJpeg, data: *const u8, len: usize, w: *mut u32, h: *mut u32, comps: *mut c_int) -> c_int;
    fn pear_jpeg_exif(j: *const RawJpeg, len: *mut usize) -> *const u8;
    fn pear_jpeg_decode(j: *mut RawJpeg, cmyk: c_int, out: *mut u8, out_len: usize) -> c_int;
}

/// One libjpeg decompressor, destroyed whatever path the decode takes.
struct Decompressor<'a> {
    raw: *mut RawJpeg,
    /// libjpeg reads from these bytes until the decompressor is gone.
    _data: &'a [u8],
}

impl<'a> Decompressor<'a> {
    fn new(data: &'a [u8]) -> Result<Self, DecodeError> {
        // SAFETY: returns an owned handle or null.
        let raw = unsafe { pear_jpeg_new() };
        if raw.is_null() {
            return Err(DecodeError::Corrupt("cannot create a JPEG decoder".into()));
        }
        Ok(Decompressor { raw, _data: data })
    }

    fn error(&self) -> String {
        // SAFETY: the shim keeps a NUL-terminated buffer for the handle's life.
        unsafe { CStr::from_ptr(pear_jpeg_error(self.raw)) }.to_string_lossy().into_owned()
    }

    fn first_warning(&self) -> Option<String> {
        // SAFETY: as for `error`.
        unsafe {
            if pear_jpeg_warnings(self.raw) == 0 {
                return None;
            }
            Some(CStr::from_ptr(pear_jpeg_warning(self.raw)).to_string_lossy().into_owned())
        }
    }

    /// Reads the header; the EXIF marker is reachable only through the
    /// result, which `decode` consumes (libjpeg frees saved markers then).
    fn read_header(self) -> Result<Header<'a>, DecodeError> {
        let (mut width, mut height, mut comps) = (0u32, 0u32, 0 as c_int);
        // SAFETY: `_data` outlives the handle; out-pointers are valid locals.
        let failed = unsafe { pear_jpeg_header(self.raw, self._data.as_ptr(), self._data.len(), &mut width, &mut height, &mut comps) } != 0;
        if failed {
            return Err(DecodeError::Corrupt(self.error()));
        }
        Ok(Header { d: self, width, height, comps })
    }
}

/// A decompressor whose header was read and whose pixels were not yet.
struct Header<'a> {
    d: Decompressor<'a>,
    width: u32,
    height: u32,
    comps: c_int,
}

impl<'a> Header<'a> {
    /// The EXIF marker's bytes; borrowed from the header, so unusable once it is decoded.
    fn exif(&self) -> &[u8] {
        let mut len = 0usize;
        // SAFETY: between header and decode (the borrow of `self` ensures it),
        // libjpeg keeps the marker in its per-image pool.
        unsafe {
            let p = pear_jpeg_exif(self.d.raw, &mut len);
            if p.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(p, len)
            }
        }
    }

    /// Decodes into `buf` (exactly width x height x channels bytes); gives
    /// the decompressor back for its warnings.
    fn decode(self, cmyk: bool, buf: &mut [u8]) -> Result<Decompressor<'a>, DecodeError> {
        // SAFETY: `buf` has exactly the length the shim checks against.
        if unsafe { pear_jpeg_decode(self.d.raw, cmyk as c_int, buf.as_mut_ptr(), buf.len()) } != 0 {
            return Err(DecodeError::Corrupt(self.d.error()));
        }
        Ok(self.d)
    }
}

impl Drop for Decompressor<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from pear_jpeg_new and is freed once.
        unsafe { pear_jpeg_free(self.raw) }
    }
}

/// Decodes a JPEG to RGB exactly as `cv2.imread(path, IMREAD_COLOR)` followed
/// by BGR->RGB: grey is replicated, CMYK/YCCK converted with OpenCV's formula,
/// the EXIF orientation applied. Any libjpeg warning (truncated or corrupt
/// data, which imread would decode into a partly grey picture) is refused.
pub fn decode(data: &[u8], limits: &Limits) -> Result<RgbImage, DecodeError> {
    let header = Decompressor::new(data)?.read_header()?;
    let (w, h) = (header.width, header.height);
    limits.check(w, h)?;
    let turn = orientation::from_exif(header.exif());
    let cmyk = header.comps == 4;
    let channels = if cmyk { 4 } else { 3 };
    let mut buf = vec![0u8; w as usize * h as usize * channels];
    let d = header.decode(cmyk, &mut buf)?;
    if let Some(w) = d.first_warning() {
        return Err(DecodeError::Incomplete(w));
    }
    let rgb = if cmyk { cmyk_to_rgb(&buf) } else { buf };
    let img = RgbImage::from_raw(w, h, rgb).ok_or_else(|| DecodeError::Corrupt("decoded size mismatch".into()))?;
    Ok(orientation::apply(img, turn))
}

/// OpenCV's `icvCvt_CMYK2BGR_8u_C4C3R`, channel for channel: libjpeg hands
/// back the stored (Adobe-inverted) values and OpenCV converts them as-is.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let k = px[3] as i32;
        for &v in &px[..3] {
            out.push((k - (((255 - v as i32) * k) >> 8)) as u8);
        }
    }
    out
}
