//! The whole server under load: started in-process on 127.0.0.1:0, driven by
//! N client connections over TCP (N = 1, 4, 16), each sending one-image 0x01
//! requests in a closed loop, while a probe connection sends 0x22 every 10 ms.
//!
//!     cargo bench --bench load
//!     PEAR_BENCH_BUNDLE=/tmp/orig/orig-shapes.safetensors PEAR_BENCH_IMAGES=/tmp/orig/frames \
//!         cargo bench --bench load
//!
//! Criterion's throughput line is images/s (one iteration = one request from
//! every client). After each N it prints request p50/p99, the probe's p99,
//! the share of images in which a pear was found (so the classifier ran),
//! and the process's peak RSS. Defaults: the shipped model on samples/.
//! PEAR_BENCH_WORKERS / PEAR_BENCH_THREADS set the thread budget (unset: the
//! server's defaults), PEAR_BENCH_SCHEDULING the inference threads'
//! `scheduling` ("idle", "nice", "normal"); PEAR_BENCH_CLIENTS picks the
//! client counts ("1,4").
//! Make the bundle with the original's model shapes, and its frames, with
//! tools/make_bench_bundle.py.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use pear_protocol::client::Client;
use pear_protocol::Response;
use pear_server::config::Config;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn env_path(key: &str, default: &str) -> PathBuf {
    std::env::var(key).map(PathBuf::from).unwrap_or_else(|_| Path::new(ROOT).join(default))
}

/// Starts the server on a free loopback port; returns it and the image names.
fn start() -> (SocketAddr, Vec<String>) {
    let bundle = env_path("PEAR_BENCH_BUNDLE", "weights/pear-default.safetensors").canonicalize().expect("bundle");
    let images = env_path("PEAR_BENCH_IMAGES", "samples").canonicalize().expect("image folder");
    let mut names: Vec<String> = std::fs::read_dir(&images)
        .expect("image folder")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jpg") || n.ends_with(".png"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no .jpg/.png in {}", images.display());
    let opt = |key: &str, name: &str| std::env::var(key).map(|v| format!("{name} = {v}\n")).unwrap_or_default();
    let toml = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n[inference]\n{}{}{}queue_capacity = 256\n\
         [model]\ndir = {:?}\ndefault = {:?}\nconfidence_threshold = 0.5\n\
         [images]\ndir = {:?}\n[protocol]\nextended_results = true\n",
        opt("PEAR_BENCH_WORKERS", "workers"),
        opt("PEAR_BENCH_THREADS", "threads_per_worker"),
        std::env::var("PEAR_BENCH_SCHEDULING").map(|v| format!("scheduling = {v:?}\n")).unwrap_or_default(),
        bundle.parent().expect("bundle folder"),
        bundle.file_name().expect("bundle name").to_string_lossy(),
        images,
    );
    let config = Config::from_toml(&toml, Path::new(ROOT)).expect("bench config");
    let server = pear_server::server::start(config).expect("server starts");
    let addr = server.local_addr().expect("address");
    std::thread::spawn(move || server.run());
    (addr, names)
}

/// One request on `c` and how long its answer took.
fn timed(c: &mut Client, code: u8, data: Value) -> (Response, Duration) {
    let t = Instant::now();
    let answer = c.request(code, &data).expect("answer");
    (answer, t.elapsed())
}

fn connect(addr: SocketAddr) -> Client {
    Client::connect(&addr.to_string(), Duration::from_secs(120)).expect("connect")
}

#[derive(Default)]
struct Stats {
    requests: Vec<Duration>,
    probes: Vec<Duration>,
    images: usize,
    detected: usize,
}

/// Every client sends `rounds` one-image requests back to back; returns the
/// wall time of the whole run.
fn drive(addr: SocketAddr, names: &[String], clients: usize, rounds: u64, stats: &Mutex<Stats>) -> Duration {
    let done = Arc::new(AtomicBool::new(false));
    let probe = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut c = connect(addr);
            let mut lat = Vec::new();
            while !done.load(Ordering::Acquire) {
                let (v, d) = timed(&mut c, 0x22, Value::Null);
                assert_eq!(v.cmd, Some(0x23), "{v:?}");
                lat.push(d);
                std::thread::sleep(Duration::from_millis(10));
            }
            lat
        })
    };
    let t = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let names = names.to_vec();
            std::thread::spawn(move || {
                let mut c = connect(addr);
                let mut s = Stats::default();
                for r in 0..rounds as usize {
                    let name = &names[(i * 7 + r) % names.len()];
                    let (v, d) = timed(&mut c, 0x01, json!([name]));
                    let e = &v.response_data[0];
                    assert!(e.is_ok(), "{name}: {v:?}");
                    s.requests.push(d);
                    s.images += 1;
                    s.detected += e.extended.as_ref().is_some_and(|x| x.detected) as usize;
                }
                s
            })
        })
        .collect();
    let mut all = stats.lock().expect("stats");
    for w in workers {
        let s = w.join().expect("client");
        all.requests.extend(s.requests);
        all.images += s.images;
        all.detected += s.detected;
    }
    let elapsed = t.elapsed();
    done.store(true, Ordering::Release);
    all.probes.extend(probe.join().expect("probe"));
    elapsed
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

/// Peak resident set of this process (server and clients), from /proc.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.map_or(f64::NAN, |k| k / 1024.0)
}

fn bench(c: &mut Criterion) {
    pear_model::cpu::single_threaded_candle_ops(); // as the server binary does
    pear_model::cpu::keep_freed_memory();
    let (addr, names) = start();
    let counts: Vec<usize> = std::env::var("PEAR_BENCH_CLIENTS")
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![1, 4, 16]);
    let mut g = c.benchmark_group("load");
    g.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(12));
    for clients in counts {
        let stats = Mutex::new(Stats::default());
        g.throughput(Throughput::Elements(clients as u64));
        g.bench_function(format!("clients_{clients}"), |b| b.iter_custom(|rounds| drive(addr, &names, clients, rounds, &stats)));
        let mut s = stats.into_inner().expect("stats");
        println!(
            "load/clients_{clients}: request p50 {:.1} ms, p99 {:.1} ms; 0x22 probe p99 {:.2} ms ({} probes); pear found in {}/{} images; peak RSS {:.0} MiB",
            percentile(&mut s.requests, 0.5),
            percentile(&mut s.requests, 0.99),
            percentile(&mut s.probes, 0.99),
            s.probes.len(),
            s.detected,
            s.images,
            peak_rss_mib()
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
