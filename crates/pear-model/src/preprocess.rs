//! Image handling that must match the reference libraries to the bit.
//!
//! The detector was trained and is judged with ultralytics' letterbox, which
//! resizes with OpenCV's INTER_LINEAR (11-bit fixed point, and a 2x2 box filter
//! when both sides shrink exactly by 2); the classifier with PIL's bilinear
//! resize (antialiased, 22-bit fixed point). Being "close" shifts pixel values
//! by one here and there, and the networks' outputs by more than the parity
//! tolerance, so both are reimplemented exactly, including their rounding.

use candle_core::{Device, Tensor};
use image::RgbImage;

/// Python's round(): half to even.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// Where the letterbox put the image inside the network input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LetterboxGeometry {
    /// Network input size (height, width).
    pub input_hw: (usize, usize),
    /// Resized image size before padding (width, height).
    pub new_unpad: (usize, usize),
    pub top: usize,
    pub left: usize,
}

/// ultralytics `LetterBox(imgsz, auto=True, stride)` parameters for an image of h x w.
pub fn letterbox_geometry(h: usize, w: usize, imgsz: usize, stride: usize) -> LetterboxGeometry {
    let r = (imgsz as f64 / h as f64).min(imgsz as f64 / w as f64);
    let nw = (round_half_even(w as f64 * r) as usize).max(1);
    let nh = (round_half_even(h as f64 * r) as usize).max(1);
    // auto=True: pad only up to the next multiple of the stride ("rectangular" inference).
    let dw = (imgsz.saturating_sub(nw) % stride) as f64 / 2.0;
    let dh = (imgsz.saturating_sub(nh) % stride) as f64 / 2.0;
    let top = round_half_even(dh - 0.1) as usize;
    let bottom = round_half_even(dh + 0.1) as usize;
    let left = round_half_even(dw - 0.1) as usize;
    let right = round_half_even(dw + 0.1) as usize;
    LetterboxGeometry { input_hw: (nh + top + bottom, nw + left + right), new_unpad: (nw, nh), top, left }
}

/// Letterboxed network input: (1, 3, H, W), RGB, /255.
pub fn letterbox(img: &RgbImage, imgsz: usize, stride: usize, dev: &Device) -> candle_core::Result<(Tensor, LetterboxGeometry)> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let g = letterbox_geometry(h, w, imgsz, stride);
    let resized;
    let src = if (w, h) != g.new_unpad {
        resized = resize_linear_cv(img, g.new_unpad.0, g.new_unpad.1);
        &resized
    } else {
        img
    };
    let (ih, iw) = g.input_hw;
    let mut data = vec![114.0f32 / 255.0; 3 * ih * iw];
    let (nw, nh) = g.new_unpad;
    let raw = src.as_raw();
    for y in 0..nh {
        for x in 0..nw {
            let p = &raw[(y * nw + x) * 3..(y * nw + x) * 3 + 3];
            let o = (y + g.top) * iw + x + g.left;
            for c in 0..3 {
                data[c * ih * iw + o] = p[c] as f32 / 255.0;
            }
        }
    }
    Ok((Tensor::from_vec(data, (1, 3, ih, iw), dev)?, g))
}

/// OpenCV's source index and fixed-point weights for one output coordinate.
fn cv_coeffs(src: usize, dst: usize, clamp: bool) -> Vec<(isize, i32, i32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as isize;
            let mut fx = f - s as f32;
            if clamp && s < 0 {
                fx = 0.0;
                s = 0;
            }
            if clamp && s >= src as isize - 1 {
                fx = 0.0;
                s = src as isize - 1;
            }
            let a0 = round_half_even(((1.0f32 - fx) * 2048.0) as f64) as i32;
            let a1 = round_half_even((fx * 2048.0) as f64) as i32;
            (s, a0, a1)
        })
        .collect()
}

/// `cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)` on 8-bit RGB, bit-exact.
pub fn resize_linear_cv(img: &RgbImage, nw: usize, nh: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = vec![0u8; nw * nh * 3];
    if w == 2 * nw && h == 2 * nh {
        // OpenCV switches to INTER_AREA for an exact 2x shrink: a 2x2 mean.
        for y in 0..nh {
            for x in 0..nw {
                for c in 0..3 {
                    let at = |yy: usize, xx: usize| src[(yy * w + xx) * 3 + c] as u32;
                    let s = at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1);
                    out[(y * nw + x) * 3 + c] = ((s + 2) >> 2) as u8;
                }
            }
        }
        return RgbImage::from_raw(nw as u32, nh as u32, out).unwrap_or_default();
    }
    let xc = cv_coeffs(w, nw, true);
    let yc = cv_coeffs(h, nh, false);
    // Horizontal pass for every source row, kept in 32-bit like OpenCV's buffer.
    let mut hrows = vec![0i32; h * nw * 3];
    for y in 0..h {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        for (x, &(s, a0, a1)) in xc.iter().enumerate() {
            let s = s as usize;
            let s1 = (s + 1).min(w - 1);
            for c in 0..3 {
                hrows[(y * nw + x) * 3 + c] = row[s * 3 + c] as i32 * a0 + row[s1 * 3 + c] as i32 * a1;
            }
        }
    }
    for (y, &(s, b0, b1)) in yc.iter().enumerate() {
        let r0 = s.clamp(0, h as isize - 1) as usize;
        let r1 = (s + 1).clamp(0, h as isize - 1) as usize;
        for i in 0..nw * 3 {
            let v0 = hrows[r0 * nw * 3 + i];
            let v1 = hrows[r1 * nw * 3 + i];
            let v = (((b0 * (v0 >> 4)) >> 16) + ((b1 * (v1 >> 4)) >> 16) + 2) >> 2;
            out[y * nw * 3 + i] = v.clamp(0, 255) as u8;
        }
    }
    RgbImage::from_raw(nw as u32, nh as u32, out).unwrap_or_default()
}

