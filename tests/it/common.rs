//! A real pear-server process on a free loopback port, in its own temp folder,
//! and the project's client (`pear_protocol::client`) wrapped for tests:
//! raw bytes out, answers as JSON values in, every answer newline-terminated.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Options {
    pub workers: usize,
    pub queue_capacity: usize,
    pub max_connections: usize,
    pub max_request_bytes: usize,
    pub extended: bool,
    pub request_timeout_secs: u64,
    pub max_file_bytes: u64,
    /// `inference.max_queued_per_connection`; None = the server's default.
    pub max_queued_per_connection: Option<usize>,
    /// `debug.min_inference_ms`: a slow worker made by configuration.
    pub min_inference_ms: u64,
    pub idle_timeout_secs: u64,
    pub request_read_timeout_secs: u64,
    pub max_connections_per_address: Option<usize>,
    pub drain_timeout_secs: u64,
    pub download_allowed_hosts: Vec<String>,
    /// Leave a `.download-*.part` in the model folder before the server starts.
    pub stale_part_file: bool,
    /// Serve /metrics, /healthz, /readyz on a free port (`TestServer::metrics`).
    pub metrics: bool,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
    /// `[debug] annotated_dir = "annotated"` with this `annotated_keep`.
    pub annotated_keep: Option<usize>,
    /// `images.settle_ms`.
    pub settle_ms: u64,
    /// `fruit.min_views_judged`.
    pub min_views_judged: usize,
    /// `[journal] path = "journal/inspections.sqlite"` (`TestServer::journal`).
    pub journal: bool,
    /// `journal.max_rows`.
    pub journal_max_rows: Option<u64>,
    /// More `[journal]` lines (with `journal`).
    pub journal_extra: String,
    /// Bytes written as the journal file before the server starts (a corrupt journal).
    pub journal_seed: Option<Vec<u8>>,
    /// RLIMIT_FSIZE for the server process: every file it writes stops at this size.
    pub file_size_limit: Option<u64>,
    /// `metrics.listen` instead of `127.0.0.1:0` (with `metrics`).
    pub metrics_listen: Option<String>,
    /// `metrics.credentials`.
    pub metrics_credentials: Option<String>,
    /// `inference.scheduling`; None = the server's default.
    pub scheduling: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            queue_capacity: 64,
            max_connections: 16,
            max_request_bytes: 4096,
            extended: false,
            request_timeout_secs: 60,
            max_file_bytes: 64 << 20,
            max_queued_per_connection: None,
            min_inference_ms: 0,
            idle_timeout_secs: 30,
            request_read_timeout_secs: 10,
            max_connections_per_address: None,
            drain_timeout_secs: 30,
            download_allowed_hosts: vec!["127.0.0.1".into()],
            stale_part_file: false,
            metrics: false,
            env: vec![],
            annotated_keep: None,
            settle_ms: 0,
            min_views_judged: 1,
            journal: false,
            journal_max_rows: None,
            journal_extra: String::new(),
            journal_seed: None,
            file_size_limit: None,
            metrics_listen: None,
            metrics_credentials: None,
            scheduling: None,
        }
    }
}

pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// The metrics listener, when `Options::metrics`.
    pub metrics: Option<SocketAddr>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn default_model() -> PathBuf {
    Path::new(ROOT).join("weights/pear-default.safetensors")
}

