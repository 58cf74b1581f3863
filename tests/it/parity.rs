//! The candle pipeline equals the PyTorch one (ultralytics + timm) on the same
//! weights and images. Reference outputs come from
//! `tools/make_parity_fixtures.py` and are committed under tests/fixtures/parity
//! (PNG frames) and tests/fixtures/parity_jpeg (JPEG frames, which the
//! reference read through OpenCV's imread, as the original server did).

use candle_core::{Device, Tensor};
use pear_model::decode::decode_image;
use pear_model::pipeline::Pipeline;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Fixture {
    bundle: String,
    confidence_threshold: f32,
    images: Vec<ImageRecord>,
}

#[derive(Deserialize)]
struct ImageRecord {
    file: String,
    input_hw: [usize; 2],
    boxes: Vec<[f32; 6]>,
    crop: Option<[u32; 4]>,
    classifier_input_hw: Option<[usize; 2]>,
    logits: Option<Vec<f32>>,
    class: Option<usize>,
}

struct Ctx {
    dir: PathBuf,
    fixture: Fixture,
    raws: HashMap<String, Tensor>,
    pipeline: Pipeline,
}

fn ctx(fixtures: &str) -> Ctx {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var("PEAR_PARITY_DIR").map(PathBuf::from).unwrap_or(root.join("tests/fixtures").join(fixtures));
    let fixture: Fixture = serde_json::from_slice(&std::fs::read(dir.join("parity.json")).expect("parity.json")).expect("fixture json");
    let bundle = std::env::var("PEAR_PARITY_BUNDLE").map(PathBuf::from).unwrap_or(root.join("weights").join(&fixture.bundle));
    let dev = Device::Cpu;
    let raws = candle_core::safetensors::load(dir.join("raw.safetensors"), &dev).expect("raw.safetensors");
    let pipeline = Pipeline::load(&bundle, &dev, Some(fixture.confidence_threshold)).expect("bundle loads");
    Ctx { dir, fixture, raws, pipeline }
}

fn iou(a: &[f32], b: &[f32]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let i = iw * ih;
    i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)
}

#[test]
fn parity_with_pytorch_png() {
    check(ctx("parity"));
}

#[test]
fn parity_with_pytorch_jpeg() {
    check(ctx("parity_jpeg"));
}

fn check(c: Ctx) {
    assert!(c.fixture.images.len() >= 8, "need at least 8 reference images");
    let (mut worst_raw, mut worst_iou, mut worst_score, mut worst_rel) = (0f32, 1f32, 0f32, 0f32);
    let mut classified = 0;
    for (i, rec) in c.fixture.images.iter().enumerate() {
        let img = decode_image(&std::fs::read(c.dir.join(&rec.file)).unwrap(), &Default::default()).unwrap();

        // 1. Raw detector output on the letterboxed image.
        let (raw, g) = c.pipeline.detector_raw(&img).unwrap();
        assert_eq!([g.input_hw.0, g.input_hw.1], rec.input_hw, "{}: letterbox size", rec.file);
        let want = &c.raws[&format!("raw_{i}")];
        assert_eq!(raw.dims(), want.dims(), "{}: raw shape", rec.file);
        let d = (raw - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        worst_raw = worst_raw.max(d);
        assert!(d <= 1e-3, "{}: detector raw max abs diff {d}", rec.file);

        // 2. Final boxes after NMS, in image pixels.
        let dets = c.pipeline.detect(&img).unwrap();
        assert_eq!(dets.len(), rec.boxes.len(), "{}: number of boxes", rec.file);
        for (ours, theirs) in dets.iter().zip(&rec.boxes) {
            let u = iou(&ours.bbox, &theirs[..4]);
            worst_iou = worst_iou.min(u);
            worst_score = worst_score.max((ours.score - theirs[4]).abs());
            assert!(u >= 0.999, "{}: box IoU {u}", rec.file);
            assert!((ours.score - theirs[4]).abs() <= 1e-3, "{}: score {} vs {}", rec.file, ours.score, theirs[4]);
            assert_eq!(ours.class, theirs[5] as usize, "{}: box class", rec.file);
        }

        // 3. Classifier on the original pipeline's crop.
        let pick = c.pipeline.pick_fruit(&dets);
        assert_eq!(pick.is_some(), rec.crop.is_some(), "{}: fruit found", rec.file);
        if let (Some(best), Some(crop), Some(logits)) = (pick, rec.crop, &rec.logits) {
            let ours_crop = Pipeline::crop(&img, &best.bbox).unwrap();
            let theirs_crop = image::imageops::crop_imm(&img, crop[0], crop[1], crop[2] - crop[0], crop[3] - crop[1]).to_image();
            assert_eq!(ours_crop.dimensions(), theirs_crop.dimensions(), "{}: crop", rec.file);
            let x = c.pipeline.classifier_input(&ours_crop).unwrap();
            assert_eq!(x.dims()[2..], rec.classifier_input_hw.unwrap()[..], "{}: classifier input size", rec.file);
            let ours = c.pipeline.classify_logits(&ours_crop).unwrap();
            let scale = logits.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let rel = ours.iter().zip(logits).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            worst_rel = worst_rel.max(rel);
            assert!(rel <= 1e-3, "{}: logits relative error {rel}", rec.file);
            let argmax = ours.iter().enumerate().fold(0, |bi, (i, v)| if *v > ours[bi] { i } else { bi });
            assert_eq!(Some(argmax), rec.class, "{}: class", rec.file);
            let full = c.pipeline.inspect(&img).unwrap();
            assert_eq!(full.class, rec.class, "{}: pipeline class", rec.file);
            classified += 1;
        }
    }
    assert!(classified >= 6, "at least 6 fixtures must exercise the classifier, got {classified}");
    println!(
        "parity over {} images in {}: raw max abs diff {worst_raw:.2e}, min box IoU {worst_iou:.5}, max score diff {worst_score:.2e}, logits max rel err {worst_rel:.2e}",
        c.fixture.images.len(),
        c.dir.display()
    );
}
