//! One 0x01 request in flight: its jobs, their outcomes, and its cancellation.

use super::pool::{Inspector, Job, JobState, Outcome, Pool};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Queued jobs of one connection, so 0x03 can cancel them.
#[derive(Default, Clone)]
pub struct CancelRegistry(Arc<Mutex<Vec<(Arc<JobState>, usize, Sender<(usize, Outcome)>)>>>);

impl CancelRegistry {
    fn add(&self, state: Arc<JobState>, index: usize, reply: Sender<(usize, Outcome)>) {
        if let Ok(mut v) = self.0.lock() {
            v.retain(|(s, ..)| s.is_queued());
            v.push((state, index, reply));
        }
    }

    /// Cancels every job of this connection that has not started; returns how many.
    pub fn cancel_all(&self) -> usize {
        let Ok(mut v) = self.0.lock() else { return 0 };
        let mut n = 0;
        for (state, index, reply) in v.drain(..) {
            if state.cancel() {
                let _ = reply.send((index, Outcome::Cancelled));
                n += 1;
            }
        }
        n
    }
}

/// The outcomes of one request's images, filled in as workers finish.
pub struct Batch {
    pub files: Vec<String>,
    outcomes: Vec<Option<Outcome>>,
    states: Vec<Option<Arc<JobState>>>,
    rx: Receiver<(usize, Outcome)>,
    deadline: Instant,
}

impl Batch {
    /// Submits one job per resolved path; `paths[i]` is `Err(outcome)` for files
    /// already answered (refused or missing).
    pub fn submit(
        files: Vec<String>,
        paths: Vec<Result<PathBuf, Outcome>>,
        inspector: Arc<dyn Inspector>,
        pool: &Pool,
        registry: &CancelRegistry,
        timeout: Duration,
    ) -> Batch {
        let (tx, rx) = unbounded();
        let deadline = Instant::now() + timeout;
        let mut outcomes = Vec::with_capacity(files.len());
        let mut states = Vec::with_capacity(files.len());
        for (index, p) in paths.into_iter().enumerate() {
            match p {
                Err(o) => {
                    outcomes.push(Some(o));
                    states.push(None);
                }
                Ok(path) => {
                    let state = Arc::new(JobState::new());
                    let job = Job { inspector: inspector.clone(), path, index, state: state.clone(), deadline, reply: tx.clone() };
                    match pool.submit(job) {
                        Ok(()) => {
                            registry.add(state.clone(), index, tx.clone());
                            outcomes.push(None);
                            states.push(Some(state));
                        }
                        Err(_) => {
                            outcomes.push(Some(Outcome::Busy));
                            states.push(None);
                        }
                    }
                }
            }
        }
        Batch { files, outcomes, states, rx, deadline }
    }

    /// Waits for every outcome, at most until the request's deadline (plus a
    /// grace for an image already running); the rest time out.
    pub fn wait(mut self) -> (Vec<String>, Vec<Outcome>) {
        let grace = Duration::from_secs(1);
        while self.outcomes.iter().any(Option::is_none) {
            let left = (self.deadline + grace).saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((i, o)) => {
                    if let Some(slot) = self.outcomes.get_mut(i) {
                        slot.get_or_insert(o);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let outcomes = self
            .outcomes
            .into_iter()
            .zip(self.states)
            .map(|(o, s)| {
                o.unwrap_or_else(|| {
                    if let Some(s) = s {
                        s.cancel(); // if still queued, a worker will skip it
                    }
                    Outcome::TimedOut
                })
            })
            .collect();
        (self.files, outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pipeline::Inspection;
    use image::RgbImage;

    /// A test double for this layer only: sleeps, then answers class 1.
    struct Slow(Duration);
    impl Inspector for Slow {
        fn inspect(&self, _: &RgbImage) -> Result<Inspection, String> {
            std::thread::sleep(self.0);
            Ok(Inspection { class: Some(1), label: None, confidence: None, bbox: None, detection_score: None })
        }
    }

    /// A 4x4 PNG of its own per test (tests run in parallel).
    fn png(test: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("pear-batch-{}-{test}.png", std::process::id()));
        RgbImage::new(4, 4).save(&p).unwrap();
        p
    }

    #[test]
    fn cancel_and_full_queue() {
        let pool = Pool::new(1, 1, 3, Default::default()).unwrap();
        let reg = CancelRegistry::default();
        let insp: Arc<dyn Inspector> = Arc::new(Slow(Duration::from_millis(300)));
        let p = png("cancel");
        let files: Vec<String> = (0..6).map(|i| format!("{i}.png")).collect();
        let paths = (0..6).map(|_| Ok(p.clone())).collect();
        let batch = Batch::submit(files, paths, insp, &pool, &reg, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100)); // first job is running
        let cancelled = reg.cancel_all();
        let (_, out) = batch.wait();
        assert!(matches!(out[0], Outcome::Done(_)), "{out:?}");
        assert!(out.iter().any(|o| *o == Outcome::Busy), "queue of 3 must refuse some of 6: {out:?}");
        assert_eq!(out.iter().filter(|o| **o == Outcome::Cancelled).count(), cancelled);
        assert!(cancelled >= 1);
    }

    /// A test double that panics on its first image only.
    struct PanicsOnce(std::sync::atomic::AtomicBool);
    impl Inspector for PanicsOnce {
        fn inspect(&self, _: &RgbImage) -> Result<Inspection, String> {
            if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
                panic!("test panic");
            }
            Ok(Inspection { class: Some(2), label: None, confidence: None, bbox: None, detection_score: None })
        }
    }

    /// A panic answers its own image (error 4) and the single worker lives on.
    #[test]
    fn a_panic_costs_one_image_not_the_worker() {
        let pool = Pool::new(1, 1, 8, Default::default()).unwrap();
        let insp: Arc<dyn Inspector> = Arc::new(PanicsOnce(Default::default()));
        let p = png("panic");
        let files: Vec<String> = (0..3).map(|i| format!("{i}.png")).collect();
        let paths = (0..3).map(|_| Ok(p.clone())).collect();
        let batch = Batch::submit(files, paths, insp, &pool, &CancelRegistry::default(), Duration::from_secs(30));
        let (_, out) = batch.wait();
        assert_eq!(out[0], Outcome::Failed("inference panicked".into()));
        assert!(matches!(&out[1], Outcome::Done(i) if i.class == Some(2)), "{out:?}");
        assert!(matches!(&out[2], Outcome::Done(i) if i.class == Some(2)), "{out:?}");
    }
}
