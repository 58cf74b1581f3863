//! Detect, crop, classify: what the original server's detector did per image.
//!
//! 1. YOLOv8 on the letterboxed image, NMS, boxes mapped back.
//! 2. Keep fruit-class boxes scoring at least the confidence threshold; take the best.
//! 3. Crop the original image to it (integer pixels, truncated as Python's int()).
//! 4. Shorter side to the classifier's size (PIL bilinear), channel order and
//!    normalisation from the bundle, EfficientNet, softmax, argmax.

use super::bundle::{Bundle, BundleMeta, ChannelOrder};
use super::efficientnet::EfficientNet;
use super::nms::{non_max_suppression, scale_to_image, Detection, NmsParams};
use super::preprocess::{letterbox, normalize, resize_pil_bilinear, short_side_size, LetterboxGeometry};
use super::yolo::YoloV8;
use super::{ModelError, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;
use std::path::Path;

/// A fruit box longer than this many times its width (or the reverse) is not classified.
pub const MAX_CROP_ASPECT: usize = 8;
/// Largest classifier input (about 8 x 512 x 512): keeps one image's activations bounded.
pub const MAX_CLASSIFIER_PIXELS: usize = 8 * 512 * 512;

/// The answer for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// Classifier class index, `None` when no fruit was found.
    pub class: Option<usize>,
    pub label: Option<String>,
    /// Softmax probability of `class`.
    pub confidence: Option<f32>,
    /// Fruit box in image pixels (x1, y1, x2, y2).
    pub bbox: Option<[f32; 4]>,
    pub detection_score: Option<f32>,
}

pub struct Pipeline {
    pub meta: BundleMeta,
    pub detector: YoloV8,
    pub classifier: EfficientNet,
    device: Device,
    confidence_threshold: f32,
}

impl Pipeline {
    /// Loads a bundle; `confidence_threshold` overrides the bundle's suggestion.
    /// A bundle is accepted only if both networks infer finite outputs.
    pub fn load(path: &Path, dev: &Device, confidence_threshold: Option<f32>) -> Result<Self> {
        Self::from_bytes(&std::fs::read(path)?, dev, confidence_threshold)
    }

    /// A bundle file's bytes, loaded and smoke-tested like `load` (the caller
    /// keeps the bytes, to hash exactly what was loaded, say).
    pub fn from_bytes(bytes: &[u8], dev: &Device, confidence_threshold: Option<f32>) -> Result<Self> {
        let p = Self::from_bundle(Bundle::from_bytes(bytes, dev)?, dev, confidence_threshold)?;
        p.smoke_test()?;
        Ok(p)
    }

