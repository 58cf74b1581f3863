//! `pear-client bench`: load from N connections against one server, plus a
//! 0x22 probe on a connection of its own.
//!
//! Closed loop by default: each connection sends its next request when the
//! last is answered, so the server sets the pace. `--rate` makes it an open
//! loop instead: requests leave on a fixed schedule whatever the answers do
//! (a camera does not wait), which is how a load "at 90 % of capacity" is
//! offered. With `--views K` every request is one fruit of K views
//! (`fruit_id`); with `--deadline-ms` every request carries a deadline, and
//! the report gives the misses and how late answers came relative to it.

use clap::Args;
use indicatif::ProgressBar;
use pear_protocol::client::{request, Client, ClientError};
use pear_protocol::{ErrorCode, Response};
use pear_server::sync::lock;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// Client connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Images per 0x01 request.
    #[arg(long, default_value_t = 1)]
    images: usize,
    /// Every request is one fruit with this many views (sets --images, adds a fruit_id).
    #[arg(long)]
    views: Option<usize>,
    /// Every request carries this deadline_ms.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Count an answer as late when it came more than this many ms after its
    /// request was sent (default: --deadline-ms), with or without deadlines.
    #[arg(long)]
    due_ms: Option<u64>,
    /// Open loop: send this many requests per second in all, spread over the
    /// connections, whatever the answers do (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// The server's metrics listener (host:port): report the deadline misses it counted during the run.
    #[arg(long)]
    metrics: Option<String>,
    /// Image names to cycle through (relative to the server's image folder).
    #[arg(long, value_delimiter = ',', default_value = "normal_1.jpg,rot_1.jpg,bruise_1.jpg,scab_1.jpg,no_pear_1.jpg")]
    files: Vec<String>,
    /// Milliseconds between 0x22 probes on their own connection (0 = no probe).
    #[arg(long, default_value_t = 100)]
    probe_ms: u64,
}

/// One answered request.
struct Sample {
    /// From sending the request to reading its answer.
    took: Duration,
    images: u64,
    image_errors: u64,
    /// Entries answered "deadline missed".
    misses: u64,
    /// The fruit got a grade (error_code 0), when the request was a fruit.
    graded: Option<bool>,
}

impl Sample {
    fn of(answer: &Response, took: Duration) -> Sample {
        let e = &answer.response_data;
        let errors = e.iter().filter(|x| !x.is_ok()).count() as u64;
        let misses = e.iter().filter(|x| x.error_code == ErrorCode::Timeout && x.message.as_deref() == Some("deadline missed")).count();
        Sample {
            took,
            images: e.len() as u64,
            image_errors: errors,
            misses: misses as u64,
            graded: answer.fruit.as_ref().map(|f| f.error_code == ErrorCode::NoError),
        }
    }
}

#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    /// Connections closed by a server before the request was answered (a
    /// server draining closes after its last answer): resent on a new connection.
    reconnects: u64,
}

/// What each connection sends: the same images, a fresh fruit_id each time.
struct Requests {
    files: Vec<String>,
    fruit: bool,
    deadline_ms: Option<u64>,
    conn: usize,
    sent: u64,
}

impl Requests {
    fn next(&mut self) -> Value {
        let mut r = request(0x01, json!(self.files));
        self.sent += 1;
        if self.fruit {
            r["fruit_id"] = json!(self.conn as u64 * 1_000_000_000 + self.sent);
        }
        if let Some(ms) = self.deadline_ms {
            r["deadline_ms"] = json!(ms);
        }
        r
    }
}

/// Sends `req` and waits for its answer; when the connection was closed
/// under it, reconnects (up to 3 times) and sends it again.
fn request_resending(
    conn: &mut Client,
    server: &str,
    req: &Value,
    timeout: Duration,
    reconnects: &mut u64,
) -> Result<Response, ClientError> {
    let mut tries = 0;
    loop {
        let answer = conn.send_value(req).and_then(|()| conn.recv());
        match answer {
            Err(ClientError::Closed { .. } | ClientError::Io { .. }) if tries < 3 => {
                tries += 1;
                *reconnects += 1;
                *conn = Client::connect(server, timeout)?;
            }
            other => return other,
        }
    }
}

fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Closed loop on one connection until `stop`.
fn closed_loop(
    mut conn: Client,
    server: &str,
    mut reqs: Requests,
    timeout: Duration,
    stop: &AtomicBool,
    tally: &Mutex<Tally>,
) -> Result<(), ClientError> {
    while !stop.load(Ordering::Relaxed) {
        let req = reqs.next();
        let t = Instant::now();
        let mut reconnects = 0;
        let result = request_resending(&mut conn, server, &req, timeout, &mut reconnects);
        let mut tally = lock(tally);
        tally.reconnects += reconnects;
        tally.samples.push(Sample::of(&result?, t.elapsed()));
    }
    Ok(())
}

