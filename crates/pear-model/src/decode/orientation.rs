//! EXIF orientation, applied as OpenCV's `imread` does by default.
//!
//! The original read images with `cv2.imread(path)`, which rotates or flips a
//! picture whose EXIF orientation tag says so; a camera that writes the tag
//! instead of rotating pixels must give the same crop here.

use image::RgbImage;

/// Orientation tag (1..=8) from an EXIF block (the TIFF structure after
/// "Exif\0\0"); 1 (as stored) when absent or malformed.
pub fn from_exif(tiff: &[u8]) -> u16 {
    read_orientation(tiff).filter(|o| (1..=8).contains(o)).unwrap_or(1)
}

fn read_orientation(t: &[u8]) -> Option<u16> {
    let little = match t.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |i: usize| -> Option<u16> {
        let b: [u8; 2] = t.get(i..i + 2)?.try_into().ok()?;
        Some(if little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    };
    let u32_at = |i: usize| -> Option<u32> {
        let b: [u8; 4] = t.get(i..i + 4)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for i in 0..count {
        let e = ifd.checked_add(2 + 12 * i)?;
        // Tag 0x0112, type SHORT (3): the value sits in the entry itself.
        if u16_at(e)? == 0x0112 && u16_at(e + 2)? == 3 {
            return u16_at(e + 8);
        }
    }
    None
}

/// Applies orientation `o` (EXIF numbering) the way OpenCV's
/// `ApplyExifOrientation` does: flips for 2-4, transpose-based for 5-8.
pub fn apply(img: RgbImage, o: u16) -> RgbImage {
    let (w, h) = img.dimensions();
    let swap = o >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    if o <= 1 || o > 8 {
        return img;
    }
    RgbImage::from_fn(ow, oh, |x, y| {
        // Source pixel for output (x, y).
        let (sx, sy) = match o {
            2 => (w - 1 - x, y),         // mirror left-right
            3 => (w - 1 - x, h - 1 - y), // rotate 180
            4 => (x, h - 1 - y),         // mirror top-bottom
            5 => (y, x),                 // transpose
            6 => (y, h - 1 - x),         // rotate 90 clockwise
            7 => (w - 1 - y, h - 1 - x), // transverse
            _ => (w - 1 - y, x),         // 8: rotate 90 counter-clockwise
        };
        *img.get_pixel(sx, sy)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Bytes16 = fn(u16) -> [u8; 2];
    type Bytes32 = fn(u32) -> [u8; 4];

    fn exif(little: bool, orientation: u16) -> Vec<u8> {
        let (u16b, u32b): (Bytes16, Bytes32) =
            if little { (u16::to_le_bytes, u32::to_le_bytes) } else { (u16::to_be_bytes, u32::to_be_bytes) };
        let mut t = if little { b"II".to_vec() } else { b"MM".to_vec() };
        t.extend(u16b(42));
        t.extend(u32b(8));
        t.extend(u16b(2));
        t.extend(u16b(0x010f)); // Make, ASCII: skipped
        t.extend(u16b(2));
        t.extend(u32b(4));
        t.extend(b"abc\0");
        t.extend(u16b(0x0112));
        t.extend(u16b(3));
        t.extend(u32b(1));
        t.extend(u16b(orientation));
        t.extend([0, 0]);
        t
    }

    #[test]
    fn reads_both_byte_orders_and_ignores_garbage() {
        assert_eq!(from_exif(&exif(true, 6)), 6);
        assert_eq!(from_exif(&exif(false, 8)), 8);
        assert_eq!(from_exif(&exif(true, 9)), 1);
        assert_eq!(from_exif(&exif(true, 6)[..20]), 1);
        assert_eq!(from_exif(b""), 1);
        assert_eq!(from_exif(b"II\x2a\0\xff\xff\xff\xff"), 1);
    }

    /// Each orientation maps the stored top-left pixel where EXIF says it belongs.
    #[test]
    fn corners_land_where_exif_puts_them() {
        let img = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let at = |o: u16| {
            let r = apply(img.clone(), o);
            let p = r.enumerate_pixels().find(|(_, _, p)| p.0 == [0, 0, 9]).map(|(x, y, _)| (x, y));
            (r.dimensions(), p.unwrap())
        };
        assert_eq!(at(1), ((3, 2), (0, 0)));
        assert_eq!(at(2), ((3, 2), (2, 0)));
        assert_eq!(at(3), ((3, 2), (2, 1)));
        assert_eq!(at(4), ((3, 2), (0, 1)));
        assert_eq!(at(5), ((2, 3), (0, 0)));
        assert_eq!(at(6), ((2, 3), (1, 0)));
        assert_eq!(at(7), ((2, 3), (1, 2)));
        assert_eq!(at(8), ((2, 3), (0, 2)));
    }
}
