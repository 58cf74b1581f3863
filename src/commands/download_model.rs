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

use super::{management, Command, Conn};
use crate::protocol::{invalid, one_string, Entry, ErrorCode, InvalidRequest, Request};
use crate::config::ModelSection;
use crate::paths::check_model_name;
use crate::state::Shared;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

/// The file name a URL's last path segment gives, if it is a plain bundle name.
pub fn file_name_from_url(url: &str) -> Result<String, String> {
    let no_query = url.split(['?', '#']).next().unwrap_or("");
    let after_scheme = no_query.split_once("://").map(|(_, r)| r).unwrap_or(no_query);
    let name = after_scheme.split_once('/').map(|(_, p)| p.rsplit('/').next().unwrap_or("")).unwrap_or("");
    if name.is_empty() {
        return Err(format!("URL '{url}' does not end with a file name"));
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
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, String::new()));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let path = match path.split_once('?') {
        Some((p, _)) => format!("{p}?***"),
        None => path,
    };
    if scheme.is_empty() {
        format!("{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}")
    }
}

/// host[:port] of an http(s) URL, lower-cased, without credentials.
fn host_of(url: &str) -> Result<String, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("'{}' is not an http:// or https:// URL", redact(url)))?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("'{}' is not an http:// or https:// URL", redact(url)));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if host.is_empty() {
        return Err(format!("'{}' has no host", redact(url)));
    }
    Ok(host.to_ascii_lowercase())
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
    shared: &'a Shared,
}

impl<'a> TempFile<'a> {
    /// Creates the (empty) file and lists it.
    fn create(path: PathBuf, shared: &'a Shared) -> Result<(Self, std::fs::File), String> {
        let file = std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        shared.partial_downloads.lock().unwrap_or_else(|p| p.into_inner()).insert(path.clone());
        Ok((TempFile { path: Some(path), shared }, file))
    }

    /// The file was renamed into place: nothing to clean up.
    fn keep(&mut self) {
        if let Some(p) = self.path.take() {
            self.shared.partial_downloads.lock().unwrap_or_else(|p| p.into_inner()).remove(&p);
        }
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(&p);
            self.shared.partial_downloads.lock().unwrap_or_else(|p| p.into_inner()).remove(&p);
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
            let (scheme, rest) = url.split_once("://").unwrap_or(("http", &url));
            let authority = rest.split('/').next().unwrap_or("");
            format!("{scheme}://{authority}{location}")
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
    let shared = conn.shared;
    let shown = redact(url);
    let refuse = |name: Option<String>, code, message: String| {
        log::warn!("{}: 0x20 {shown}: {message}", conn.peer);
        vec![Entry::failed(name, code, message)]
    };
    let cfg = &shared.config.model;
    if cfg.download_allowed_hosts.is_empty() {
        return refuse(None, ErrorCode::InvalidMessage, "downloads are off: model.download_allowed_hosts is empty".into());
    }
    let name = match file_name_from_url(url).and_then(|n| check_host(url, &cfg.download_allowed_hosts).map(|_| n)) {
        Ok(n) => n,
        Err(e) => return refuse(None, ErrorCode::InvalidMessage, e),
    };
    // One at a time; a panic in an earlier download (poisoned lock) does not block later ones.
    let _one = match shared.download.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            return refuse(Some(name), ErrorCode::Timeout, "another download is in progress; try again when it ends".into());
        }
    };
    let dir = shared.model_dir();
    let final_path = dir.join(&name);
    let tmp_path = dir.join(format!(".download-{}-{}.part", std::process::id(), DOWNLOADS.fetch_add(1, Ordering::Relaxed)));
    let (mut tmp, file) = match TempFile::create(tmp_path.clone(), shared) {
        Ok(t) => t,
        Err(e) => return refuse(Some(name), ErrorCode::ResourceNotFound, e),
    };
    let result = fetch(url, file, cfg)
        .and_then(|bytes| shared.load_pipeline(&tmp_path).map(|_| bytes).map_err(|e| format!("downloaded file is not a valid model: {e}")))
        .and_then(|bytes| {
            let _guard = shared.model_ops.lock().unwrap_or_else(|p| p.into_inner());
            if shared.model_dir() != dir {
                return Err("the model folder changed (0x34) during the download; not saved".to_string());
            }
            if shared.model().path == final_path {
                return Err(format!("'{name}' is the active model; switch to another model before replacing it"));
            }
            std::fs::rename(&tmp_path, &final_path).map_err(|e| format!("cannot move model into place: {e}"))?;
            Ok(bytes)
        });
    shared.metrics.download(result.is_ok());
    match result {
        Ok(bytes) => {
            tmp.keep();
            log::info!("{}: downloaded {name} ({bytes} bytes) from {shown}", conn.peer);
            vec![Entry::ok(Some(name))]
        }
        Err(e) => refuse(Some(name), ErrorCode::ResourceNotFound, e),
    }
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    let url = one_string(req, "a URL")?;
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(invalid(format!("command 0x20 needs an http:// or https:// URL, got '{}'", redact(&url))));
    }
    management(0x20, url, |url, conn| handle(url, conn))
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
    }
}