impl TestServer {
    pub fn start(o: Options) -> TestServer {
        let dir = std::env::temp_dir().join(format!("pear-test-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["images/sub", "models", "models2", "outside"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        for e in std::fs::read_dir(Path::new(ROOT).join("samples")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join("images").join(e.file_name())).unwrap();
        }
        std::fs::copy(dir.join("images/normal_1.jpg"), dir.join("images/sub/nested.jpg")).unwrap();
        std::fs::write(dir.join("images/corrupt.jpg"), b"this is not a jpeg").unwrap();
        std::fs::write(dir.join("images/0x1f.jpg"), b"").unwrap();
        std::fs::copy(dir.join("images/normal_1.jpg"), dir.join("outside/secret.jpg")).unwrap();
        std::os::unix::fs::symlink(dir.join("outside/secret.jpg"), dir.join("images/link_out.jpg")).unwrap();
        std::fs::copy(default_model(), dir.join("models/pear-default.safetensors")).unwrap();
        std::fs::copy(default_model(), dir.join("models/second.safetensors")).unwrap();
        std::fs::write(dir.join("models/broken.safetensors"), b"not a model").unwrap();
        if o.stale_part_file {
            std::fs::write(dir.join("models/.download-1-0.part"), b"half a model").unwrap();
        }
        let opt = |k: &str, v: Option<usize>| v.map(|v| format!("{k} = {v}\n")).unwrap_or_default();
        let hosts: Vec<String> = o.download_allowed_hosts.iter().map(|h| format!("{h:?}")).collect();
        let cfg = format!(
            r#"
[server]
host = "127.0.0.1"
port = 0
max_connections = {max_conn}
max_request_bytes = {max_req}
idle_timeout_secs = {idle}
request_read_timeout_secs = {read_timeout}
drain_timeout_secs = {drain}
{per_address}[inference]
workers = {workers}
queue_capacity = {queue}
request_timeout_secs = {timeout}
{per_conn}{metrics}[debug]
min_inference_ms = {min_ms}
{annotated}
[model]
dir = "models"
default = "pear-default.safetensors"
confidence_threshold = 0.5
allowed_roots = ["models", "models2"]
download_max_bytes = 50000000
download_timeout_secs = 20
download_allowed_hosts = [{hosts}]
[images]
dir = "images"
allowed_roots = ["images"]
max_file_bytes = {max_file}
settle_ms = {settle}
[protocol]
extended_results = {ext}
[fruit]
min_views_judged = {min_views}
{journal}"#,
            max_conn = o.max_connections,
            max_req = o.max_request_bytes,
            workers = o.workers,
            queue = o.queue_capacity,
            timeout = o.request_timeout_secs,
            ext = o.extended,
            max_file = o.max_file_bytes,
            settle = o.settle_ms,
            min_views = o.min_views_judged,
            journal = if o.journal {
                format!(
                    "[journal]\npath = \"journal/inspections.sqlite\"\n{}{}\n",
                    opt("max_rows", o.journal_max_rows.map(|n| n as usize)),
                    o.journal_extra
                )
            } else {
                String::new()
            },
            idle = o.idle_timeout_secs,
            read_timeout = o.request_read_timeout_secs,
            drain = o.drain_timeout_secs,
            per_address = opt("max_connections_per_address", o.max_connections_per_address),
            per_conn = opt("max_queued_per_connection", o.max_queued_per_connection)
                + &o.scheduling.map(|m| format!("scheduling = {m:?}\n")).unwrap_or_default(),
            min_ms = o.min_inference_ms,
            hosts = hosts.join(", "),
            annotated = o.annotated_keep.map(|k| format!("annotated_dir = \"annotated\"\nannotated_keep = {k}\n")).unwrap_or_default(),
            metrics = if o.metrics {
                let listen = o.metrics_listen.as_deref().unwrap_or("127.0.0.1:0");
                let cred = o.metrics_credentials.as_ref().map(|c| format!("credentials = {c:?}\n")).unwrap_or_default();
                format!("[metrics]\nlisten = {listen:?}\n{cred}")
            } else {
                String::new()
            }
        );
        std::fs::write(dir.join("server.toml"), cfg).unwrap();
        if let Some(seed) = &o.journal_seed {
            std::fs::create_dir_all(dir.join("journal")).unwrap();
            std::fs::write(dir.join("journal/inspections.sqlite"), seed).unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pear-server"));
        if let Some(limit) = o.file_size_limit {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            // SAFETY: setrlimit is async-signal-safe; it runs in the child between fork and exec.
            unsafe {
                cmd.pre_exec(
                    move || if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) },
                );
            }
        }
        let mut child = cmd
            .arg("--config")
            .arg(dir.join("server.toml"))
            .env("RUST_LOG", "info,pear_server::commands=debug,pear_server::inference::pool=debug")
            .envs(o.env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(dir.join("server.log")).unwrap()))
            .spawn()
            .expect("start pear-server");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("no address in {line:?}"));
        let metrics = if o.metrics {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let a = line.trim().rsplit("http://").next().unwrap();
            Some(a.parse().unwrap_or_else(|_| panic!("no metrics address in {line:?}")))
        } else {
            None
        };
        TestServer { child, addr, dir, metrics }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// GET `path` on the metrics listener: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http_get_with(path, "")
    }

    /// GET with extra header lines (each ending in \r\n).
    pub fn http_get_with(&self, path: &str, headers: &str) -> (u16, String) {
        let addr = self.metrics.expect("started with Options::metrics");
        let mut s = TcpStream::connect(("127.0.0.1", addr.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n").unwrap();
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).unwrap();
        let text = String::from_utf8_lossy(&bytes); // an image's body is not text
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad HTTP answer {text:?}"));
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// The journal's database file (`Options::journal`).
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal/inspections.sqlite")
    }

    /// The server's log so far (RUST_LOG=info).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (libc::SIGTERM, SIGINT) to the server process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill failed");
    }

    /// Waits for the process to exit (at most `limit`, then fails) and gives its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let until = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < until, "server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident memory of the server so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }
}

