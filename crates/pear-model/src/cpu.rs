//! Borrowing a CPU tensor's data for our own kernels, and the one small
//! reduction they need.
//!
//! candle's elementwise ops run on one process-wide thread pool that every
//! inference worker shares (and queues on); our kernels run on the calling
//! worker's own rayon pool instead, so they read tensors directly.

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A contiguous f32 CPU tensor's data, borrowed while the view lives.
pub struct CpuView<'a> {
    guard: StorageRef<'a>,
    start: usize,
    len: usize,
}

impl CpuView<'_> {
    pub fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => &[], // cpu_f32 admits nothing else
        }
    }
}

pub fn cpu_f32(t: &Tensor) -> candle_core::Result<CpuView<'_>> {
    let (guard, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("conv needs contiguous inputs".into()))?;
    if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
        candle_core::bail!("our conv kernels take f32 CPU tensors");
    }
    Ok(CpuView { guard, start, len: end - start })
}

/// Turns candle's own process-wide elementwise pool off unless
/// CANDLE_NUM_THREADS says otherwise: every worker shares it and queues on
/// it (yolov8n took 31 instead of 26 ms with it on), while the heavy work
/// runs in our kernels on each worker's own pool. Call at start, before any
/// other thread exists and before the first tensor operation.
pub fn single_threaded_candle_ops() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Makes the allocator keep freed memory for reuse instead of returning it
/// to the kernel. glibc maps every allocation above 32 MiB on its own and
/// unmaps it when freed, so each image's widest activations (efficientnet_b3
/// at 512x740: 144 channels x 370 x 256, 55 MB) came back as fresh pages,
/// each faulted and zeroed by the kernel on first write: 14k page faults per
/// forward, a fifth of its time. With mmap off and trimming off, the memory
/// freed after one image is the next image's, already mapped. The process
/// keeps its peak (which it needs again for the next image anyway); an
/// allocation glibc cannot place in a heap still gets its own mapping.
/// All threads share the one main arena: a server's inference threads
/// otherwise get arenas of their own, whose heaps (64 MiB at most each) do
/// not hold the widest tensors, so those went back to the kernel on every
/// image anyway (345k page faults against 63k in a one-client load bench
/// run, and 394 against 254 MiB peak RSS).
/// Call at start, before the first image and before other threads exist.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it takes glibc's own locks.
    unsafe {
        if libc::mallopt(libc::M_MMAP_MAX, 0) != 1
            || libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) != 1
            || libc::mallopt(libc::M_ARENA_MAX, 1) != 1
        {
            log::warn!("mallopt refused: freed activations go back to the kernel");
        }
    }
}

/// While it lives, the other threads of the calling thread's rayon pool
/// wait for work awake instead of asleep. A forward is some sixty parallel
/// regions with short serial steps between them; rayon's idle threads sleep
/// after a few rounds of yielding, and waking one for the next region cost
/// a futex call and a context switch each time (a tenth of a yolov8n
/// forward under perf). Idle, they yield the core to the OS between polls,
/// and in the server they run at SCHED_IDLE, so they take nothing from
/// connections. None outside a pool, or on a pool of one.
pub fn hot_threads() -> Option<HotThreads> {
    let caller = rayon::current_thread_index()?;
    if rayon::current_num_threads() < 2 {
        return None;
    }
    let state = Arc::new(Hot::default());
    let shared = state.clone();
    rayon::spawn_broadcast(move |ctx| {
        if ctx.index() == caller {
            return;
        }
        shared.waiting.fetch_add(1, Ordering::AcqRel);
        let mut idle = 0u32;
        while !shared.done.load(Ordering::Acquire) {
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => idle = 0,
                _ if idle < 100 => {
                    idle += 1;
                    std::hint::spin_loop();
                }
                _ => std::thread::yield_now(),
            }
        }
        shared.waiting.fetch_sub(1, Ordering::AcqRel);
    });
    Some(HotThreads(state))
}

#[derive(Default)]
struct Hot {
    done: AtomicBool,
    /// Threads in the waiting loop now.
    waiting: AtomicUsize,
}

