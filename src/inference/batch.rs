//! One 0x01 request in flight: its jobs, their outcomes, and its cancellation.
//! The in-flight gauge is kept here alone: raised when a batch's images are
//! queued, lowered by a guard when the batch is finished (or dropped).

use super::pool::{Facts, Finished, Inspector, Job, JobState, Outcome, Pool};
use crate::sync::lock;
use crossbeam_channel::{unbounded, Receiver, Sender};
use prometheus_client::metrics::gauge::Gauge;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Queued = (Arc<JobState>, usize, Sender<Finished>);

/// Queued jobs of one connection, so 0x03, a reset or a broken write can cancel them.
#[derive(Default, Clone)]
pub struct CancelRegistry {
    /// The connection's lane in the pool's queue.
    pub conn: u64,
    jobs: Arc<Mutex<Vec<Queued>>>,
}

impl CancelRegistry {
    pub fn new(conn: u64) -> Self {
        CancelRegistry { conn, jobs: Arc::default() }
    }

    fn add(&self, state: Arc<JobState>, index: usize, reply: Sender<Finished>) {
        let mut v = lock(&self.jobs);
        v.retain(|(s, ..)| s.is_queued());
        v.push((state, index, reply));
    }

    /// Cancels every job of this connection that has not started, answering
    /// each as cancelled, and frees their places in the queue; returns how many.
    pub fn cancel_all(&self, pool: &Pool) -> usize {
        let jobs: Vec<Queued> = std::mem::take(&mut *lock(&self.jobs));
        let mut n = 0;
        for (state, index, reply) in jobs {
            if state.cancel() {
                let _ = reply.send((index, Outcome::Cancelled, Facts::default()));
                n += 1;
            }
        }
        pool.purge(self.conn);
        n
    }
}

/// Images counted in `pear_images_in_flight` until this is dropped.
struct InFlight {
    gauge: Gauge,
    images: i64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec_by(self.images);
    }
}

/// The outcomes of one request's images, filled in as workers finish.
pub struct Batch {
    pub files: Vec<String>,
    outcomes: Vec<Option<Outcome>>,
    states: Vec<Option<Arc<JobState>>>,
    rx: Receiver<Finished>,
    timeout: Duration,
    deadline: Option<Instant>,
    in_flight: InFlight,
}