/// A 0x01 request for these files.
pub fn classify(files: &[&str]) -> String {
    let list: Vec<String> = files.iter().map(|f| format!("{f:?}")).collect();
    format!("{{\"cmd\": 0x01, \"request_data\": [{}]}}", list.join(", "))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Client {
    /// The same socket as `inner`'s, for tests that write bytes one by one,
    /// shut a side, or reset it.
    pub stream: TcpStream,
    inner: pear_protocol::client::Client,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let inner = pear_protocol::client::Client::connect(&addr.to_string(), Duration::from_secs(120)).unwrap();
        let stream = inner.stream().try_clone().unwrap();
        Client { stream, inner }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.inner.send_raw(bytes).unwrap();
    }

    /// One response: a JSON object terminated by a newline.
    pub fn recv(&mut self) -> Value {
        let raw = self.inner.recv_raw().expect("read response");
        let text = String::from_utf8_lossy(&raw.bytes).into_owned();
        assert!(raw.newline, "response must end with a newline: {text:?}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("response is not JSON ({e}): {text:?}"))
    }

    pub fn request(&mut self, text: &str) -> Value {
        self.send(text.as_bytes());
        self.recv()
    }

    /// True when the server closed the connection (end of stream or reset)
    /// with nothing more to read; a server that merely goes silent for 5 s
    /// is not a close.
    pub fn closed(&mut self) -> bool {
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match self.inner.recv_raw() {
            Err(pear_protocol::client::ClientError::Closed { .. }) => true,
            Err(pear_protocol::client::ClientError::Io { source, .. }) => {
                matches!(source.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted)
            }
            _ => false,
        }
    }
}

/// A 0x01 request for these files with extra keys, e.g. `"deadline_ms": 100`.
pub fn classify_with(files: &[&str], extra: &str) -> String {
    let list: Vec<String> = files.iter().map(|f| format!("{f:?}")).collect();
    format!("{{\"cmd\": 0x01, \"request_data\": [{}], {extra}}}", list.join(", "))
}

/// The entries of a response.
pub fn entries(v: &Value) -> &Vec<Value> {
    v["response_data"].as_array().expect("response_data is a list")
}

/// Asserts the original's protocol-error shape and returns its message.
pub fn assert_error(v: &Value, code: i64) -> String {
    assert!(v["cmd"].is_null(), "error response has cmd null: {v}");
    assert!(v["request_data"].is_null(), "{v}");
    let e = &entries(v)[0];
    assert_eq!(e["error_code"], code, "{v}");
    assert!(e["file_name"].is_null() && e["result"].is_null(), "{v}");
    let m = e["message"].as_str().expect("error has a message").to_string();
    assert!(!m.is_empty());
    m
}

/// Every entry carries the three keys.
pub fn assert_entry_keys(v: &Value) {
    for e in entries(v) {
        for k in ["file_name", "result", "error_code"] {
            assert!(e.get(k).is_some(), "entry lacks {k}: {v}");
        }
    }
}

/// (metric name, labels "k=v,k=v" sorted) -> value, from one scrape. Every
/// line that is not a comment must parse as a sample.
pub fn scrape(s: &TestServer) -> BTreeMap<(String, String), f64> {
    let (status, body) = s.http_get("/metrics");
    assert_eq!(status, 200);
    for line in body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        assert!(matches!(prometheus_parse::LineInfo::parse(line), prometheus_parse::LineInfo::Sample { .. }), "not a sample: {line:?}");
    }
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut out = BTreeMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<String> = sample.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let v = match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        out.insert((sample.metric, labels.join(",")), v);
    }
    out
}

pub fn metric(m: &BTreeMap<(String, String), f64>, name: &str, labels: &str) -> f64 {
    m.get(&(name.to_string(), labels.to_string())).copied().unwrap_or(0.0)
}

/// Scrapes /metrics until it shows `name{labels}` meeting `cond` (bounded:
/// 20 s). Each round trip is the wait: what the server reports, not a
/// guessed delay, is what the test goes on from.
pub fn wait_for_metric(s: &TestServer, name: &str, labels: &str, cond: impl Fn(f64) -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = metric(&scrape(s), name, labels);
        if cond(v) {
            return;
        }
        assert!(std::time::Instant::now() < until, "{name}{{{labels}}} is still {v}");
    }
}

/// SIGTERM, then the drain's exit 0: every answered image is journaled by then.
pub fn drain(s: &mut TestServer) {
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(60)), Some(0));
}

/// A file's SHA-256, hex, as the journal records images and models.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}
