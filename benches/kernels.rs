//! Our GEMM against candle's matmul (the `gemm` crate) on the convolution
//! shapes of yolov8n at 320x256 and efficientnet_b3 at 512x740, one thread,
//! in GFLOP/s (criterion's "elem/s" here counts floating-point operations).
//!
//!     cargo bench --bench kernels
//!     PEAR_SIMD=avx2 cargo bench --bench kernels    # the AVX2 path on an AVX-512 host
//!
//! M output channels, N output pixels, K = input channels x taps; B is a
//! plain row-major matrix here (in the convolutions it is im2col, packed
//! straight from the image).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pear_model::sgemm::{gemm, Epilogue, PackedWeights, RowMajor};
use pear_model::simd::Simd;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    pear_model::cpu::single_threaded_candle_ops(); // candle's matmul on one thread too
    let simd = Simd::active();
    let dev = Device::Cpu;
    let mut g = c.benchmark_group(format!("sgemm_{simd}"));
    g.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    // (M, N, K): yolov8n's C2f 3x3 at 1/4 and 1/16, its 1/32 3x3, b3's
    // stage-2 expand and project 1x1, and a square-ish reference.
    for (m, n, k) in [(16, 5120, 144), (64, 320, 576), (256, 80, 2304), (144, 23680, 24), (32, 23680, 144), (256, 1024, 256)] {
        let a = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap();
        let (av, bv) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let packed = PackedWeights::pack(simd, &av, m, k);
        let bias = vec![0.1; m];
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        // With and without SiLU: the networks apply it after almost every
        // convolution, and at small K it costs as much as the multiply-adds.
        for silu in [false, true] {
            let name = if silu { "ours_silu" } else { "ours" };
            g.bench_function(format!("{name}_{m}x{n}x{k}"), |it| {
                it.iter(|| {
                    let epi = Epilogue { bias: &bias, silu, residual: None };
                    // SAFETY: out is m x n.
                    unsafe { gemm(&packed, &RowMajor { data: &bv, cols: n }, n, out.as_mut_ptr(), n, &epi) }
                })
            });
        }
        g.bench_function(format!("candle_{m}x{n}x{k}"), |it| it.iter(|| a.matmul(&b).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
