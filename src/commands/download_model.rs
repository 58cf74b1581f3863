//! 0x20: download a model bundle over HTTP(S) into the model folder.
//!
//! The body goes to a hidden temporary file in the model folder (same
//! filesystem, so the final rename is atomic), capped in size and time, and is
//! renamed into place only after it loads as a complete model. Any failure
//! removes the temporary file; the active model is never touched.
//!
//! Only hosts in `model.download_allowed_hosts` are fetched from, redirects
//! included (each hop is checked before it is requested); credentials and
//! query strings never reach the log; one download runs at a time.

use super::{management, Command, Conn, Spec};
use crate::config::ModelSection;
use crate::paths::check_model_name;
use crate::state::State;
use crate::sync::lock;
use pear_protocol::{invalid, one_string, Entry, ErrorCode, InvalidRequest, Request};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

pub(super) const COMMAND: Spec = Spec { code: 0x20, parse };

static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

/// The download state: one download at a time, and the temporary files of
/// the one in progress, removed if the server exits mid-download.
#[derive(Default)]
pub struct Downloads {
    one: Mutex<()>,
    partial: Mutex<HashSet<PathBuf>>,
}

impl Downloads {
    /// Removes the temporary files of downloads still running (exit path).
    pub fn remove_partial(&self) {
        for p in lock(&self.partial).drain() {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Removes the temporary files a killed server left in `dir` (start path).
    pub fn remove_stale(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".download-") && name.ends_with(".part") {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => log::info!("removed {} left by an interrupted download", e.path().display()),
                    Err(err) => log::warn!("cannot remove {}: {err}", e.path().display()),
                }
            }
        }
    }
}

/// A URL cut into the parts this file needs, once: `scheme://[credentials@]host[:port]/path?query#fragment`.
struct Url<'a> {
    scheme: &'a str,
    /// host[:port] with the credentials, as written.
    authority: &'a str,
    credentials: Option<&'a str>,
    /// host[:port] alone.
    host: &'a str,
    /// From the `/` after the authority up to `?` or `#`; may be empty.
    path: &'a str,
    /// Whether a query or fragment followed (tokens live there).
    has_query: bool,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Url<'a> {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (credentials, host) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
        Url { scheme, authority, credentials, host, path: &tail[..path_end], has_query: path_end < tail.len() }
    }
}

/// The file name a URL's last path segment gives, if it is a plain bundle name.
pub fn file_name_from_url(url: &str) -> Result<String, String> {
    let name = Url::parse(url).path.rsplit('/').next().unwrap_or("");
    if name.is_empty() {
        return Err(format!("URL '{}' does not end with a file name", redact(url)));
    }
    check_model_name(name).map_err(|e| e.to_string())?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!("'{name}' has characters not allowed in a model file name"));
    }
    if !name.ends_with(".safetensors") {
        return Err(format!("'{name}' is not a .safetensors model bundle (convert PyTorch weights with tools/convert.py)"));
    }
    Ok(name.to_string())
}

/// The URL with its credentials and query (tokens) hidden, for logs and answers.
pub fn redact(url: &str) -> String {
    let u = Url::parse(url);
    let scheme = if u.scheme.is_empty() { String::new() } else { format!("{}://", u.scheme) };
    let credentials = if u.credentials.is_some() { "***@" } else { "" };
    let query = if u.has_query { "?***" } else { "" };
    format!("{scheme}{credentials}{}{}{query}", u.host, u.path)
}

/// host[:port] of an http(s) URL, lower-cased, without credentials.
fn host_of(url: &str) -> Result<String, String> {
    let u = Url::parse(url);
    if !u.scheme.eq_ignore_ascii_case("http") && !u.scheme.eq_ignore_ascii_case("https") {
        return Err(format!("'{}' is not an http:// or https:// URL", redact(url)));
    }
    if u.host.is_empty() {
        return Err(format!("'{}' has no host", redact(url)));
    }
    Ok(u.host.to_ascii_lowercase())
}

/// An entry of `model.download_allowed_hosts` allows a host on any port, or
/// exactly one port when it names one.
fn check_host(url: &str, allowed: &[String]) -> Result<(), String> {
    let host = host_of(url)?;
    let bare = match host.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || host.starts_with('[') => {
            if port.chars().all(|c| c.is_ascii_digit()) { h } else { host.as_str() }
        }
        _ => host.as_str(),
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(&host) || a.eq_ignore_ascii_case(bare)) {
        Ok(())
    } else {
        Err(format!("host '{host}' is not in model.download_allowed_hosts"))
    }
}

/// Removes the temporary file unless it was renamed into place, and keeps it
/// listed so a server exiting mid-download removes it too.
struct TempFile<'a> {
    path: Option<PathBuf>,
    downloads: &'a Downloads,
}

impl<'a> TempFile<'a> {
    /// Creates the (empty) file and lists it.
    fn create(path: PathBuf, downloads: &'a Downloads) -> Result<(Self, std::fs::File), String> {
        let file = std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        lock(&downloads.partial).insert(path.clone());
        Ok((TempFile { path: Some(path), downloads }, file))
    }

    /// The file was renamed into place: nothing to clean up.
    fn keep(&mut self) {
        if let Some(p) = self.path.take() {
            lock(&self.downloads.partial).remove(&p);
        }
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(&p);
            lock(&self.downloads.partial).remove(&p);
        }
    }
}

const MAX_REDIRECTS: usize = 5;

