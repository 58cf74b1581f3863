//! The worker pool: N threads serving the fair queue, jobs that can be
//! cancelled. `close_and_join` stops it: the queue refuses new jobs, the
//! workers finish what is queued and are joined.

use super::annotated::AnnotatedDir;
use super::queue::{FairQueue, Refusal};
use super::read::read_image_file;
use super::service_time::ServiceTime;
use crate::config::Scheduling;
use crate::metrics::Metrics;
use crate::models::sha256_hex;
use crate::shutdown::Shutdown;
use crate::sync::lock;
use crossbeam_channel::Sender;
use image::RgbImage;
use pear_model::decode::{decode_image, DecodeError, Limits};
use pear_model::pipeline::{Inspection, Pipeline};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the workers run. The shipped implementation is the candle `Pipeline`;
/// the trait keeps the pool testable on its own.
pub trait Inspector: Send + Sync {
    fn inspect(&self, img: &RgbImage) -> Result<Inspection, String>;
}

impl Inspector for Pipeline {
    fn inspect(&self, img: &RgbImage) -> Result<Inspection, String> {
        Pipeline::inspect(self, img).map_err(|e| e.to_string())
    }
}

/// How one image ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done(Inspection),
    /// The file is missing, unreadable or not a decodable image (error_code 2).
    Unreadable(String),
    /// The path was refused (error_code 1).
    Refused(String),
    /// The model failed on this image (error_code 4).
    Failed(String),
    /// Cancelled by 0x03 (error_code 4).
    Cancelled,
    /// No image of its request finished within the request timeout (error_code 4).
    TimedOut,
    /// Not queued: the queue or this connection's share of it was full (error_code 4).
    Busy(Refusal),
    /// Still queued when the shutdown drain ran out of time (error_code 4).
    ShuttingDown,
    /// Not inferred by the request's `deadline_ms` (error_code 4).
    DeadlineMissed,
}

/// Life of a job; a job is run or cancelled exactly once (compare-and-swap).
#[derive(Debug, Default)]
pub struct JobState(AtomicU8);

impl JobState {
    const QUEUED: u8 = 0;
    const RUNNING: u8 = 1;
    const CANCELLED: u8 = 2;

