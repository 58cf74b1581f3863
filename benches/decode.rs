//! JPEG decode time per frame: ours (libjpeg-turbo, as OpenCV) against the
//! `image` crate's decoder that pear-server used before, side by side.
//!
//!     cargo bench --bench decode
//!
//! 640x480 is a sorting-line frame (OpenCV-encoded, q92 4:2:0); 2592x1944 is a
//! 5 MP camera frame made here from it (image crate encoder, q90 4:2:0).

use criterion::{criterion_group, criterion_main, Criterion};
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use pear_model::decode::{decode_image, Limits};
use std::path::Path;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let small = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg/q92_420.jpg")).unwrap();
    let frame = decode_image(&small, &Limits::default()).unwrap();
    let big_img = image::imageops::resize(&frame, 2592, 1944, FilterType::Triangle);
    let mut big = Vec::new();
    JpegEncoder::new_with_quality(&mut big, 90).encode_image(&big_img).unwrap();

    let mut g = c.benchmark_group("decode");
    g.sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    for (name, bytes) in [("640x480", &small), ("2592x1944", &big)] {
        g.bench_function(format!("libjpeg_turbo_{name}"), |b| b.iter(|| decode_image(bytes, &Limits::default()).unwrap()));
        g.bench_function(format!("image_crate_{name}"), |b| b.iter(|| image::load_from_memory(bytes).unwrap().to_rgb8()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
