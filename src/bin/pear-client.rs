//! `pear-client`: one subcommand per protocol command, a folder classifier
//! with progress, CSV and annotated pictures, and a closed-loop load tool.
//!
//! Exit status: 0 when every entry of every answer has error_code 0, 1 when
//! some entry is an error, 2 when a server cannot be reached or answers
//! something that is not the protocol.

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pear_protocol::client::{Client, ClientError};
use pear_protocol::{Entry, Response};
use pear_server::sync::lock;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about = "Client for pear-server (the original's TCP protocol)")]
struct Cli {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:9090", global = true)]
    server: String,
    /// Several servers (a,b,c): the command goes to each and each is reported.
    /// For model and folder commands, which a balancer would send to one backend only.
    #[arg(long, value_delimiter = ',', global = true)]
    servers: Vec<String>,
    /// Print the server's answers as JSON (one per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 300, global = true)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// 0x01: classify images named relative to the server's image folder.
    Classify(ClassifyArgs),
    /// 0x03: cancel this connection's queued images (useful with --servers only as a check).
    Stop,
    /// 0x24: list the models in the model folder.
    Models,
    /// 0x22: the active model.
    Current,
    /// 0x26: switch the active model.
    Use { model: String },
    /// 0x28: delete a model file.
    Delete { model: String },
    /// 0x20: download a model bundle (http/https URL).
    Download { url: String },
    /// 0x32 (no PATH) or 0x30 (PATH): the image folder.
    ImageDir { path: Option<String> },
    /// 0x34: change the model folder.
    ModelDir { path: String },
    /// Closed-loop load: N connections sending 0x01 for a while, plus a 0x22 probe.
    Bench(BenchArgs),
}

#[derive(Args)]
struct ClassifyArgs {
    /// Image names (relative to the server's image folder).
    files: Vec<String>,
    /// Classify every .jpg/.jpeg/.png in this local folder (the server's image
    /// folder, or a folder under it with --prefix).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Prefix for the names sent with --dir (the folder's path inside the server's image folder).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Images per request with --dir.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Write the report here instead of standard output (CSV: file, class, label, confidence, box, error).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write each image with its box and label drawn into this folder (needs --dir, and
    /// protocol.extended_results = true on the server for boxes and labels).
    #[arg(long)]
    annotate: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Client connections, each sending its next request when the last is answered.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Images per 0x01 request.
    #[arg(long, default_value_t = 1)]
    images: usize,
    /// Image names to cycle through (relative to the server's image folder).
    #[arg(long, value_delimiter = ',', default_value = "normal_1.jpg,rot_1.jpg,bruise_1.jpg,scab_1.jpg,no_pear_1.jpg")]
    files: Vec<String>,
    /// Milliseconds between 0x22 probes on their own connection (0 = no probe).
    #[arg(long, default_value_t = 100)]
    probe_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let servers = if cli.servers.is_empty() { vec![cli.server.clone()] } else { cli.servers.clone() };
    let timeout = Duration::from_secs(cli.timeout);
    let result = match &cli.cmd {
        Cmd::Classify(a) if a.dir.is_some() => classify_dir(&servers[0], a, timeout, cli.json),
        Cmd::Bench(b) => bench(&servers[0], b, timeout, cli.json),
        cmd => {
            let Some((code, data)) = simple(cmd) else { return ExitCode::from(2) };
            let mut worst = 0u8;
            for s in &servers {
                let status = match Client::connect(s, timeout).and_then(|mut c| c.request(code, &data)) {
                    Ok(answer) => {
                        print_answer(s, &answer, servers.len() > 1, cli.json);
                        u8::from(!answer.all_ok())
                    }
                    Err(e) => {
                        eprintln!("pear-client: {e}");
                        2
                    }
                };
                worst = worst.max(status);
            }
            Ok(worst)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pear-client: {e}");
            ExitCode::from(2)
        }
    }
}

/// Request code and data of the one-request commands.
fn simple(cmd: &Cmd) -> Option<(u8, Value)> {
    Some(match cmd {
        Cmd::Classify(a) => {
            if a.files.is_empty() {
                eprintln!("pear-client: classify needs file names or --dir");
                return None;
            }
            (0x01, json!(a.files))
        }
        Cmd::Stop => (0x03, Value::Null),
        Cmd::Models => (0x24, Value::Null),
        Cmd::Current => (0x22, Value::Null),
        Cmd::Use { model } => (0x26, json!([model])),
        Cmd::Delete { model } => (0x28, json!([model])),
        Cmd::Download { url } => (0x20, json!([url])),
        Cmd::ImageDir { path: None } => (0x32, Value::Null),
        Cmd::ImageDir { path: Some(p) } => (0x30, json!([p])),
        Cmd::ModelDir { path } => (0x34, json!([path])),
        Cmd::Bench(_) => return None,
    })
}