const PIL_BITS: u32 = 22;

/// PIL's `precompute_coeffs` for the bilinear filter, normalised to fixed point.
fn pil_coeffs(in_size: usize, out_size: usize) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support is 1
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C's (int) truncation
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut w: Vec<f64> = (0..n)
            .map(|x| {
                let t = ((x + xmin) as f64 - center + 0.5) * ss;
                let t = t.abs();
                if t < 1.0 {
                    1.0 - t
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        for (x, v) in w.iter().enumerate() {
            let f = v * (1u32 << PIL_BITS) as f64;
            kk[xx * ksize + x] = if *v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        bounds.push((xmin, n));
    }
    (bounds, kk, ksize)
}

fn pil_clip8(v: i64) -> u8 {
    if v >= (1i64 << PIL_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PIL_BITS) as u8
    }
}

/// `PIL.Image.resize((nw, nh), Image.BILINEAR)` on 8-bit RGB, bit-exact.
pub fn resize_pil_bilinear(img: &RgbImage, nw: usize, nh: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut cur = img.clone();
    let mut cw = w;
    if nw != w {
        let (bounds, kk, ksize) = pil_coeffs(w, nw);
        let src = cur.as_raw();
        let mut out = vec![0u8; nw * h * 3];
        for y in 0..h {
            for (x, &(xmin, n)) in bounds.iter().enumerate() {
                let k = &kk[x * ksize..x * ksize + n];
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PIL_BITS - 1);
                    for (j, kv) in k.iter().enumerate() {
                        ss += src[(y * w + xmin + j) * 3 + c] as i64 * *kv as i64;
                    }
                    out[(y * nw + x) * 3 + c] = pil_clip8(ss);
                }
            }
        }
        cur = RgbImage::from_raw(nw as u32, h as u32, out).unwrap_or_default();
        cw = nw;
    }
    if nh != h {
        let (bounds, kk, ksize) = pil_coeffs(h, nh);
        let src = cur.as_raw();
        let mut out = vec![0u8; cw * nh * 3];
        for (y, &(ymin, n)) in bounds.iter().enumerate() {
            let k = &kk[y * ksize..y * ksize + n];
            for x in 0..cw {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PIL_BITS - 1);
                    for (j, kv) in k.iter().enumerate() {
                        ss += src[((ymin + j) * cw + x) * 3 + c] as i64 * *kv as i64;
                    }
                    out[(y * cw + x) * 3 + c] = pil_clip8(ss);
                }
            }
        }
        cur = RgbImage::from_raw(cw as u32, nh as u32, out).unwrap_or_default();
    }
    cur
}

/// torchvision `Resize(size)` output (width, height): shorter side = size, the
/// longer one truncated as `int(size * long / short)`.
pub fn short_side_size(w: usize, h: usize, size: usize) -> (usize, usize) {
    if w <= h {
        (size, (size as f64 * h as f64 / w as f64) as usize)
    } else {
        ((size as f64 * w as f64 / h as f64) as usize, size)
    }
}

/// Normalised (1, 3, H, W) tensor; `swap_rb` feeds B,G,R as the original did.
pub fn normalize(img: &RgbImage, swap_rb: bool, mean: [f32; 3], std: [f32; 3], dev: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut data = vec![0f32; 3 * h * w];
    for i in 0..h * w {
        for c in 0..3 {
            let src_c = if swap_rb { 2 - c } else { c };
            data[c * h * w + i] = (raw[i * 3 + src_c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    Tensor::from_vec(data, (1, 3, h, w), dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(-0.5), -0.0);
        assert_eq!(round_half_even(2.4), 2.0);
    }

    #[test]
    fn letterbox_is_rectangular() {
        // 640x480 at 320: 320x240, padded to 256 rows (8 + 8).
        let g = letterbox_geometry(480, 640, 320, 32);
        assert_eq!(g.new_unpad, (320, 240));
        assert_eq!(g.input_hw, (256, 320));
        assert_eq!((g.top, g.left), (8, 0));
    }

    #[test]
    fn short_side() {
        assert_eq!(short_side_size(195, 282, 512), (512, 740));
        assert_eq!(short_side_size(300, 200, 96), (144, 96));
    }
}