/// GETs `url`, following redirects by hand so each target is checked
/// against the allow-list before anything is sent to it.
fn get(agent: &ureq::Agent, url: &str, allowed: &[String]) -> Result<ureq::http::Response<ureq::Body>, String> {
    let mut url = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        check_host(&url, allowed)?;
        let resp = agent.get(&url).call().map_err(|e| format!("download from {} failed: {}", redact(&url), redact(&e.to_string())))?;
        if !resp.status().is_redirection() {
            return Ok(resp);
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| format!("{} redirects without a Location", redact(&url)))?;
        url = if location.contains("://") {
            location.to_string()
        } else if location.starts_with('/') {
            let u = Url::parse(&url);
            format!("{}://{}{location}", u.scheme, u.authority)
        } else {
            return Err(format!("{} redirects to an unsupported location '{location}'", redact(&url)));
        };
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

fn fetch(url: &str, mut file: std::fs::File, cfg: &ModelSection) -> Result<u64, String> {
    let max_bytes = cfg.download_max_bytes;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(cfg.download_timeout_secs)))
        .max_redirects(0)
        .build()
        .into();
    let resp = get(&agent, url, &cfg.download_allowed_hosts)?;
    if let Some(len) = resp.body().content_length() {
        if len > max_bytes {
            return Err(format!("model is {len} bytes, more than model.download_max_bytes ({max_bytes})"));
        }
    }
    let mut reader = resp.into_body().into_with_config().limit(max_bytes).reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("download interrupted: {e}"))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(|e| format!("cannot write model: {e}"))?;
        total += n as u64;
    }
    file.sync_all().map_err(|e| format!("cannot write model: {e}"))?;
    Ok(total)
}

fn handle(url: &str, conn: &Conn) -> Vec<Entry> {
    let state: &State = conn.state;
    let models = &state.models;
    let shown = redact(url);
    let refuse = |name: Option<String>, code, message: String| {
        log::warn!("{}: 0x20 {shown}: {message}", conn.peer);
        vec![Entry::failed(name, code, message)]
    };
    let cfg = &state.config.model;
    if cfg.download_allowed_hosts.is_empty() {
        return refuse(None, ErrorCode::InvalidMessage, "downloads are off: model.download_allowed_hosts is empty".into());
    }
    let name = match file_name_from_url(url).and_then(|n| check_host(url, &cfg.download_allowed_hosts).map(|_| n)) {
        Ok(n) => n,
        Err(e) => return refuse(None, ErrorCode::InvalidMessage, e),
    };
    // One at a time; a panic in an earlier download (poisoned lock) does not block later ones.
    let _one = match state.downloads.one.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            return refuse(Some(name), ErrorCode::Timeout, "another download is in progress; try again when it ends".into());
        }
    };
    let dir = models.dir();
    let final_path = dir.join(&name);
    let tmp_path = dir.join(format!(".download-{}-{}.part", std::process::id(), DOWNLOADS.fetch_add(1, Ordering::Relaxed)));
    let (mut tmp, file) = match TempFile::create(tmp_path.clone(), &state.downloads) {
        Ok(t) => t,
        Err(e) => return refuse(Some(name), ErrorCode::ResourceNotFound, e),
    };
    let result = fetch(url, file, cfg)
        .and_then(|bytes| models.load(&tmp_path).map(|_| bytes).map_err(|e| format!("downloaded file is not a valid model: {e}")))
        .and_then(|bytes| {
            let _guard = models.lock_ops();
            if models.dir() != dir {
                return Err("the model folder changed (0x34) during the download; not saved".to_string());
            }
            if models.active().path == final_path {
                return Err(format!("'{name}' is the active model; switch to another model before replacing it"));
            }
            std::fs::rename(&tmp_path, &final_path).map_err(|e| format!("cannot move model into place: {e}"))?;
            Ok(bytes)
        });
    state.metrics.download(result.is_ok());
    match result {
        Ok(bytes) => {
            tmp.keep();
            log::info!("{}: downloaded {name} ({bytes} bytes) from {shown}", conn.peer);
            vec![Entry::ok(Some(name))]
        }
        Err(e) => refuse(Some(name), ErrorCode::ResourceNotFound, e),
    }
}

fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    let url = one_string(req, "a URL")?;
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(invalid(format!("command 0x20 needs an http:// or https:// URL, got '{}'", redact(&url))));
    }
    management(req, url, |url, conn| handle(url, conn))
}

#[cfg(test)]
mod tests {
    use super::{check_host, file_name_from_url, redact};

    #[test]
    fn redacts_credentials_and_tokens() {
        assert_eq!(redact("http://user:pw@h:1/m.safetensors?token=abc"), "http://***@h:1/m.safetensors?***");
        assert_eq!(redact("https://h/m.safetensors"), "https://h/m.safetensors");
    }

    #[test]
    fn allow_list_by_host_or_host_and_port() {
        let allowed = vec!["models.example".to_string(), "10.0.0.5:8000".to_string()];
        assert!(check_host("http://models.example:9000/a.safetensors", &allowed).is_ok());
        assert!(check_host("https://u:p@MODELS.example/a.safetensors", &allowed).is_ok());
        assert!(check_host("http://10.0.0.5:8000/a.safetensors", &allowed).is_ok());
        assert!(check_host("http://10.0.0.5:8001/a.safetensors", &allowed).is_err());
        assert!(check_host("http://127.0.0.1/a.safetensors", &allowed).is_err());
        assert!(check_host("http://models.example@evil/a.safetensors", &allowed).is_err());
        assert!(check_host("file:///etc/passwd", &allowed).is_err());
    }

    #[test]
    fn names_from_urls() {
        assert_eq!(file_name_from_url("http://h:1/a/b/m.safetensors?x=1").unwrap(), "m.safetensors");
        assert!(file_name_from_url("http://h/").is_err());
        assert!(file_name_from_url("http://h/best.pt").is_err());
        assert!(file_name_from_url("http://h/.hidden.safetensors").is_err());
        assert!(file_name_from_url("http://h?x=/m.safetensors").is_err(), "a query is not a path");
    }
}
