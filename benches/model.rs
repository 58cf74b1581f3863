//! Per-image cost of the model layer: detector, classifier, whole pipeline.
//!
//!     cargo bench --bench model
//!     PEAR_BENCH_LAYERS=1 cargo bench --bench model   # then each network's convolutions, layer by layer
//!     PEAR_BENCH_BUNDLE=/tmp/orig/orig-shapes.safetensors PEAR_BENCH_IMAGES=/tmp/orig/frames \
//!         cargo bench --bench model      # adds the whole pipeline on that bundle
//!
//! The classifier case is the original's production shape: efficientnet_b3 at
//! 512x740 (a 195x282 crop upscaled to shorter side 512). Its weights are
//! random (timm's tensor shapes from tests/fixtures/manifests): speed does not
//! depend on the values. The same work in PyTorch: tools/bench_torch.py.

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use pear_model::decode::decode_image;
use pear_model::efficientnet::EfficientNet;
use pear_model::pipeline::Pipeline;
use pear_model::weights::Weights;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn random_b3() -> EfficientNet {
    let path = Path::new(ROOT).join("tests/fixtures/manifests/efficientnet_b3.json");
    let shapes: BTreeMap<String, Vec<usize>> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let dev = Device::Cpu;
    let mut map = HashMap::new();
    for (k, s) in shapes {
        let t = if k.ends_with("running_var") { Tensor::ones(s, DType::F32, &dev) } else { Tensor::randn(0f32, 0.05, s, &dev) };
        map.insert(k, t.unwrap());
    }
    EfficientNet::load(&Weights::new(map, &dev).unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    pear_model::cpu::single_threaded_candle_ops(); // as the server runs
    pear_model::cpu::keep_freed_memory();
    // As a server worker runs: its kernels on a pool of its own that
    // includes its own thread (PEAR_BENCH_THREADS, default every core), so a
    // parallel region starts on the calling thread instead of waiting for
    // two pool threads to wake. Building it makes this thread the pool's
    // worker 0 (criterion cannot move into `install`).
    let threads = std::env::var("PEAR_BENCH_THREADS")
        .ok()
        .map(|t| t.parse().expect("PEAR_BENCH_THREADS is a thread count"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _pool = rayon::ThreadPoolBuilder::new().num_threads(threads).use_current_thread().build().unwrap();
    assert_eq!(rayon::current_thread_index(), Some(0), "this thread runs in the pool");
    let dev = Device::Cpu;
    let bundle = Path::new(ROOT).join("weights/pear-default.safetensors");
    let pipeline = Pipeline::load(&bundle, &dev, None).unwrap();
    let img = decode_image(&std::fs::read(Path::new(ROOT).join("samples/normal_1.jpg")).unwrap(), &Default::default()).unwrap();
    let mut g = c.benchmark_group("model");
    g.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));

    // YOLOv8n at 320 on a 640x480 frame (letterboxed input 320x256), as the original measured.
    let x320 = Tensor::rand(0f32, 1.0, (1, 3, 256, 320), &dev).unwrap();
    g.bench_function("yolov8n_320x256", |b| b.iter(|| pipeline.detector.forward(&x320).unwrap()));
    let imgsz = pipeline.meta.detector.imgsz;
    g.bench_function(format!("detector_default_letterbox+forward_{imgsz}"), |b| b.iter(|| pipeline.detector_raw(&img).unwrap()));

    let b3 = random_b3();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 740, 512), &dev).unwrap();
    g.bench_function("efficientnet_b3_512x740", |b| b.iter(|| b3.forward(&x).unwrap()));

    let crop = Pipeline::crop(&img, &[10.0, 10.0, 150.0, 200.0]).unwrap();
    g.bench_function("classifier_default_crop", |b| b.iter(|| pipeline.classify_logits(&crop).unwrap()));
    g.bench_function("pipeline_default_per_image", |b| b.iter(|| pipeline.inspect(&img).unwrap()));

    // The original's whole per-image work on a bundle with its model shapes
    // (tools/make_bench_bundle.py), decode included, cycling over the frames:
    // compare with `tools/bench_torch.py --pipeline`.
    if let (Ok(bundle), Ok(frames)) = (std::env::var("PEAR_BENCH_BUNDLE"), std::env::var("PEAR_BENCH_IMAGES")) {
        let p = Pipeline::load(Path::new(&bundle), &dev, Some(0.5)).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&frames).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let data: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        let mut i = 0;
        g.bench_function("pipeline_bundle_per_image", |b| {
            b.iter(|| {
                i += 1;
                let img = decode_image(&data[i % data.len()], &Default::default()).unwrap();
                assert!(p.inspect(&img).unwrap().class.is_some(), "the detector must find the pear");
            })
        });
    }
    g.finish();

    // PEAR_BENCH_LAYERS=1: each network's convolutions layer by layer, over
    // forwards of their own (the timing would otherwise sit in criterion's).
    if std::env::var_os("PEAR_BENCH_LAYERS").is_some() {
        layer_table("yolov8n_320x256", 50, || drop(pipeline.detector.forward(&x320).unwrap()));
        layer_table("efficientnet_b3_512x740", 5, || drop(b3.forward(&x).unwrap()));
    }
}

/// `forwards` runs of `forward` (after one unrecorded) and their layer table.
fn layer_table(name: &str, forwards: u64, forward: impl Fn()) {
    forward();
    pear_model::profile::take();
    pear_model::profile::enable(true);
    for _ in 0..forwards {
        forward();
    }
    pear_model::profile::enable(false);
    let layers = pear_model::profile::take();
    println!(
        "\n{name}, per forward ({forwards} forwards, SIMD level {}):\n{}",
        pear_model::simd::Simd::active(),
        pear_model::profile::table(&layers, forwards)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
