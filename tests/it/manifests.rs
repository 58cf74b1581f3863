//! Our loaders consume exactly the tensors timm and ultralytics write, for
//! every EfficientNet B0-B7 and YOLOv8 n-x: names and shapes from
//! tools/make_manifests.py, no tensor left over, no tensor missing, the
//! inferred depths/widths equal to each scale's definition, and a forward pass
//! wires every layer's channels together.

use candle_core::{DType, Device, Tensor};
use pear_model::efficientnet::EfficientNet;
use pear_model::weights::Weights;
use pear_model::yolo::YoloV8;
use std::collections::{BTreeMap, HashMap};

fn weights(name: &str) -> Weights {
    let path = format!("{}/tests/fixtures/manifests/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let shapes: BTreeMap<String, Vec<usize>> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let dev = Device::Cpu;
    let mut map = HashMap::new();
    for (k, s) in shapes {
        // Variance 1 keeps batch-norm folding finite; values are irrelevant to the check.
        let t = if k.ends_with("running_var") { Tensor::ones(s, DType::F32, &dev) } else { Tensor::zeros(s, DType::F32, &dev) };
        map.insert(k, t.unwrap());
    }
    Weights::new(map, &dev).unwrap()
}

#[test]
fn efficientnet_b0_to_b7() {
    // (depth multiplier, stem channels) of timm's efficientnet_b0..b7.
    let scales = [(1.0, 32), (1.1, 32), (1.2, 32), (1.4, 40), (1.8, 48), (2.2, 48), (2.6, 56), (3.1, 64)];
    let base = [1usize, 2, 2, 3, 3, 4, 1];
    for (b, (depth, stem)) in scales.iter().enumerate() {
        let w = weights(&format!("efficientnet_b{b}"));
        let net = EfficientNet::load(&w).unwrap_or_else(|e| panic!("b{b}: {e}"));
        assert!(w.unused().is_empty(), "b{b}: unused tensors {:?}", w.unused());
        let want: Vec<usize> = base.iter().map(|r| (*r as f64 * depth).ceil() as usize).collect();
        assert_eq!(net.stage_depths, want, "b{b}: blocks per stage");
        let x = Tensor::zeros((1, 3, 64, 80), DType::F32, &Device::Cpu).unwrap();
        let y = net.forward(&x).unwrap_or_else(|e| panic!("b{b} forward: {e}"));
        assert_eq!(y.dims(), &[1, 8], "b{b}: logits shape");
        assert_eq!(net.stem_channels, *stem, "b{b}: stem width");
    }
}

#[test]
fn yolov8_n_to_x() {
    // (repeats of the eight C2f blocks, stem channels) per scale, from yolov8.yaml.
    let scales = [
        ("n", [1, 2, 2, 1, 1, 1, 1, 1], 16),
        ("s", [1, 2, 2, 1, 1, 1, 1, 1], 32),
        ("m", [2, 4, 4, 2, 2, 2, 2, 2], 48),
        ("l", [3, 6, 6, 3, 3, 3, 3, 3], 64),
        ("x", [3, 6, 6, 3, 3, 3, 3, 3], 80),
    ];
    for (s, repeats, stem) in scales {
        let w = weights(&format!("yolov8{s}"));
        let net = YoloV8::load(&w, 1e-3).unwrap_or_else(|e| panic!("yolov8{s}: {e}"));
        assert!(w.unused().is_empty(), "yolov8{s}: unused tensors {:?}", w.unused());
        assert_eq!(net.repeats, repeats.to_vec(), "yolov8{s}: C2f repeats");
        assert_eq!(net.stem_channels, stem, "yolov8{s}: width");
        let x = Tensor::zeros((1, 3, 64, 96), DType::F32, &Device::Cpu).unwrap();
        let y = net.forward(&x).unwrap_or_else(|e| panic!("yolov8{s} forward: {e}"));
        // 2 classes + 4 box values; anchors 8x12 + 4x6 + 2x3.
        assert_eq!(y.dims(), &[1, 6, 96 + 24 + 6], "yolov8{s}: output shape");
    }
}
