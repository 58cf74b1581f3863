//! 0x20: download a model bundle over HTTP(S) into the model folder.
//!
//! The body goes to a hidden temporary file in the model folder (same
//! filesystem, so the final rename is atomic), capped in size and time, and is
//! renamed into place only after it loads as a complete model. Any failure
//! removes the temporary file; the active model is never touched.

use super::Conn;
use crate::paths::check_model_name;
use crate::protocol::{Entry, ErrorCode};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
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

/// Removes the temporary file unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn fetch(url: &str, dest: &Path, max_bytes: u64, timeout: Duration) -> Result<u64, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(timeout)).build().into();
    let resp = agent.get(url).call().map_err(|e| format!("download failed: {e}"))?;
    if let Some(len) = resp.body().content_length() {
        if len > max_bytes {
            return Err(format!("model is {len} bytes, more than model.download_max_bytes ({max_bytes})"));
        }
    }
    let mut reader = resp.into_body().into_with_config().limit(max_bytes).reader();
    let mut file = std::fs::File::create(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
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

pub fn handle(url: &str, conn: &Conn) -> Vec<Entry> {
    let shared = conn.shared;
    let name = match file_name_from_url(url) {
        Ok(n) => n,
        Err(e) => {
            log::warn!("{}: 0x20 {url}: {e}", conn.peer);
            return vec![Entry::failed(None, ErrorCode::InvalidMessage)];
        }
    };
    let dir = shared.model_dir();
    let final_path = dir.join(&name);
    let tmp_path = dir.join(format!(".download-{}-{}.part", std::process::id(), DOWNLOADS.fetch_add(1, Ordering::Relaxed)));
    let mut tmp = TempFile(Some(tmp_path.clone()));
    let cfg = &shared.config.model;
    let result = fetch(url, &tmp_path, cfg.download_max_bytes, Duration::from_secs(cfg.download_timeout_secs))
        .and_then(|bytes| shared.load_pipeline(&tmp_path).map(|_| bytes).map_err(|e| format!("downloaded file is not a valid model: {e}")))
        .and_then(|bytes| {
            let _guard = shared.model_ops.lock().unwrap_or_else(|p| p.into_inner());
            if shared.model().path == final_path {
                return Err(format!("'{name}' is the active model; switch to another model before replacing it"));
            }
            std::fs::rename(&tmp_path, &final_path).map_err(|e| format!("cannot move model into place: {e}"))?;
            Ok(bytes)
        });
    match result {
        Ok(bytes) => {
            tmp.0 = None; // renamed into place: nothing to clean up
            log::info!("{}: downloaded {name} ({bytes} bytes) from {url}", conn.peer);
            vec![Entry::ok(Some(name))]
        }
        Err(e) => {
            log::warn!("{}: 0x20 {url}: {e}", conn.peer);
            vec![Entry::failed(Some(name), ErrorCode::ResourceNotFound)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::file_name_from_url;

    #[test]
    fn names_from_urls() {
        assert_eq!(file_name_from_url("http://h:1/a/b/m.safetensors?x=1").unwrap(), "m.safetensors");
        assert!(file_name_from_url("http://h/").is_err());
        assert!(file_name_from_url("http://h/best.pt").is_err());
        assert!(file_name_from_url("http://h/.hidden.safetensors").is_err());
    }
}