impl Batch {
    /// Submits one job per resolved path; `paths[i]` is `Err(outcome)` for files
    /// already answered (refused or missing). With a `deadline`, the jobs go
    /// ahead of those without one, and `wait` ends by then.
    pub fn submit(
        files: Vec<String>,
        paths: Vec<Result<PathBuf, Outcome>>,
        inspector: Arc<dyn Inspector>,
        pool: &Pool,
        registry: &CancelRegistry,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Batch {
        let (tx, rx) = unbounded();
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
                    let job = Job {
                        inspector: inspector.clone(),
                        path,
                        index,
                        conn: registry.conn,
                        queued_at: Instant::now(),
                        deadline,
                        state: state.clone(),
                        reply: tx.clone(),
                    };
                    match pool.submit(job) {
                        Ok(()) => {
                            registry.add(state.clone(), index, tx.clone());
                            outcomes.push(None);
                            states.push(Some(state));
                        }
                        Err((_, why)) => {
                            outcomes.push(Some(Outcome::Busy(why)));
                            states.push(None);
                        }
                    }
                }
            }
        }
        let images = states.iter().filter(|s| s.is_some()).count() as i64;
        let gauge = pool.metrics().images_in_flight.clone();
        gauge.inc_by(images);
        Batch { files, outcomes, states, rx, timeout, deadline, in_flight: InFlight { gauge, images } }
    }

    /// When the answer is due, if the request set `deadline_ms`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Images of this batch that went into the queue.
    pub fn queued(&self) -> usize {
        self.in_flight.images as usize
    }

    /// Waits for every outcome, or until the request's deadline. The timeout
    /// bounds waiting without progress: it restarts whenever one of this
    /// batch's images is answered, so an accepted batch is served to its end
    /// however long it is, while a stuck one (a hung worker, a queue that
    /// never moves) times out. At the deadline, what is not inferred yet is
    /// "deadline missed": queued jobs are cancelled, and the result of one
    /// still running is dropped (its sender finds this receiver gone).
    pub fn wait(self) -> (Vec<String>, Vec<Outcome>, Vec<Facts>) {
        let Batch { files, mut outcomes, states, rx, timeout, deadline, in_flight: _in_flight } = self;
        let mut facts = vec![Facts::default(); files.len()];
        let mut progress = Instant::now() + timeout;
        while outcomes.iter().any(Option::is_none) {
            let until = deadline.map_or(progress, |d| d.min(progress));
            match rx.recv_deadline(until) {
                Ok((i, o, f)) => {
                    if let Some(slot) = outcomes.get_mut(i) {
                        if slot.is_none() {
                            *slot = Some(o);
                            facts[i] = f;
                        }
                    }
                    progress = Instant::now() + timeout;
                }
                Err(_) => break, // timed out, or every job already answered
            }
        }
        let late = deadline.is_some_and(|d| d <= Instant::now());
        let outcomes = outcomes
            .into_iter()
            .zip(states)
            .map(|(o, s)| {
                o.unwrap_or_else(|| {
                    if let Some(s) = s {
                        s.cancel(); // if still queued, a worker will skip it
                    }
                    if late {
                        Outcome::DeadlineMissed
                    } else {
                        Outcome::TimedOut
                    }
                })
            })
            .collect();
        (files, outcomes, facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::queue::Refusal;
    use crate::inference::queue::GUARANTEED;
    use crate::inference::PoolOptions;
    use image::RgbImage;
    use pear_model::pipeline::Inspection;
    use std::path::Path;

    /// A 4x4 PNG of its own per test (tests run in parallel).
    fn png(test: &str) -> PathBuf {
        png_sized(test, 4)
    }

    fn png_sized(test: &str, side: u32) -> PathBuf {
        let p = std::env::temp_dir().join(format!("pear-batch-{}-{test}-{side}.png", std::process::id()));
        RgbImage::new(side, side).save(&p).unwrap();
        p
    }

    /// An inspector that blocks until the test opens its gate, and notes
    /// the width of each image it was given, in order.
    struct Gated(Mutex<Receiver<()>>, Mutex<Vec<u32>>);
    impl Inspector for Gated {
        fn inspect(&self, img: &RgbImage) -> Result<Inspection, String> {
            let _ = self.0.lock().unwrap().recv();
            self.1.lock().unwrap().push(img.width());
            Ok(Inspection { class: Some(1), label: None, confidence: None, bbox: None, detection_score: None })
        }
    }

    fn files(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i}.png")).collect()
    }

    /// Submits one image and waits until the single worker has taken it
    /// (it then blocks on the gate), so what follows only queues.
    fn occupy_worker(pool: &Pool, insp: &Arc<dyn Inspector>, reg: &CancelRegistry, p: &Path) -> Batch {
        let b = Batch::submit(files(1), vec![Ok(p.to_path_buf())], insp.clone(), pool, reg, Duration::from_secs(30), None);
        while pool.queued() != 0 {
            std::thread::yield_now();
        }
        b
    }

    /// Queue of 6 and the worker busy: a gets 6 of its 10 images in; b,
    /// arriving at a full queue, still gets its guaranteed place for 1 of 5;
    /// a's cancelled images leave the queue at once.
    #[test]
    fn cancel_and_full_queue() {
        let pool = Pool::new(PoolOptions { capacity: 6, per_connection: 16, ..Default::default() }).unwrap();
        let (a, b) = (CancelRegistry::new(1), CancelRegistry::new(2));
        let (gate, held) = crossbeam_channel::unbounded();
        let insp: Arc<dyn Inspector> = Arc::new(Gated(Mutex::new(held), Mutex::default()));
        let p = png("cancel");
        let first = occupy_worker(&pool, &insp, &a, &p);
        let big =
            Batch::submit(files(10), (0..10).map(|_| Ok(p.clone())).collect(), insp.clone(), &pool, &a, Duration::from_secs(30), None);
        assert_eq!(pool.queued(), 6);
        let small = Batch::submit(files(5), (0..5).map(|_| Ok(p.clone())).collect(), insp, &pool, &b, Duration::from_secs(30), None);
        assert_eq!(pool.queued(), 6 + GUARANTEED);
        assert_eq!(a.cancel_all(&pool), 6);
        assert_eq!(pool.queued(), GUARANTEED, "cancelled jobs leave the queue at once");
        for _ in 0..2 {
            gate.send(()).unwrap();
        }
        assert!(matches!(first.wait().1[0], Outcome::Done(_)));
        let (_, out, _) = big.wait();
        assert!(out[..6].iter().all(|o| *o == Outcome::Cancelled), "{out:?}");
        assert!(out[6..].iter().all(|o| *o == Outcome::Busy(Refusal::QueueFull)), "{out:?}");
        let (_, out, _) = small.wait();
        assert!(matches!(out[0], Outcome::Done(_)), "{out:?}");
        assert!(out[1..].iter().all(|o| *o == Outcome::Busy(Refusal::QueueFull)), "{out:?}");
    }

    /// Two connections: the worker alternates between them, so the second
    /// connection's single image (5 pixels wide) runs next but one, not after
    /// the first one's batch.
    #[test]
    fn connections_are_served_in_turn() {
        let pool = Pool::new(PoolOptions { capacity: 16, per_connection: 4, ..Default::default() }).unwrap();
        let (a, b) = (CancelRegistry::new(1), CancelRegistry::new(2));
        let (gate, held) = crossbeam_channel::unbounded();
        let gated = Arc::new(Gated(Mutex::new(held), Mutex::default()));
        let insp: Arc<dyn Inspector> = gated.clone();
        let (p, p5) = (png("turns"), png_sized("turns", 5));
        let first = occupy_worker(&pool, &insp, &a, &p);
        let big = Batch::submit(files(6), (0..6).map(|_| Ok(p.clone())).collect(), insp.clone(), &pool, &a, Duration::from_secs(30), None);
        let one = Batch::submit(files(1), vec![Ok(p5)], insp, &pool, &b, Duration::from_secs(30), None);
        assert_eq!(pool.queued(), 5, "a's share is 4 waiting, b's image is the fifth");
        for _ in 0..6 {
            gate.send(()).unwrap();
        }
        assert!(matches!(one.wait().1[0], Outcome::Done(_)));
        assert!(matches!(first.wait().1[0], Outcome::Done(_)));
        let (_, out, _) = big.wait();
        assert_eq!(out.iter().filter(|o| matches!(o, Outcome::Done(_))).count(), 4, "{out:?}");
        assert_eq!(&out[4..], &[Outcome::Busy(Refusal::ConnectionShare), Outcome::Busy(Refusal::ConnectionShare)]);
        assert_eq!(*gated.1.lock().unwrap(), [4, 4, 5, 4, 4, 4], "served in turn: a, a, b, then a's rest");
    }

    /// Images with a deadline go before the others, earliest deadline
    /// first; the others keep their turns (a, d, a).
    #[test]
    fn deadlines_go_first_earliest_first() {
        let pool = Pool::new(PoolOptions { capacity: 16, per_connection: 4, ..Default::default() }).unwrap();
        let (a, b, d) = (CancelRegistry::new(1), CancelRegistry::new(2), CancelRegistry::new(3));
        let (gate, held) = crossbeam_channel::unbounded();
        let gated = Arc::new(Gated(Mutex::new(held), Mutex::default()));
        let insp: Arc<dyn Inspector> = gated.clone();
        let p = png("edf");
        let first = occupy_worker(&pool, &insp, &a, &p);
        let now = Instant::now();
        let two = Batch::submit(files(2), vec![Ok(p.clone()), Ok(p.clone())], insp.clone(), &pool, &a, Duration::from_secs(30), None);
        let later = Some(now + Duration::from_secs(60));
        let late = Batch::submit(files(1), vec![Ok(png_sized("edf", 6))], insp.clone(), &pool, &b, Duration::from_secs(30), later);
        let sooner = Some(now + Duration::from_secs(30));
        let soon = Batch::submit(files(1), vec![Ok(png_sized("edf", 7))], insp.clone(), &pool, &b, Duration::from_secs(30), sooner);
        let other = Batch::submit(files(1), vec![Ok(png_sized("edf", 5))], insp, &pool, &d, Duration::from_secs(30), None);
        for _ in 0..6 {
            gate.send(()).unwrap();
        }
        for batch in [first, two, late, soon, other] {
            assert!(batch.wait().1.iter().all(|o| matches!(o, Outcome::Done(_))));
        }
        assert_eq!(*gated.1.lock().unwrap(), [4, 7, 6, 4, 5, 4]);
    }

    /// A queued image whose deadline passes is answered "deadline missed" at
    /// the deadline, while the worker is still busy, and is never inferred.
    #[test]
    fn a_missed_deadline_answers_at_once_and_the_job_never_runs() {
        let pool = Pool::new(PoolOptions::default()).unwrap();
        let a = CancelRegistry::new(1);
        let (gate, held) = crossbeam_channel::unbounded();
        let gated = Arc::new(Gated(Mutex::new(held), Mutex::default()));
        let insp: Arc<dyn Inspector> = gated.clone();
        let p = png("missed");
        let first = occupy_worker(&pool, &insp, &a, &p);
        let due = Some(Instant::now() + Duration::from_millis(20));
        let missed = Batch::submit(files(1), vec![Ok(png_sized("missed", 6))], insp.clone(), &pool, &a, Duration::from_secs(30), due);
        // The gate is still shut: only the deadline can end this wait.
        assert_eq!(missed.wait().1, [Outcome::DeadlineMissed]);
        gate.send(()).unwrap();
        gate.send(()).unwrap();
        assert!(matches!(first.wait().1[0], Outcome::Done(_)));
        let next = Batch::submit(files(1), vec![Ok(p)], insp, &pool, &a, Duration::from_secs(30), None);
        assert!(matches!(next.wait().1[0], Outcome::Done(_)));
        assert_eq!(*gated.1.lock().unwrap(), [4, 4], "the 6-pixel image was never inferred");
    }

    /// A job whose deadline has passed when a worker reaches it (nobody
    /// cancelled it yet) is answered unrun, and counted.
    #[test]
    fn an_overdue_job_at_the_front_is_not_inferred() {
        let pool = Pool::new(PoolOptions::default()).unwrap();
        let a = CancelRegistry::new(1);
        let (gate, held) = crossbeam_channel::unbounded();
        let gated = Arc::new(Gated(Mutex::new(held), Mutex::default()));
        let insp: Arc<dyn Inspector> = gated.clone();
        let p = png("overdue");
        let first = occupy_worker(&pool, &insp, &a, &p);
        let due = Instant::now() + Duration::from_millis(5);
        let late = Batch::submit(files(1), vec![Ok(png_sized("overdue", 6))], insp, &pool, &a, Duration::from_secs(30), Some(due));
        while Instant::now() <= due {
            std::thread::yield_now();
        }
        gate.send(()).unwrap();
        assert!(matches!(first.wait().1[0], Outcome::Done(_)));
        let until = Instant::now() + Duration::from_secs(20);
        while pool.metrics().deadline_skipped.get() == 0 {
            assert!(Instant::now() < until, "the worker never reached the overdue job");
            std::thread::yield_now();
        }
        assert_eq!(late.wait().1, [Outcome::DeadlineMissed]);
        assert_eq!(*gated.1.lock().unwrap(), [4]);
    }

    /// Every job holds the worker 300 ms (`min_job`); an image due in 100 ms
    /// cannot make it, so the idle worker answers it unrun; one due in 30 s runs.
    #[test]
    fn an_image_that_cannot_make_its_deadline_is_not_started() {
        let pool = Pool::new(PoolOptions { min_job: Duration::from_millis(300), ..Default::default() }).unwrap();
        let a = CancelRegistry::new(1);
        let (gate, held) = crossbeam_channel::unbounded();
        let gated = Arc::new(Gated(Mutex::new(held), Mutex::default()));
        let insp: Arc<dyn Inspector> = gated.clone();
        for _ in 0..3 {
            gate.send(()).unwrap();
        }
        let p = png("hopeless");
        let first = Batch::submit(files(1), vec![Ok(p.clone())], insp.clone(), &pool, &a, Duration::from_secs(30), None);
        assert!(matches!(first.wait().1[0], Outcome::Done(_)));
        let soon = Some(Instant::now() + Duration::from_millis(100));
        let hopeless = Batch::submit(files(1), vec![Ok(png_sized("hopeless", 6))], insp.clone(), &pool, &a, Duration::from_secs(30), soon);
        assert_eq!(hopeless.wait().1, [Outcome::DeadlineMissed]);
        let later = Some(Instant::now() + Duration::from_secs(30));
        let fine = Batch::submit(files(1), vec![Ok(p)], insp, &pool, &a, Duration::from_secs(30), later);
        assert!(matches!(fine.wait().1[0], Outcome::Done(_)));
        assert_eq!(*gated.1.lock().unwrap(), [4, 4], "the 6-pixel image was never inferred");
        assert_eq!(pool.metrics().deadline_skipped.get(), 1);
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
        let pool = Pool::new(PoolOptions::default()).unwrap();
        let insp: Arc<dyn Inspector> = Arc::new(PanicsOnce(Default::default()));
        let p = png("panic");
        let paths = (0..3).map(|_| Ok(p.clone())).collect();
        let batch = Batch::submit(files(3), paths, insp, &pool, &CancelRegistry::default(), Duration::from_secs(30), None);
        let (_, out, _) = batch.wait();
        assert_eq!(out[0], Outcome::Failed("inference panicked".into()));
        assert!(matches!(&out[1], Outcome::Done(i) if i.class == Some(2)), "{out:?}");
        assert!(matches!(&out[2], Outcome::Done(i) if i.class == Some(2)), "{out:?}");
    }
}