fn print_answer(server: &str, answer: &Response, many: bool, as_json: bool) {
    if as_json {
        let answer = serde_json::to_value(answer).unwrap_or(Value::Null);
        let tagged = if many { json!({ "server": server, "answer": answer }) } else { answer };
        println!("{tagged}");
        return;
    }
    let who = if many { format!("{server}: ") } else { String::new() };
    if answer.cmd.is_none() {
        let e = answer.response_data.first();
        let msg = e.and_then(|x| x.message.as_deref()).unwrap_or("error");
        let code = e.map(|x| (x.error_code as u8).to_string()).unwrap_or_else(|| "null".into());
        println!("{who}error {code}: {msg}");
        return;
    }
    let classify = answer.cmd == Some(0x02);
    for e in &answer.response_data {
        let line = if classify { describe(e) } else { describe_management(e) };
        println!("{who}{line}");
    }
}

/// A management entry: the name it is about, or why it failed.
fn describe_management(e: &Entry) -> String {
    let name = e.file_name.as_deref().unwrap_or("");
    if e.is_ok() {
        return if name.is_empty() { "ok".into() } else { name.to_string() };
    }
    let msg = e.message.as_deref().unwrap_or("(no message)");
    let about = if name.is_empty() { String::new() } else { format!("{name}: ") };
    format!("{about}error {}: {msg}", e.error_code as u8)
}

/// One entry in words.
fn describe(e: &Entry) -> String {
    let name = e.file_name.as_deref().unwrap_or("-");
    if !e.is_ok() {
        let msg = e.message.as_deref().unwrap_or("(no message)");
        return format!("{name}: error {}: {msg}", e.error_code as u8);
    }
    match (e.result, &e.extended) {
        (Some(n), Some(x)) if !x.detected => format!("{name}: {n} (no pear)"),
        (Some(n), Some(x)) => {
            let label = x.label.as_deref().unwrap_or("?");
            let conf = x.confidence.map(|c| format!(" {c:.2}")).unwrap_or_default();
            format!("{name}: {n} ({label}{conf})")
        }
        (Some(n), None) => format!("{name}: {n}"),
        (None, _) => format!("{name}: ok"),
    }
}

