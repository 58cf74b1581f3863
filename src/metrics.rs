//! What the server counts, for `/metrics` (served by `server/metrics_http.rs`
//! in Prometheus/OpenMetrics text format by the `prometheus-client` crate).
//!
//! Everything here is updated where it happens (connection slots, the
//! writer's record of each answer, the workers, model loads, downloads);
//! gauges that are a view of other state (queue depth) are refreshed when
//! scraped.

use crate::commands::Answer;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// "0x01" .. "0x34", or "invalid" for a request that could not be parsed.
    pub command: String,
    /// "ok" when every entry has error_code 0, else "error".
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// The `result` clients see (class index; 0 also when no pear was found).
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorCodeLabels {
    pub error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms .. about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<CommandLabels, Histogram, fn() -> Histogram>,
    pub images_by_class: Family<ClassLabels, Counter>,
    pub images_by_error_code: Family<ErrorCodeLabels, Counter>,
    pub queue_depth: Gauge,
    pub images_in_flight: Gauge,
    pub busy_workers: Gauge,
    pub queue_wait_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub settle_waits: Counter,
    pub deadline_misses: Counter,
    pub deadline_skipped: Counter,
    pub deadline_lateness_seconds: Histogram,
    pub fruits_by_class: Family<ClassLabels, Counter>,
    pub fruits_by_error_code: Family<ErrorCodeLabels, Counter>,
    pub journal_rows: Counter,
    pub journal_errors: Counter,
    pub journal_dropped: Counter,
    pub journal_captured: Counter,
    pub journal_capture_failures: Counter,
    pub journal_captured_bytes: Gauge,
    pub connections_open: Gauge,
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    pub active_model: Family<ModelLabels, Gauge>,
    pub model_loads: Family<OutcomeLabels, Counter>,
    pub model_load_seconds: Histogram,
    pub downloads: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("pear");
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            images_by_class: Family::default(),
            images_by_error_code: Family::default(),
            queue_depth: Gauge::default(),
            images_in_flight: Gauge::default(),
            busy_workers: Gauge::default(),
            queue_wait_seconds: seconds_histogram(),
            inference_seconds: seconds_histogram(),
            settle_waits: Counter::default(),
            deadline_misses: Counter::default(),
            deadline_skipped: Counter::default(),
            // 0 = on time; then 0.5 ms .. about 4 s late.
            deadline_lateness_seconds: Histogram::new(std::iter::once(0.0).chain(exponential_buckets(0.0005, 2.0, 14))),
            fruits_by_class: Family::default(),
            fruits_by_error_code: Family::default(),
            journal_rows: Counter::default(),
            journal_errors: Counter::default(),
            journal_dropped: Counter::default(),
            journal_captured: Counter::default(),
            journal_capture_failures: Counter::default(),
            journal_captured_bytes: Gauge::default(),
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            active_model: Family::default(),
            model_loads: Family::default(),
            model_load_seconds: seconds_histogram(),
            downloads: Family::default(),
            registry: Registry::default(),
        };
        r.register("requests", "Requests answered, by command and outcome", m.requests.clone());
        r.register("request_seconds", "Time from a request's arrival to its answer being written", m.request_seconds.clone());
        r.register("images_by_class", "0x01 images answered with error_code 0, by result", m.images_by_class.clone());
        r.register("images_by_error_code", "0x01 images answered, by error_code", m.images_by_error_code.clone());
        r.register("queue_depth", "Images waiting for a worker", m.queue_depth.clone());
        r.register("images_in_flight", "Images accepted and not yet answered (waiting or being inferred)", m.images_in_flight.clone());
        r.register("busy_workers", "Inference workers working on an image", m.busy_workers.clone());
        r.register("queue_wait_seconds", "Time an image waited in the queue", m.queue_wait_seconds.clone());
        r.register("inference_seconds", "Time to read, decode and inspect one image", m.inference_seconds.clone());
        r.register("settle_waits", "Waits for an incomplete image file to grow (images.settle_ms)", m.settle_waits.clone());
        r.register("deadline_misses", "0x01 images answered \"deadline missed\" (deadline_ms)", m.deadline_misses.clone());
        r.register(
            "deadline_skipped",
            "Images a worker reached after their deadline, answered without being inferred",
            m.deadline_skipped.clone(),
        );
        r.register(
            "deadline_lateness_seconds",
            "How long after its deadline an answer with deadline_ms was handed to the socket (0 = on time)",
            m.deadline_lateness_seconds.clone(),
        );
        r.register("fruits_by_class", "Fruits (0x01 with fruit_id) graded, by grade", m.fruits_by_class.clone());
        r.register("fruits_by_error_code", "Fruits (0x01 with fruit_id) answered, by error_code", m.fruits_by_error_code.clone());
        r.register("journal_rows", "Inspection records written to the journal", m.journal_rows.clone());
        r.register("journal_errors", "Inspection records lost because the journal could not be written", m.journal_errors.clone());
        r.register("journal_dropped", "Inspection records dropped because the journal's queue was full", m.journal_dropped.clone());
        r.register("journal_captured", "Uncertain images kept for relabelling (journal.capture)", m.journal_captured.clone());
        r.register(
            "journal_capture_failures",
            "Uncertain images not kept: gone or changed since judged, too large, or not writable",
            m.journal_capture_failures.clone(),
        );
        r.register(
            "journal_captured_bytes",
            "Bytes of captured images kept (at most journal.capture_max_bytes)",
            m.journal_captured_bytes.clone(),
        );
        r.register("connections_open", "Open client connections", m.connections_open.clone());
        r.register("connections_accepted", "Client connections accepted", m.connections_accepted.clone());
        r.register("connections_refused", "Client connections refused (max_connections, per-address cap)", m.connections_refused.clone());
        r.register("active_model_info", "The active model (value 1)", m.active_model.clone());
        r.register("model_loads", "Model bundles loaded (start, 0x26, 0x20), by outcome", m.model_loads.clone());
        r.register("model_load_seconds", "Time to load and smoke-test a model bundle", m.model_load_seconds.clone());
        r.register("downloads", "0x20 downloads, by outcome", m.downloads.clone());
        Metrics { registry: r, ..m }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// An answer about to be written: the request's command ("0x01", or
    /// "invalid"), the images it answers, and how long it took.
    pub fn answered(&self, command: &str, answer: &Answer, took: Duration) {
        self.request(command, answer.ok(), took);
        for image in &answer.images {
            self.image(image.error_code as u8, image.result);
            if image.missed_deadline {
                self.deadline_misses.inc();
            }
        }
        if let Some(f) = &answer.response.fruit {
            let code = f.error_code as u8;
            self.fruits_by_error_code.get_or_create(&ErrorCodeLabels { error_code: code.to_string() }).inc();
            if let (0, Some(class)) = (code, f.result) {
                self.fruits_by_class.get_or_create(&ClassLabels { class: class.to_string() }).inc();
            }
        }
        if let Some(due) = answer.deadline {
            self.deadline_lateness_seconds.observe(Instant::now().saturating_duration_since(due).as_secs_f64());
        }
    }

    fn request(&self, command: &str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.requests.get_or_create(&RequestLabels { command: command.into(), outcome: outcome.into() }).inc();
        self.request_seconds.get_or_create(&CommandLabels { command: command.into() }).observe(took.as_secs_f64());
    }

    fn image(&self, error_code: u8, result: Option<i64>) {
        self.images_by_error_code.get_or_create(&ErrorCodeLabels { error_code: error_code.to_string() }).inc();
        if let (0, Some(class)) = (error_code, result) {
            self.images_by_class.get_or_create(&ClassLabels { class: class.to_string() }).inc();
        }
    }

    pub fn model_load(&self, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.model_loads.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
        self.model_load_seconds.observe(took.as_secs_f64());
    }

    pub fn set_active_model(&self, name: &str) {
        self.active_model.clear();
        self.active_model.get_or_create(&ModelLabels { model: name.into() }).set(1);
    }

    pub fn download(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.downloads.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }
}