    pub fn new() -> Self {
        JobState(AtomicU8::new(Self::QUEUED))
    }
    /// Worker side: claim the job. False if it was cancelled first.
    pub fn start(&self) -> bool {
        self.0.compare_exchange(Self::QUEUED, Self::RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
    /// Canceller side: true if the job had not started and now never will.
    pub fn cancel(&self) -> bool {
        self.0.compare_exchange(Self::QUEUED, Self::CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
    pub fn is_queued(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::QUEUED
    }
}

pub struct Job {
    pub inspector: Arc<dyn Inspector>,
    pub path: PathBuf,
    pub index: usize,
    /// The connection that asked: its queue lane, and what a reset purges.
    pub conn: u64,
    pub queued_at: Instant,
    /// When the request's answer is due (`deadline_ms`); such jobs go first, earliest first.
    pub deadline: Option<Instant>,
    pub state: Arc<JobState>,
    pub reply: Sender<Finished>,
}

/// What a worker measured about one image, for its record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// From queued to taken by a worker.
    pub queue_wait: Option<Duration>,
    /// Reading, decoding and inspecting.
    pub inference: Option<Duration>,
    /// Size and SHA-256 (hex) of the bytes that were judged, when the file was read.
    pub image: Option<(u64, String)>,
}

/// One job's end: its index in the request, how it ended, what was measured.
pub type Finished = (usize, Outcome, Facts);

impl Job {
    fn run(self, opts: &PoolOptions, service: &ServiceTime) {
        if !self.state.start() {
            return; // cancelled (0x03, reset, timeout): the canceller has answered for it
        }
        if opts.shutdown.is_stopping() {
            let _ = self.reply.send((self.index, Outcome::ShuttingDown, Facts::default()));
            return;
        }
        let started = Instant::now();
        let m = &opts.metrics;
        if let Some(due) = self.deadline {
            // Past its deadline, its answer is already written; with less time
            // left than a job takes, its result would come too late. Either
            // way, inferring it would only delay the images that can make it.
            let passed = due <= started;
            if passed || due <= started + service.estimate() {
                if !passed {
                    service.skipped();
                }
                m.deadline_skipped.inc();
                let facts = Facts { queue_wait: Some(started.duration_since(self.queued_at)), ..Facts::default() };
                let _ = self.reply.send((self.index, Outcome::DeadlineMissed, facts));
                return;
            }
        }
        let queue_wait = started.duration_since(self.queued_at);
        m.queue_wait_seconds.observe(queue_wait.as_secs_f64());
        m.busy_workers.inc();
        // Reading and decoding are under the guard too: a panic anywhere in
        // the job answers this image and leaves the worker alive.
        let mut image = None;
        let outcome = catch_unwind(AssertUnwindSafe(|| self.inspect_file(opts, &mut image)))
            .unwrap_or_else(|_| Outcome::Failed("inference panicked".into()));
        let inference = started.elapsed();
        m.inference_seconds.observe(inference.as_secs_f64());
        m.busy_workers.dec();
        if let Some(rest) = opts.min_job.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        service.observe(started.elapsed());
        // The requester may have given up (timeout, disconnect); that is fine.
        let _ = self.reply.send((self.index, outcome, Facts { queue_wait: Some(queue_wait), inference: Some(inference), image }));
    }

    /// Reads and decodes the file. With `settle` set, a file that decodes as
    /// incomplete (the camera still writing it) is read again after `settle`
    /// for as long as it keeps growing, at most `SETTLE_ROUNDS` times; once it
    /// stops growing, incomplete is the answer.
    /// `judged` gets the size and hash of the last bytes read.
    fn read_and_decode(
        &self,
        limits: &Limits,
        settle: Duration,
        metrics: &Metrics,
        judged: &mut Option<(u64, String)>,
    ) -> Result<RgbImage, String> {
        const SETTLE_ROUNDS: usize = 20;
        let mut bytes = read_image_file(&self.path, limits.max_file_bytes)?;
        *judged = Some((bytes.len() as u64, sha256_hex(&bytes)));
        for _ in 0..SETTLE_ROUNDS {
            match decode_image(&bytes, limits) {
                Err(DecodeError::Incomplete(_)) if !settle.is_zero() => {
                    log::debug!(
                        "{}: incomplete after {} bytes; waiting {} ms for the rest",
                        self.path.display(),
                        bytes.len(),
                        settle.as_millis()
                    );
                    metrics.settle_waits.inc();
                    std::thread::sleep(settle);
                    let again = read_image_file(&self.path, limits.max_file_bytes)?;
                    if again.len() == bytes.len() {
                        break; // not growing: the last decode's answer stands
                    }
                    bytes = again;
                    *judged = Some((bytes.len() as u64, sha256_hex(&bytes)));
                }
                other => return other.map_err(|e| e.to_string()),
            }
        }
        decode_image(&bytes, limits).map_err(|e| e.to_string())
    }

    fn inspect_file(&self, opts: &PoolOptions, judged: &mut Option<(u64, String)>) -> Outcome {
        let img = match self.read_and_decode(&opts.limits, opts.settle, &opts.metrics, judged) {
            Ok(img) => img,
            Err(m) => return Outcome::Unreadable(m),
        };
        let t = Instant::now();
        let result = self.inspector.inspect(&img);
        log::debug!("{}: inspected in {:.1} ms", self.path.display(), t.elapsed().as_secs_f64() * 1e3);
        match result {
            Ok(ins) => {
                if let Some(a) = opts.annotated.as_deref() {
                    a.save(&img, &ins, &self.path);
                }
                Outcome::Done(ins)
            }
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// How the pool is built; `Default` is one worker on one thread (unit tests).
#[derive(Clone)]
pub struct PoolOptions {
    pub workers: usize,
    pub threads: usize,
    /// Images waiting, all connections together.
    pub capacity: usize,
    /// Images waiting from one connection.
    pub per_connection: usize,
    pub limits: Limits,
    /// Every image takes at least this long (`debug.min_inference_ms`): lets
    /// tests make a slow worker by configuration instead of by luck.
    pub min_job: Duration,
    /// `images.settle_ms`: an incomplete file still growing is read again after this.
    pub settle: Duration,
    /// The server's shutdown signal: once it says stop, queued jobs are answered unrun.
    pub shutdown: Shutdown,
    pub metrics: Arc<Metrics>,
    /// `[debug] annotated_dir`: where inspected images are saved with their answer drawn.
    pub annotated: Option<Arc<AnnotatedDir>>,
    /// `inference.scheduling`.
    pub scheduling: Scheduling,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            workers: 1,
            threads: 1,
            capacity: 16,
            per_connection: 16,
            limits: Limits::default(),
            min_job: Duration::ZERO,
            settle: Duration::ZERO,
            shutdown: Shutdown::default(),
            metrics: Arc::default(),
            annotated: None,
            scheduling: Scheduling::Idle,
        }
    }
}

pub struct Pool {
    queue: Arc<FairQueue>,
    next_lane: AtomicU64,
    per_connection: usize,
    metrics: Arc<Metrics>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// `workers` threads, each running its jobs' kernels on a rayon pool of
    /// its own with `threads` threads (the worker's thread is one of them),
    /// so workers never compete for one shared pool. Returns once every one
    /// of those threads runs (named, its scheduling set): a server that
    /// listens has its workers up, not merely spawned.
    pub fn new(opts: PoolOptions) -> std::io::Result<Pool> {
        let queue = Arc::new(FairQueue::new(opts.capacity, opts.per_connection));
        let service = Arc::new(ServiceTime::default());
        let mut handles = Vec::with_capacity(opts.workers);
        let (up, started) = crossbeam_channel::bounded::<()>(opts.workers);
        for i in 0..opts.workers {
            let (queue, opts, service) = (queue.clone(), opts.clone(), service.clone());
            let scheduling = opts.scheduling;
            let up = up.clone();
            // Sends and lets go of the sender, so that a worker dying before
            // it starts ends the wait below instead of holding it open.
            let report_started = move || {
                let _ = up.send(());
            };
            handles.push(std::thread::Builder::new().name(format!("infer-{i}")).spawn(move || {
                yield_to_connections(scheduling);
                let threads = opts.threads.max(1);
                let serve = || {
                    supervise(i, || {
                        while let Some(job) = queue.pop() {
                            job.run(&opts, &service);
                        }
                    })
                };
                let own = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .use_current_thread()
                    .thread_name(move |j| format!("infer-{i}-{j}"))
                    .start_handler(move |_| yield_to_connections(scheduling))
                    .build();
                match own {
                    Ok(pool) => {
                        // Runs on every thread of the pool once each has started.
                        pool.broadcast(|_| ());
                        report_started();
                        pool.install(serve)
                    }
                    Err(e) => {
                        log::error!("worker {i}: cannot start its {threads} threads ({e}); running on the shared pool");
                        report_started();
                        serve()
                    }
                }
            })?);
        }
        drop(up);
        for _ in 0..opts.workers {
            // Err: every worker has gone, some without starting.
            started.recv().map_err(|_| std::io::Error::other("an inference worker stopped before it started"))?;
        }
        Ok(Pool {
            queue,
            next_lane: AtomicU64::new(1),
            per_connection: opts.per_connection,
            metrics: opts.metrics,
            workers: Mutex::new(handles),
        })
    }

    /// Refuses new jobs, lets the workers finish the queued ones, and joins them.
    pub fn close_and_join(&self) {
        self.queue.close();
        let workers = std::mem::take(&mut *lock(&self.workers));
        for w in workers {
            let _ = w.join();
        }
    }

    /// A fresh lane in the queue, for a new connection.
    pub fn next_lane(&self) -> u64 {
        self.next_lane.fetch_add(1, Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Queues a job, or hands it back at once with the reason it was refused.
    pub fn submit(&self, job: Job) -> Result<(), (Job, Refusal)> {
        self.queue.push(job)
    }

    /// Drops a connection's queued jobs (cancel them first, so each is answered).
    pub fn purge(&self, conn: u64) -> usize {
        self.queue.purge(conn)
    }

    /// Images one connection may have waiting; also the largest 0x01 batch.
    pub fn per_connection(&self) -> usize {
        self.per_connection
    }

    /// Images waiting now, all connections together.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

impl Drop for Pool {
    /// A pool dropped without `close_and_join` (unit tests) still lets its workers end.
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// Runs a worker's loop and starts it again if it ever unwinds. Jobs catch
/// their own panics, so this only fires on a bug outside a job; the worker
/// is replaced (and says so) instead of the pool silently losing a thread.
fn supervise(worker: usize, serve: impl Fn()) {
    loop {
        if catch_unwind(AssertUnwindSafe(&serve)).is_ok() {
            return;
        }
        log::error!("inference worker {worker} died; starting it again");
    }
}

/// Inference threads give way to connection threads: when every core is
/// busy inferring, a 0x22 or 0x03 still gets a core as soon as its bytes
/// arrive instead of waiting for a time slice. SCHED_IDLE (the default)
/// is preempted by any other thread's wakeup; nice 10 only gets a smaller
/// share. Either way an idle core still infers, so throughput is unchanged.
fn yield_to_connections(scheduling: Scheduling) {
    let nice = || {
        // SAFETY: plain syscall; on Linux, PRIO_PROCESS with id 0 is the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) } != 0 {
            log::debug!("cannot lower inference thread priority: {}", std::io::Error::last_os_error());
        }
    };
    match scheduling {
        Scheduling::Normal => {}
        Scheduling::Nice => nice(),
        Scheduling::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: plain syscall on the calling thread (pid 0) with a valid parameter.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
                log::debug!("cannot set SCHED_IDLE ({}); nice 10 instead", std::io::Error::last_os_error());
                nice();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::supervise;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A loop that dies twice is started again each time, then ends normally.
    #[test]
    fn a_dead_worker_is_started_again() {
        let runs = AtomicUsize::new(0);
        supervise(0, || {
            if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                panic!("worker bug");
            }
        });
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
