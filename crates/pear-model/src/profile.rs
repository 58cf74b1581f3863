//! Where a forward's time goes, convolution by convolution: each call's
//! time and multiply-adds, summed per layer shape, so a bench can print
//! every layer's share and its GFLOP/s next to the machine's sgemm peak
//! (`PEAR_BENCH_LAYERS=1 cargo bench --bench model`). Off unless
//! `enable`d; off, it costs each convolution one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static LAYERS: Mutex<Vec<Layer>> = Mutex::new(Vec::new());

/// One layer shape's calls since the last `take`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Kind, kernel/stride, channels and input size, e.g. "conv 3x3/2 16->32 128x160".
    pub name: String,
    pub calls: u64,
    pub seconds: f64,
    /// Multiply-adds of one call.
    pub macs: u64,
}

impl Layer {
    /// GFLOP/s over its calls (two FLOPs a multiply-add of the direct
    /// convolution: a Winograd layer, doing fewer, can pass the peak).
    pub fn gflops(&self) -> f64 {
        2.0 * self.macs as f64 * self.calls as f64 / self.seconds.max(1e-12) / 1e9
    }
}

/// Starts or stops recording, process-wide.
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// The layers recorded since the last call, in the order first seen, and
/// a fresh start.
pub fn take() -> Vec<Layer> {
    std::mem::take(&mut *LAYERS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// `f()`, timed and recorded under `name()` with `macs` multiply-adds when
/// recording is on (the name is only made then).
pub(crate) fn timed<T>(name: impl FnOnce() -> String, macs: impl FnOnce() -> u64, f: impl FnOnce() -> T) -> T {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let seconds = start.elapsed().as_secs_f64();
    let (name, macs) = (name(), macs());
    let mut layers = LAYERS.lock().unwrap_or_else(|e| e.into_inner());
    match layers.iter_mut().find(|l| l.name == name) {
        Some(l) => {
            l.calls += 1;
            l.seconds += seconds;
        }
        None => layers.push(Layer { name, calls: 1, seconds, macs }),
    }
    out
}

/// The layers as a table: calls per forward (`forwards` of them), time per
/// forward, share of the whole, GFLOP/s.
pub fn table(layers: &[Layer], forwards: u64) -> String {
    let total: f64 = layers.iter().map(|l| l.seconds).sum();
    let per = forwards.max(1) as f64;
    let mut out = format!("{:<44} {:>6} {:>9} {:>6} {:>8}\n", "layer", "calls", "ms", "share", "GFLOP/s");
    for l in layers {
        out += &format!(
            "{:<44} {:>6.1} {:>9.3} {:>5.1}% {:>8.1}\n",
            l.name,
            l.calls as f64 / per,
            l.seconds / per * 1e3,
            100.0 * l.seconds / total.max(1e-12),
            l.gflops()
        );
    }
    out + &format!("{:<44} {:>6} {:>9.3}\n", "all", "", total / per * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm_conv::GemmConv2d;
    use candle_core::{Device, Tensor};

    /// On, a convolution is recorded under its shape with its multiply-adds
    /// once per call.
    #[test]
    fn records_each_call_of_a_layer() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // A shape no other test uses (tests share the process-wide record).
        let conv = GemmConv2d::new(
            &Tensor::ones((7, 5, 3, 3), candle_core::DType::F32, &dev)?,
            &Tensor::zeros(7, candle_core::DType::F32, &dev)?,
            2,
            1,
            false,
        )?;
        let x = Tensor::ones((1, 5, 13, 11), candle_core::DType::F32, &dev)?;
        enable(true);
        for _ in 0..3 {
            conv.forward(&x)?;
        }
        enable(false);
        let layers = take();
        let ours = layers.iter().find(|l| l.name == "conv 3x3/2 5->7 13x11").unwrap_or_else(|| panic!("not recorded: {layers:?}"));
        assert_eq!(ours.calls, 3);
        // 7x6 outputs a channel (13x11 at stride 2), 7 channels, each
        // output 5 x 3 x 3 multiply-adds.
        assert_eq!(ours.macs, 7 * 6 * 7 * 5 * 9);
        assert!(ours.seconds > 0.0 && ours.gflops() > 0.0);
        assert!(table(&layers, 3).contains("conv 3x3/2 5->7 13x11"));
        Ok(())
    }
}