    /// One pass through each network on synthetic input: a tensor whose
    /// shape loads but does not fit its layer, or NaN weights, fail here
    /// instead of on every image afterwards.
    pub fn smoke_test(&self) -> Result<()> {
        let img = RgbImage::from_fn(97, 75, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8]));
        let fail = |e: ModelError| ModelError::SmokeTest(e.to_string());
        self.detect(&img).map_err(fail)?;
        self.classify_logits(&img).map_err(fail)?;
        Ok(())
    }

    pub fn from_bundle(b: Bundle, dev: &Device, confidence_threshold: Option<f32>) -> Result<Self> {
        let detector = YoloV8::load(&b.detector, b.meta.detector.bn_eps)?;
        let classifier = EfficientNet::load(&b.classifier)?;
        if detector.detect.num_classes != b.meta.detector.class_names.len() {
            return Err(ModelError::BadMetadata(format!(
                "detector has {} classes but metadata names {}",
                detector.detect.num_classes,
                b.meta.detector.class_names.len()
            )));
        }
        if classifier.num_classes() != b.meta.classifier.class_names.len() {
            return Err(ModelError::BadMetadata(format!(
                "classifier has {} classes but metadata names {}",
                classifier.num_classes(),
                b.meta.classifier.class_names.len()
            )));
        }
        let unused: Vec<String> = [b.detector.unused(), b.classifier.unused()].concat();
        if !unused.is_empty() {
            log::warn!("model bundle has {} tensors no layer uses, e.g. {}", unused.len(), unused[0]);
        }
        let confidence_threshold = confidence_threshold.or(b.meta.confidence_threshold).unwrap_or(0.5);
        Ok(Pipeline { meta: b.meta, detector, classifier, device: dev.clone(), confidence_threshold })
    }

    pub fn confidence_threshold(&self) -> f32 {
        self.confidence_threshold
    }

    /// Raw detector output (4 + classes, anchors) for one image, and the letterbox used.
    pub fn detector_raw(&self, img: &RgbImage) -> Result<(Tensor, LetterboxGeometry)> {
        let d = &self.meta.detector;
        let (x, g) = letterbox(img, d.imgsz, d.stride, &self.device)?;
        Ok((self.detector.forward(&x)?.squeeze(0)?, g))
    }

    /// All detections (after NMS) in image coordinates.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        let (raw, g) = self.detector_raw(img)?;
        let (rows, n) = raw.dims2()?;
        let flat = raw.flatten_all()?.to_vec1::<f32>()?;
        if !flat.iter().all(|v| v.is_finite()) {
            return Err(ModelError::NonFinite("the detector"));
        }
        let d = &self.meta.detector;
        let mut dets = non_max_suppression(&flat, rows - 4, n, NmsParams { conf: d.conf, iou: d.iou, max_det: d.max_det });
        scale_to_image(&mut dets, &g, img.height() as usize, img.width() as usize);
        Ok(dets)
    }

    /// The classifier's exact input for a crop: (1, 3, H, W). The shorter
    /// side is scaled to the input size, so a very thin box would make a huge
    /// input; past `MAX_CROP_ASPECT` or `MAX_CLASSIFIER_PIXELS` it is refused.
    pub fn classifier_input(&self, crop: &RgbImage) -> Result<Tensor> {
        let c = &self.meta.classifier;
        let (w, h) = (crop.width() as usize, crop.height() as usize);
        let (nw, nh) = short_side_size(w, h, c.input_size);
        if w.max(h) > MAX_CROP_ASPECT * w.min(h) || nw.saturating_mul(nh) > MAX_CLASSIFIER_PIXELS {
            return Err(ModelError::CropTooLarge(format!(
                "the fruit box is {w}x{h} pixels, too thin to classify (longer side above {MAX_CROP_ASPECT}x the shorter, or over {MAX_CLASSIFIER_PIXELS} pixels once scaled)"
            )));
        }
        let resized = resize_pil_bilinear(crop, nw.max(1), nh.max(1));
        Ok(normalize(&resized, c.channel_order == ChannelOrder::Bgr, c.mean, c.std, &self.device)?)
    }

    /// Classifier logits for a crop.
    pub fn classify_logits(&self, crop: &RgbImage) -> Result<Vec<f32>> {
        let x = self.classifier_input(crop)?;
        let logits = self.classifier.forward(&x)?.squeeze(0)?.to_vec1::<f32>()?;
        if !logits.iter().all(|v| v.is_finite()) {
            return Err(ModelError::NonFinite("the classifier"));
        }
        Ok(logits)
    }

    /// The fruit box the pipeline would crop, if any.
    pub fn pick_fruit(&self, dets: &[Detection]) -> Option<Detection> {
        let fruit = self.meta.detector.fruit_class;
        dets.iter().filter(|d| d.class == fruit && d.score >= self.confidence_threshold).max_by(|a, b| a.score.total_cmp(&b.score)).copied()
    }

    /// Integer crop as the original did (`int()` of each clipped coordinate).
    pub fn crop(img: &RgbImage, bbox: &[f32; 4]) -> Option<RgbImage> {
        let (x1, y1) = (bbox[0].max(0.0) as u32, bbox[1].max(0.0) as u32);
        let (x2, y2) = ((bbox[2].max(0.0) as u32).min(img.width()), (bbox[3].max(0.0) as u32).min(img.height()));
        if x2 <= x1 || y2 <= y1 {
            return None;
        }
        Some(image::imageops::crop_imm(img, x1, y1, x2 - x1, y2 - y1).to_image())
    }

    pub fn inspect(&self, img: &RgbImage) -> Result<Inspection> {
        let none = Inspection { class: None, label: None, confidence: None, bbox: None, detection_score: None };
        let dets = self.detect(img)?;
        let Some(best) = self.pick_fruit(&dets) else { return Ok(none) };
        let Some(crop) = Self::crop(img, &best.bbox) else { return Ok(none) };
        let logits = self.classify_logits(&crop)?;
        let probs = softmax(&logits);
        let (class, p) = probs.iter().enumerate().fold((0, f32::NEG_INFINITY), |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc });
        Ok(Inspection {
            class: Some(class),
            label: self.meta.classifier.class_names.get(class).cloned(),
            confidence: Some(p),
            bbox: Some(best.bbox),
            detection_score: Some(best.score),
        })
    }
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}