const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn list_images(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(dir.join(&rel))? {
            let e = e?;
            let name = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                stack.push(name);
            } else if name.extension().and_then(|x| x.to_str()).is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            {
                out.push(name.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn classify_dir(server: &str, a: &ClassifyArgs, timeout: Duration, as_json: bool) -> Result<u8, ClientError> {
    let dir = a.dir.as_deref().unwrap_or(Path::new("."));
    let io = |source| ClientError::Io { addr: dir.display().to_string(), source };
    let files = list_images(dir).map_err(io)?;
    let mut conn = Client::connect(server, timeout)?;
    let mut report: Box<dyn Write> = match &a.csv {
        Some(p) => Box::new(std::fs::File::create(p).map_err(io)?),
        None => Box::new(std::io::stdout()),
    };
    if !as_json {
        writeln!(report, "file,class,label,confidence,box,error").map_err(io)?;
    }
    if let Some(out) = &a.annotate {
        std::fs::create_dir_all(out).map_err(io)?;
    }
    // Hidden by indicatif when standard error is not a terminal.
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut any_error = false;
    let mut warned = false;
    for chunk in files.chunks(a.batch.max(1)) {
        let names: Vec<String> =
            chunk.iter().map(|f| if a.prefix.is_empty() { f.clone() } else { format!("{}/{f}", a.prefix.trim_end_matches('/')) }).collect();
        let answer = conn.request(0x01, &json!(names))?;
        if answer.cmd.is_none() {
            bar.abandon();
            print_answer(server, &answer, false, as_json);
            return Ok(1);
        }
        if as_json {
            let line = serde_json::to_string(&answer).unwrap_or_default();
            bar.suspend(|| println!("{line}"));
        }
        for (local, e) in chunk.iter().zip(&answer.response_data) {
            any_error |= !e.is_ok();
            let ext = e.extended.as_ref();
            let bbox = ext.and_then(|x| x.bbox);
            if !as_json {
                let error =
                    if e.is_ok() { String::new() } else { format!("{}: {}", e.error_code as u8, e.message.as_deref().unwrap_or("")) };
                let class = e.result.map(|c| c.to_string()).unwrap_or_default();
                let label = ext.and_then(|x| x.label.as_deref()).unwrap_or("");
                let conf = ext.and_then(|x| x.confidence).map(|c| format!("{c:.4}")).unwrap_or_default();
                let bx = bbox.map(|b| format!("{:.1} {:.1} {:.1} {:.1}", b[0], b[1], b[2], b[3])).unwrap_or_default();
                let row = [e.file_name.as_deref().unwrap_or(local), &class, label, &conf, &bx, &error].map(csv_field).join(",");
                writeln!(report, "{row}").map_err(io)?;
            }
            if let (Some(out), true) = (&a.annotate, e.is_ok()) {
                if ext.is_none() && !warned {
                    bar.suspend(|| eprintln!("pear-client: the server sends no boxes or labels (set protocol.extended_results = true); drawing the class only"));
                    warned = true;
                }
                annotate(&dir.join(local), &out.join(local), e, bbox).map_err(io)?;
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(u8::from(any_error))
}

/// Decodes `src` as the server does, draws the answer, writes a JPEG at `dst`.
fn annotate(src: &Path, dst: &Path, e: &Entry, bbox: Option<[f32; 4]>) -> std::io::Result<()> {
    let bytes = std::fs::read(src)?;
    let mut img = pear_model::decode::decode_image(&bytes, &Default::default()).map_err(|x| std::io::Error::other(x.to_string()))?;
    let ext = e.extended.as_ref();
    let detected = ext.is_none_or(|x| x.detected);
    let caption = pear_model::annotate::caption(
        detected,
        e.result,
        ext.and_then(|x| x.label.as_deref()),
        ext.and_then(|x| x.confidence).map(f64::from),
    );
    pear_model::annotate::draw(&mut img, bbox, &caption);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    img.save_with_format(dst.with_extension("jpg"), image::ImageFormat::Jpeg).map_err(std::io::Error::other)
}

#[derive(Default)]
struct Tally {
    requests: u64,
    images: u64,
    image_errors: u64,
    /// Connections closed by a server before the request was answered (a
    /// server draining closes after its last answer): resent on a new connection.
    reconnects: u64,
    latencies: Vec<Duration>,
}

/// Sends `req` and waits for its answer; when the connection was closed
/// under it, reconnects (up to 3 times) and sends it again.
fn request_resending(
    conn: &mut Client,
    server: &str,
    req: &(u8, Value),
    timeout: Duration,
    reconnects: &mut u64,
) -> Result<Response, ClientError> {
    let mut tries = 0;
    loop {
        match conn.request(req.0, &req.1) {
            Err(ClientError::Closed { .. } | ClientError::Io { .. }) if tries < 3 => {
                tries += 1;
                *reconnects += 1;
                *conn = Client::connect(server, timeout)?;
            }
            other => return other,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bench(server: &str, b: &BenchArgs, timeout: Duration, as_json: bool) -> Result<u8, ClientError> {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let failure: Arc<Mutex<Option<ClientError>>> = Arc::default();
    let started = Instant::now();
    let mut threads = Vec::new();
    for i in 0..b.connections.max(1) {
        let mut conn = Client::connect(server, timeout)?;
        let (stop, tally, failure) = (stop.clone(), tally.clone(), failure.clone());
        let files: Vec<String> = (0..b.images.max(1)).map(|k| b.files[(i + k) % b.files.len().max(1)].clone()).collect();
        let server = server.to_string();
        threads.push(std::thread::spawn(move || {
            let req = (0x01, json!(files));
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut reconnects = 0;
                let result = request_resending(&mut conn, &server, &req, timeout, &mut reconnects);
                lock(&tally).reconnects += reconnects;
                match result {
                    Ok(answer) => {
                        let e = &answer.response_data;
                        let errors = e.iter().filter(|x| !x.is_ok()).count() as u64;
                        let mut t_ = lock(&tally);
                        t_.requests += 1;
                        t_.images += e.len() as u64;
                        t_.image_errors += errors;
                        t_.latencies.push(t.elapsed());
                    }
                    Err(err) => {
                        *lock(&failure) = Some(err);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
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
    let mut t = std::mem::take(&mut *lock(&tally));
    t.latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p99, max) = (percentile(&t.latencies, 0.5), percentile(&t.latencies, 0.99), t.latencies.last().copied().unwrap_or_default());
    let probe_p99 = percentile(&probe_lat, 0.99);
    if as_json {
        println!(
            "{}",
            json!({
                "connections": b.connections, "images_per_request": b.images, "seconds": wall,
                "requests": t.requests, "images": t.images, "image_errors": t.image_errors, "reconnects": t.reconnects,
                "images_per_second": t.images as f64 / wall,
                "request_ms": { "p50": ms(p50), "p99": ms(p99), "max": ms(max) },
                "probe_ms": { "count": probe_lat.len(), "p50": ms(percentile(&probe_lat, 0.5)), "p99": ms(probe_p99) },
            })
        );
    } else {
        println!("{} connection(s) x {} image(s) per request for {wall:.1} s against {server}", b.connections, b.images);
        println!(
            "  {:.1} images/s ({} images in {} requests, {} with an error)",
            t.images as f64 / wall,
            t.images,
            t.requests,
            t.image_errors
        );
        if t.reconnects > 0 {
            println!("  {} request(s) resent on a new connection after a server closed one", t.reconnects);
        }
        println!("  request p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", ms(p50), ms(p99), ms(max));
        println!("  0x22 probe: {} sent, p50 {:.1} ms, p99 {:.1} ms", probe_lat.len(), ms(percentile(&probe_lat, 0.5)), ms(probe_p99));
    }
    Ok(u8::from(t.image_errors > 0))
}