/// Open loop on one connection: a request every `every` (first after
/// `offset`) until `stop`, while a reader thread takes the answers, which
/// come in request order, and matches each to its send time.
fn open_loop(
    mut conn: Client,
    mut reqs: Requests,
    every: Duration,
    offset: Duration,
    stop: &AtomicBool,
    tally: &Mutex<Tally>,
) -> Result<(), ClientError> {
    let addr = conn.addr().to_string();
    let mut writer = conn.stream().try_clone().map_err(|source| ClientError::Io { addr: addr.clone(), source })?;
    let (sent_tx, sent_rx) = crossbeam_channel::unbounded::<Instant>();
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(), ClientError> {
            for sent in sent_rx {
                let answer = conn.recv()?;
                lock(tally).samples.push(Sample::of(&answer, sent.elapsed()));
            }
            Ok(())
        });
        let mut next = Instant::now() + offset;
        let mut wrote = Ok(());
        while !stop.load(Ordering::Relaxed) {
            // The pacing is the load itself, not a wait for something.
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let mut bytes = serde_json::to_vec(&reqs.next()).unwrap_or_default();
            bytes.push(b'\n');
            let t = Instant::now();
            if let Err(source) = writer.write_all(&bytes) {
                wrote = Err(ClientError::Io { addr, source });
                break;
            }
            let _ = sent_tx.send(t);
            next += every;
        }
        drop(sent_tx); // the reader ends after the last answer
        let read = reader.join().unwrap_or(Ok(()));
        wrote.and(read)
    })
}

/// `pear_deadline_misses_total` as a server's /metrics shows it now.
fn server_misses(metrics: &str) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(metrics).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| l.strip_prefix("pear_deadline_misses_total ")).and_then(|v| v.trim().parse().ok())
}

pub fn bench(server: &str, b: &BenchArgs, timeout: Duration, as_json: bool) -> Result<u8, ClientError> {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let failure: Arc<Mutex<Option<ClientError>>> = Arc::default();
    let conns = b.connections.max(1);
    let images = b.views.unwrap_or(b.images).max(1);
    let misses_before = b.metrics.as_deref().and_then(server_misses);
    let started = Instant::now();
    let mut threads = Vec::new();
    for i in 0..conns {
        let conn = Client::connect(server, timeout)?;
        let (stop, tally, failure) = (stop.clone(), tally.clone(), failure.clone());
        let files: Vec<String> = (0..images).map(|k| b.files[(i + k) % b.files.len().max(1)].clone()).collect();
        let reqs = Requests { files, fruit: b.views.is_some(), deadline_ms: b.deadline_ms, conn: i, sent: 0 };
        let server = server.to_string();
        let pace = b.rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(conns as f64 / r));
        threads.push(std::thread::spawn(move || {
            let result = match pace {
                Some(every) => open_loop(conn, reqs, every, every.mul_f64(i as f64 / conns as f64), &stop, &tally),
                None => closed_loop(conn, &server, reqs, timeout, &stop, &tally),
            };
            if let Err(e) = result {
                *lock(&failure) = Some(e);
                stop.store(true, Ordering::Relaxed);
            }
        }));
    }
    let probe = (b.probe_ms > 0).then(|| {
        let (stop, every) = (stop.clone(), Duration::from_millis(b.probe_ms));
        let conn = Client::connect(server, timeout);
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            let Ok(mut conn) = conn else { return lat };
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if conn.request(0x22, &Value::Null).is_err() {
                    break;
                }
                lat.push(t.elapsed());
                std::thread::sleep(every.saturating_sub(t.elapsed()));
            }
            lat
        })
    });
    let bar = ProgressBar::new((b.duration * 10.0) as u64);
    while started.elapsed().as_secs_f64() < b.duration && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        bar.set_position((started.elapsed().as_secs_f64() * 10.0) as u64);
    }
    stop.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    for t in threads {
        let _ = t.join();
    }
    let wall = started.elapsed().as_secs_f64();
    let mut probe_lat = probe.and_then(|p| p.join().ok()).unwrap_or_default();
    probe_lat.sort();
    if let Some(e) = lock(&failure).take() {
        return Err(e);
    }
    let server_counted = b.metrics.as_deref().and_then(server_misses).zip(misses_before).map(|(after, before)| after - before);
    let t = std::mem::take(&mut *lock(&tally));
    let report = Report::new(b, &t, wall, probe_lat, server_counted);
    if as_json {
        println!("{}", report.json(b, server));
    } else {
        report.print(b, server);
    }
    Ok(u8::from(report.image_errors > 0))
}

struct Report {
    wall: f64,
    requests: usize,
    images: u64,
    image_errors: u64,
    misses: u64,
    reconnects: u64,
    graded: Option<usize>,
    latencies: Vec<Duration>,
    /// Answer time minus the deadline, in ms (negative: early).
    lateness_ms: Vec<f64>,
    due_ms: Option<u64>,
    late: usize,
    probe: Vec<Duration>,
    server_misses: Option<f64>,
}

