//! How long a job has recently held a worker, so a worker can tell that an
//! image would be answered after its deadline before it starts on it.
//!
//! Under overload, earliest-deadline-first always picks the job closest to
//! its deadline; started with less time left than an inference takes, its
//! result would only be dropped, and the worker would be lost to the jobs
//! that could still make it. The estimate is a moving average of recent
//! jobs; a skip lowers it a little, so an estimate that is stale (a faster
//! model since, say) lets a job through again and is corrected by it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Moving average of job times, in microseconds (0 = nothing measured yet).
#[derive(Debug, Default)]
pub struct ServiceTime(AtomicU64);

impl ServiceTime {
    /// The time a job is expected to take.
    pub fn estimate(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    /// A job took `took`: the average moves a fifth of the way to it.
    /// (Concurrent updates may lose one; it is an estimate.)
    pub fn observe(&self, took: Duration) {
        let new = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.0.load(Ordering::Relaxed);
        let avg = if old == 0 { new } else { old - old / 5 + new / 5 };
        self.0.store(avg.max(1), Ordering::Relaxed);
    }

    /// A job was skipped on the estimate alone: lower it by 5 %.
    pub fn skipped(&self) {
        let old = self.0.load(Ordering::Relaxed);
        self.0.store((old - old / 20).max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_recent_jobs_and_gives_way_after_skips() {
        let t = ServiceTime::default();
        assert_eq!(t.estimate(), Duration::ZERO, "nothing measured: never skip on the estimate");
        t.observe(Duration::from_millis(100));
        assert_eq!(t.estimate(), Duration::from_millis(100));
        t.observe(Duration::from_millis(50));
        assert_eq!(t.estimate(), Duration::from_millis(90));
        for _ in 0..14 {
            t.skipped();
        }
        assert!(t.estimate() < Duration::from_millis(45), "{:?}", t.estimate());
    }
}