/// `hot_threads`' guard: dropping it sends the waiting threads back to rayon
/// and returns once none is left in the loop.
pub struct HotThreads(Arc<Hot>);

impl HotThreads {
    /// How many threads wait for work awake now.
    pub fn waiting(&self) -> usize {
        self.0.waiting.load(Ordering::Acquire)
    }
}

impl Drop for HotThreads {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
        // A poll is short (one steal attempt or one sched_yield); a thread
        // that had not started its loop yet sees `done` and never enters.
        // Yields rather than spins: the waiter may need this core to finish.
        while self.waiting() > 0 {
            std::thread::yield_now();
        }
    }
}

/// Mean over the spatial dims: (N, C, H, W) -> (N, C), channels in parallel.
pub fn global_avg_pool(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let x = x.contiguous()?;
    let view = cpu_f32(&x)?;
    let plane = h * w;
    let means: Vec<f32> = view.slice().par_chunks(plane.max(1)).map(|p| sum(p) / plane as f32).collect();
    drop(view);
    Tensor::from_vec(means, (n, c), x.device())
}

/// The sum of `v` in 16 interleaved partial sums: a single running sum is
/// one dependent add per value (the adds' latency, not their throughput,
/// sets the pace: 18 ms of squeeze-excite means per b3 forward), and the
/// compiler may not reorder float adds itself.
pub(crate) fn sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    /// Page faults of this thread so far.
    fn faults() -> i64 {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        u.ru_minflt
    }

    /// A freed 48 MiB activation is reused in place by the next one: no
    /// fresh pages (without `keep_freed_memory`, glibc unmaps it and the
    /// second round faults all 12288 pages in again).
    #[test]
    fn freed_activations_are_reused_without_page_faults() {
        keep_freed_memory();
        let round = || {
            let before = faults();
            let mut v: Vec<f32> = Vec::with_capacity(12 << 20);
            v.resize(12 << 20, 1.0);
            std::hint::black_box(&v);
            faults() - before
        };
        let first = round();
        let second = round();
        assert!(first > 10_000, "the first round maps fresh pages ({first} faults)");
        assert!(second < first / 10, "the second round reuses them: {second} faults vs {first}");
    }

    /// Inside a pool of two, the other thread waits awake while the guard
    /// lives, parallel work still comes out right, and dropping the guard
    /// lets it go; outside a pool, or on a pool of one, there is no guard.
    #[test]
    fn hot_threads_wait_awake_until_dropped() {
        assert!(hot_threads().is_none(), "a test thread is in no pool");
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert!(one.install(hot_threads).is_none(), "a pool of one has no other thread");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for _ in 0..3 {
            let (sum, left) = pool.install(|| {
                let hot = hot_threads().expect("a pool of two");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while hot.waiting() != 1 {
                    assert!(std::time::Instant::now() < deadline, "the other thread never started waiting");
                    std::thread::yield_now();
                }
                let sum: u64 = (0..10_000u32).into_par_iter().with_max_len(100).map(u64::from).sum();
                let state = hot.0.clone();
                drop(hot);
                (sum, state.waiting.load(Ordering::Acquire))
            });
            assert_eq!(sum, 10_000 * 9_999 / 2);
            assert_eq!(left, 0, "no thread waits after the guard is dropped");
        }
    }

    #[test]
    fn the_partial_sums_add_up() {
        for n in [0, 1, 15, 16, 17, 23680] {
            let v: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0 + 0.25).collect();
            let exact: f64 = v.iter().map(|&x| x as f64).sum();
            assert!((sum(&v) as f64 - exact).abs() <= 1e-6 * exact.abs().max(1.0), "{n}: {} vs {exact}", sum(&v));
        }
    }

    #[test]
    fn avg_pool_matches_candle_mean() -> candle_core::Result<()> {
        let x = Tensor::randn(0f32, 1.0, (2, 5, 7, 3), &Device::Cpu)?;
        let want = x.flatten_from(2)?.mean(D::Minus1)?;
        let got = global_avg_pool(&x.narrow(1, 1, 3)?)?;
        let diff = (got - want.narrow(1, 1, 3)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }
}