impl Report {
    fn new(b: &BenchArgs, t: &Tally, wall: f64, probe: Vec<Duration>, server_misses: Option<f64>) -> Report {
        let mut latencies: Vec<Duration> = t.samples.iter().map(|s| s.took).collect();
        latencies.sort();
        let mut lateness_ms: Vec<f64> = match b.deadline_ms {
            Some(d) => t.samples.iter().map(|s| s.took.as_secs_f64() * 1e3 - d as f64).collect(),
            None => Vec::new(),
        };
        lateness_ms.sort_by(f64::total_cmp);
        let due_ms = b.due_ms.or(b.deadline_ms);
        let late = due_ms.map_or(0, |d| t.samples.iter().filter(|s| s.took > Duration::from_millis(d)).count());
        let graded = b.views.map(|_| t.samples.iter().filter(|s| s.graded == Some(true)).count());
        Report {
            wall,
            requests: t.samples.len(),
            images: t.samples.iter().map(|s| s.images).sum(),
            image_errors: t.samples.iter().map(|s| s.image_errors).sum(),
            misses: t.samples.iter().map(|s| s.misses).sum(),
            reconnects: t.reconnects,
            graded,
            latencies,
            lateness_ms,
            due_ms,
            late,
            probe,
            server_misses,
        }
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    fn json(&self, b: &BenchArgs, server: &str) -> Value {
        let l = &self.latencies;
        let mut v = json!({
            "server": server, "connections": b.connections, "images_per_request": b.views.unwrap_or(b.images), "seconds": self.wall,
            "offered_requests_per_second": b.rate,
            "requests": self.requests, "images": self.images, "image_errors": self.image_errors, "reconnects": self.reconnects,
            "images_per_second": self.images as f64 / self.wall,
            "request_ms": { "p50": Self::ms(percentile(l, 0.5)), "p99": Self::ms(percentile(l, 0.99)), "max": Self::ms(l.last().copied().unwrap_or_default()) },
            "probe_ms": { "count": self.probe.len(), "p50": Self::ms(percentile(&self.probe, 0.5)), "p99": Self::ms(percentile(&self.probe, 0.99)) },
        });
        if let Some(g) = self.graded {
            v["fruits"] = json!(self.requests);
            v["fruits_graded"] = json!(g);
            v["fruits_per_second"] = json!(g as f64 / self.wall);
        }
        if let Some(d) = self.due_ms {
            v["late"] = json!({ "due_ms": d, "count": self.late, "fraction": self.late as f64 / self.requests.max(1) as f64 });
        }
        if let Some(d) = b.deadline_ms {
            let x = &self.lateness_ms;
            v["deadline"] = json!({
                "ms": d, "missed_images": self.misses, "miss_rate": self.misses as f64 / self.images.max(1) as f64,
                "lateness_ms": { "p50": percentile(x, 0.5), "p99": percentile(x, 0.99), "max": x.last().copied().unwrap_or_default() },
                "server_counted_misses": self.server_misses,
            });
        }
        v
    }

    fn print(&self, b: &BenchArgs, server: &str) {
        let mode = b.rate.map_or("closed loop".to_string(), |r| format!("open loop at {r} requests/s"));
        let per = b.views.map_or(format!("{} image(s) per request", b.images.max(1)), |k| format!("fruits of {k} views"));
        println!("{} connection(s), {per}, {mode}, for {:.1} s against {server}", b.connections, self.wall);
        println!(
            "  {:.1} images/s ({} images in {} requests, {} with an error)",
            self.images as f64 / self.wall,
            self.images,
            self.requests,
            self.image_errors
        );
        if let Some(g) = self.graded {
            println!("  {:.2} fruits/s graded ({g} of {} fruits)", g as f64 / self.wall, self.requests);
        }
        if self.reconnects > 0 {
            println!("  {} request(s) resent on a new connection after a server closed one", self.reconnects);
        }
        let l = &self.latencies;
        let (p50, p99) = (Self::ms(percentile(l, 0.5)), Self::ms(percentile(l, 0.99)));
        println!("  request p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms", Self::ms(l.last().copied().unwrap_or_default()));
        if let Some(d) = b.deadline_ms {
            let x = &self.lateness_ms;
            println!(
                "  deadline {d} ms: {} image(s) missed ({:.1} %); answer minus deadline p50 {:+.1} ms, p99 {:+.1} ms, max {:+.1} ms",
                self.misses,
                100.0 * self.misses as f64 / self.images.max(1) as f64,
                percentile(x, 0.5),
                percentile(x, 0.99),
                x.last().copied().unwrap_or_default()
            );
            if let Some(n) = self.server_misses {
                println!("  the server counted {n} deadline miss(es) during the run");
            }
        }
        if let Some(d) = self.due_ms {
            println!(
                "  late (answered more than {d} ms after sending): {} of {} requests ({:.1} %)",
                self.late,
                self.requests,
                100.0 * self.late as f64 / self.requests.max(1) as f64
            );
        }
        let q = &self.probe;
        println!("  0x22 probe: {} sent, p50 {:.1} ms, p99 {:.1} ms", q.len(), Self::ms(percentile(q, 0.5)), Self::ms(percentile(q, 0.99)));
    }
}
