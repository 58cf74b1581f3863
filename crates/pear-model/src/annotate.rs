//! Draws an inspection onto its image (the fruit box and "label 0.93"), for
//! `pear-client classify --annotate` and the server's `[debug] annotated_dir`.

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;

/// DejaVu Sans (assets/fonts, with its licence).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

const BOX: Rgb<u8> = Rgb([255, 200, 0]);
const TEXT: Rgb<u8> = Rgb([0, 0, 0]);

/// Draws `bbox` (x1, y1, x2, y2 in pixels, if any) and `caption` above it
/// (or in the top-left corner when there is no box).
pub fn draw(img: &mut RgbImage, bbox: Option<[f32; 4]>, caption: &str) {
    let (w, h) = (img.width() as i32, img.height() as i32);
    if w == 0 || h == 0 {
        return;
    }
    let thick = (w.min(h) / 200).max(2);
    let (mut tx, mut ty) = (0, 0);
    if let Some([x1, y1, x2, y2]) = bbox {
        let (x1, y1) = (x1.max(0.0) as i32, y1.max(0.0) as i32);
        let (x2, y2) = ((x2 as i32).min(w - 1), (y2 as i32).min(h - 1));
        for t in 0..thick {
            let (rw, rh) = (x2 - x1 - 2 * t, y2 - y1 - 2 * t);
            if rw > 0 && rh > 0 {
                draw_hollow_rect_mut(img, Rect::at(x1 + t, y1 + t).of_size(rw as u32, rh as u32), BOX);
            }
        }
        (tx, ty) = (x1, y1);
    }
    let Ok(font) = FontRef::try_from_slice(FONT) else { return };
    let scale = PxScale::from((h as f32 / 25.0).max(14.0));
    let (tw, th) = text_size(scale, &font, caption);
    let pad = 4;
    // Above the box when there is room, else inside it.
    let ty = if ty >= th as i32 + 2 * pad { ty - th as i32 - 2 * pad } else { ty };
    let tx = tx.min((w - tw as i32 - 2 * pad).max(0));
    draw_filled_rect_mut(img, Rect::at(tx, ty).of_size(tw + 2 * pad as u32, th + 2 * pad as u32), BOX);
    draw_text_mut(img, TEXT, tx + pad, ty + pad, scale, &font, caption);
}

/// "label 0.93", "class 2", or "no pear".
pub fn caption(detected: bool, class: Option<i64>, label: Option<&str>, confidence: Option<f64>) -> String {
    if !detected {
        return "no pear".into();
    }
    let name = label.map(str::to_string).or(class.map(|c| format!("class {c}"))).unwrap_or_else(|| "?".into());
    match confidence {
        Some(p) => format!("{name} {p:.2}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_box_and_caption_inside_the_image() {
        let mut img = RgbImage::new(200, 150);
        draw(&mut img, Some([20.0, 60.0, 180.0, 140.0]), "rot 0.97");
        assert_eq!(*img.get_pixel(20, 100), BOX, "left edge of the box");
        assert_eq!(*img.get_pixel(100, 100), Rgb([0, 0, 0]), "inside untouched");
        // The caption sits above the box: its padding is box-coloured, its text dark.
        assert_eq!(*img.get_pixel(21, 57), BOX, "caption background just above the box");
        let text = (42..58).flat_map(|y| (24..80).map(move |x| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0[0] < 128).count();
        assert!(text > 10, "caption text drawn on its background ({text} dark pixels)");
        // Degenerate boxes and tiny images do not panic.
        draw(&mut RgbImage::new(1, 1), Some([-5.0, 3.0, 900.0, 2.0]), "x");
        draw(&mut RgbImage::new(30, 10), None, "no pear");
        assert_eq!(caption(false, Some(0), None, None), "no pear");
        assert_eq!(caption(true, Some(3), Some("rot"), Some(0.973)), "rot 0.97");
        assert_eq!(caption(true, Some(3), None, None), "class 3");
    }
}
