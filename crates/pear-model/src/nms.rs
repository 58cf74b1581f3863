//! Non-maximum suppression and box mapping, as ultralytics' predict does them.
//!
//! Candidates need a best-class score strictly above `conf`; boxes of
//! different classes never suppress each other (ultralytics offsets them by
//! class); plain IoU without the +1 pixel convention; at most `max_det` kept.
//! Non-finite scores or boxes are dropped instead of poisoning the sort.

use super::preprocess::{round_half_even, LetterboxGeometry};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// x1, y1, x2, y2
    pub bbox: [f32; 4],
    pub score: f32,
    pub class: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmsParams {
    pub conf: f32,
    pub iou: f32,
    pub max_det: usize,
}

impl Default for NmsParams {
    /// ultralytics' predict defaults; also what a bundle that names none gets.
    fn default() -> Self {
        NmsParams { conf: 0.25, iou: 0.7, max_det: 300 }
    }
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// `pred` is the detector output for one image, row-major (4 + nc, n): cx, cy, w, h, scores.
pub fn non_max_suppression(pred: &[f32], nc: usize, n: usize, p: NmsParams) -> Vec<Detection> {
    let mut cands: Vec<Detection> = Vec::new();
    if pred.len() < (4 + nc) * n {
        return cands;
    }
    for i in 0..n {
        let (mut best, mut class) = (f32::NEG_INFINITY, 0);
        for c in 0..nc {
            let s = pred[(4 + c) * n + i];
            if s > best {
                best = s;
                class = c;
            }
        }
        // ultralytics keeps a score strictly above conf; a NaN score fails too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(best > p.conf) {
            continue;
        }
        let (cx, cy, w, h) = (pred[i], pred[n + i], pred[2 * n + i], pred[3 * n + i]);
        let bbox = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
        if bbox.iter().all(|v| v.is_finite()) {
            cands.push(Detection { bbox, score: best, class });
        }
    }
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    cands.truncate(30_000);
    let mut keep: Vec<Detection> = Vec::new();
    let mut suppressed = vec![false; cands.len()];
    for i in 0..cands.len() {
        if suppressed[i] {
            continue;
        }
        keep.push(cands[i]);
        if keep.len() == p.max_det {
            break;
        }
        for j in i + 1..cands.len() {
            if !suppressed[j] && cands[j].class == cands[i].class && iou(&cands[i].bbox, &cands[j].bbox) > p.iou {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// ultralytics `scale_boxes`: from letterboxed input back to the original image, clipped.
pub fn scale_to_image(dets: &mut [Detection], g: &LetterboxGeometry, img_h: usize, img_w: usize) {
    let (ih, iw) = (g.input_hw.0 as f64, g.input_hw.1 as f64);
    let gain = (ih / img_h as f64).min(iw / img_w as f64);
    let new_h = round_half_even(img_h as f64 * gain).max(1.0);
    let new_w = round_half_even(img_w as f64 * gain).max(1.0);
    let (gain_y, gain_x) = (new_h / img_h as f64, new_w / img_w as f64);
    let pad_x = round_half_even((iw - new_w) / 2.0 - 0.1) as f32;
    let pad_y = round_half_even((ih - new_h) / 2.0 - 0.1) as f32;
    for d in dets {
        let b = &mut d.bbox;
        b[0] = ((b[0] - pad_x) / gain_x as f32).clamp(0.0, img_w as f32);
        b[1] = ((b[1] - pad_y) / gain_y as f32).clamp(0.0, img_h as f32);
        b[2] = ((b[2] - pad_x) / gain_x as f32).clamp(0.0, img_w as f32);
        b[3] = ((b[3] - pad_y) / gain_y as f32).clamp(0.0, img_h as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppresses_same_class_only() {
        // three anchors, two classes: 0 and 1 overlap fully but differ in class, 2 duplicates 0.
        let n = 3;
        let mut pred = vec![0f32; 6 * n];
        for i in 0..n {
            pred[i] = 50.0;
            pred[n + i] = 50.0;
            pred[2 * n + i] = 20.0;
            pred[3 * n + i] = 20.0;
        }
        pred[4 * n] = 0.9; // anchor 0 class 0
        pred[5 * n + 1] = 0.8; // anchor 1 class 1
        pred[4 * n + 2] = 0.7; // anchor 2 class 0
        let d = non_max_suppression(&pred, 2, n, NmsParams::default());
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].class, d[1].class), (0, 1));
    }

    #[test]
    fn nan_is_dropped() {
        let pred = vec![f32::NAN, 1.0, 1.0, 1.0, 0.9];
        assert!(non_max_suppression(&pred, 1, 1, NmsParams::default()).is_empty());
    }
}
