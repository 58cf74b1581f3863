//! `pear-client`: one subcommand per protocol command, a folder classifier
//! with progress, CSV and annotated pictures, and a closed-loop load tool.
//!
//! Exit status: 0 when every entry of every answer has error_code 0, 1 when
//! some entry is an error, 2 when a server cannot be reached or answers
//! something that is not the protocol.

mod bench;
mod history;

use bench::BenchArgs;
use clap::{Args, Parser, Subcommand};
use history::HistoryArgs;
use indicatif::{ProgressBar, ProgressStyle};
use pear_protocol::client::{request, Client, ClientError};
use pear_protocol::{Entry, Response};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Load: N connections sending 0x01 for a while, plus a 0x22 probe.
    Bench(BenchArgs),
    /// The journal's records (the server's /api/inspections on its metrics listener).
    History(HistoryArgs),
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
    /// The images are views of this one fruit: the answer also grades the fruit.
    #[arg(long, conflicts_with = "dir")]
    fruit: Option<String>,
    /// The answer is due this many ms after the server has the request; what is
    /// not inferred by then answers "deadline missed".
    #[arg(long, conflicts_with = "dir")]
    deadline_ms: Option<u64>,
}

/// Exit status 2: the server could not be reached or did not answer the protocol.
fn fail(e: &str) -> ExitCode {
    eprintln!("pear-client: {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let servers = if cli.servers.is_empty() { vec![cli.server.clone()] } else { cli.servers.clone() };
    let timeout = Duration::from_secs(cli.timeout);
    let result = match &cli.cmd {
        Cmd::Classify(a) if a.dir.is_some() => classify_dir(&servers[0], a, timeout, cli.json),
        Cmd::Bench(b) => bench::bench(&servers[0], b, timeout, cli.json),
        Cmd::History(h) => match history::history(h, timeout, cli.json) {
            Ok(code) => Ok(code),
            Err(e) => return fail(&e),
        },
        cmd => {
            let Some(req) = simple(cmd) else { return ExitCode::from(2) };
            let mut worst = 0u8;
            for s in &servers {
                let status = match Client::connect(s, timeout).and_then(|mut c| c.send_value(&req).and_then(|()| c.recv())) {
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

/// The request of a one-request command.
fn simple(cmd: &Cmd) -> Option<Value> {
    let (code, data) = match cmd {
        Cmd::Classify(a) => {
            if a.files.is_empty() {
                eprintln!("pear-client: classify needs file names or --dir");
                return None;
            }
            let mut r = request(0x01, json!(a.files));
            if let Some(id) = &a.fruit {
                // An integer id goes as a number, anything else as a string.
                r["fruit_id"] = id.parse::<i64>().map_or_else(|_| json!(id), |n| json!(n));
            }
            if let Some(ms) = a.deadline_ms {
                r["deadline_ms"] = json!(ms);
            }
            return Some(r);
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
        Cmd::Bench(_) | Cmd::History(_) => return None,
    };
    Some(request(code, data))
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
    if let Some(f) = &answer.fruit {
        let id = f.fruit_id.as_str().map_or_else(|| f.fruit_id.to_string(), str::to_string);
        match f.result {
            Some(grade) => {
                let conf = f.confidence.map(|c| format!(" {c:.2}")).unwrap_or_default();
                let view = f.decisive_view.as_deref().unwrap_or("?");
                println!("{who}fruit {id}: {grade} (from {view}{conf}; {} view(s) judged)", f.views_judged);
            }
            None => println!("{who}fruit {id}: error {}: {}", f.error_code as u8, f.message.as_deref().unwrap_or("(no message)")),
        }
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

/// A CSV cell, quoted when it needs to be (the folder report and `history --csv`).
pub(crate) fn csv_field(s: &str) -> String {
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
