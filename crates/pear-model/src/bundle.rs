//! The model bundle: one `.safetensors` file with both networks and metadata.
//!
//! Tensors keep their libraries' names under `detector.` (ultralytics) and
//! `classifier.` (timm). The safetensors header's metadata holds one JSON
//! document under the key `pear_bundle`: what each network is, its class
//! names and input size, the classifier's channel order and normalisation,
//! and where the weights came from. Written by `tools/convert.py`.

use super::weights::Weights;
use super::{ModelError, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT: &str = "pear-bundle/1";
pub const META_KEY: &str = "pear_bundle";

fn d_stride() -> usize {
    32
}
// ultralytics' predict defaults, kept in one place (`NmsParams::default`).
fn d_conf() -> f32 {
    crate::nms::NmsParams::default().conf
}
fn d_iou() -> f32 {
    crate::nms::NmsParams::default().iou
}
fn d_max_det() -> usize {
    crate::nms::NmsParams::default().max_det
}
fn d_eps() -> f64 {
    1e-3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorMeta {
    /// Always "yolov8".
    pub arch: String,
    /// n, s, m, l, x, or a description of a custom width/depth.
    #[serde(default)]
    pub scale: String,
    pub class_names: Vec<String>,
    /// Letterbox size (ultralytics' `imgsz`, from the checkpoint's training args).
    pub imgsz: usize,
    #[serde(default = "d_stride")]
    pub stride: usize,
    /// Detector class that is the fruit.
    #[serde(default)]
    pub fruit_class: usize,
    #[serde(default = "d_eps")]
    pub bn_eps: f64,
    #[serde(default = "d_conf")]
    pub conf: f32,
    #[serde(default = "d_iou")]
    pub iou: f32,
    #[serde(default = "d_max_det")]
    pub max_det: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    /// What the original server fed its classifier (a BGR crop handed to PIL as RGB).
    Bgr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierMeta {
    /// Always "efficientnet".
    pub arch: String,
    #[serde(default)]
    pub variant: String,
    pub class_names: Vec<String>,
    /// The crop's shorter side is resized to this.
    pub input_size: usize,
    pub channel_order: ChannelOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleMeta {
    pub format: String,
    pub detector: DetectorMeta,
    pub classifier: ClassifierMeta,
    /// Suggested minimum detection score for the pipeline (the server's config wins).
    #[serde(default)]
    pub confidence_threshold: Option<f32>,
    /// Free text: where the weights came from.
    #[serde(default)]
    pub source: String,
}

/// Largest letterbox (ultralytics' P6 models train at 1280).
pub const MAX_IMGSZ: usize = 1280;
/// Largest classifier input side (EfficientNet-B7 uses 600).
pub const MAX_INPUT_SIZE: usize = 1024;
pub const MAX_CLASSES: usize = 1000;
pub const MAX_DET: usize = 1000;

impl BundleMeta {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::BadMetadata(m));
        if self.format != FORMAT {
            return bad(format!("format is '{}', expected '{FORMAT}'", self.format));
        }
        if self.detector.arch != "yolov8" {
            return bad(format!("detector.arch '{}' is not supported (yolov8)", self.detector.arch));
        }
        if self.classifier.arch != "efficientnet" {
            return bad(format!("classifier.arch '{}' is not supported (efficientnet)", self.classifier.arch));
        }
        let d = &self.detector;
        // Caps that keep one image within a fixed memory and time budget.
        if d.stride == 0 || d.imgsz < d.stride || d.imgsz > MAX_IMGSZ {
            return bad(format!("detector.imgsz {} must be between stride {} and {MAX_IMGSZ}", d.imgsz, d.stride));
        }
        if d.class_names.len() > MAX_CLASSES || self.classifier.class_names.len() > MAX_CLASSES {
            return bad(format!("at most {MAX_CLASSES} class names per network"));
        }
        if d.max_det == 0 || d.max_det > MAX_DET {
            return bad(format!("detector.max_det {} must be within 1..={MAX_DET}", d.max_det));
        }
        if d.fruit_class >= d.class_names.len() {
            return bad(format!("detector.fruit_class {} but only {} classes", d.fruit_class, d.class_names.len()));
        }
        let c = &self.classifier;
        if c.input_size < 32 || c.input_size > MAX_INPUT_SIZE {
            return bad(format!("classifier.input_size {} must be within 32..={MAX_INPUT_SIZE}", c.input_size));
        }
        if c.class_names.is_empty() {
            return bad("classifier.class_names is empty".into());
        }
        // Written so that NaN fails too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if c.std.iter().any(|s| !(*s > 0.0)) {
            return bad("classifier.std must be positive".into());
        }
        Ok(())
    }
}

/// A parsed bundle: metadata plus the two networks' tensors.
pub struct Bundle {
    pub meta: BundleMeta,
    pub detector: Weights,
    pub classifier: Weights,
}

impl Bundle {
    pub fn load(path: &Path, dev: &Device) -> Result<Self> {
        let bytes = std::fs::read(path)?;
        Self::from_bytes(&bytes, dev)
    }

    pub fn from_bytes(bytes: &[u8], dev: &Device) -> Result<Self> {
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| ModelError::NotABundle(format!("not a safetensors file ({e})")))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| ModelError::NotABundle(format!("safetensors metadata has no '{META_KEY}' entry")))?;
        let meta: BundleMeta = serde_json::from_str(meta_json).map_err(|e| ModelError::BadMetadata(e.to_string()))?;
        meta.validate()?;
        let tensors =
            candle_core::safetensors::load_buffer(bytes, dev).map_err(|e| ModelError::NotABundle(format!("cannot read tensors ({e})")))?;
        let weights = Weights::new(tensors, dev)?;
        Ok(Bundle { meta, detector: weights.pp("detector"), classifier: weights.pp("classifier") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_meta(meta: Option<&str>) -> Vec<u8> {
        let data = vec![0u8; 16];
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
        let md = meta.map(|m| HashMap::from([(META_KEY.to_string(), m.to_string())]));
        safetensors::serialize([("detector.x", view)], md).unwrap()
    }

    fn err(bytes: &[u8]) -> String {
        match Bundle::from_bytes(bytes, &Device::Cpu) {
            Ok(_) => panic!("must not load"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn invalid_bundles_say_why() {
        assert!(err(b"garbage").contains("not a safetensors file"));
        assert!(err(&with_meta(None)).contains("no 'pear_bundle'"));
        assert!(err(&with_meta(Some("{"))).contains("invalid model metadata"));
        let good = r#"{"format":"pear-bundle/1","detector":{"arch":"yolov8","class_names":["pear"],"imgsz":320},
            "classifier":{"arch":"efficientnet","class_names":["a"],"input_size":96,"channel_order":"rgb","mean":[0,0,0],"std":[1,1,1]}}"#;
        assert!(Bundle::from_bytes(&with_meta(Some(good)), &Device::Cpu).is_ok());
        assert!(err(&with_meta(Some(&good.replace("yolov8", "yolov5")))).contains("detector.arch"));
        assert!(err(&with_meta(Some(&good.replace("\"rgb\"", "\"rbg\"")))).contains("invalid model metadata"));
        assert!(err(&with_meta(Some(&good.replace("320", "7")))).contains("imgsz"));
    }
}
