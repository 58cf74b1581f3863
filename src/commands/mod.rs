//! One file per protocol command, and the table that maps codes to them.
//!
//! Each command file parses its own `request_data` (`parse`, pure, so it is
//! fuzzed with the framer) into a value that implements `Command`, whose
//! `apply` runs it against the shared state and gives a `Reply`: a finished
//! response, or (0x01) a batch whose images are being inferred, which the
//! connection's writer finishes in order. A new command is one new file and
//! one line in `COMMANDS`.

mod change_image_dir;
mod change_model;
mod change_model_dir;
mod classify;
mod current_image_dir;
mod current_model;
mod delete_model;
pub mod download_model;
mod list_models;
mod stop;

use crate::inference::{Batch, CancelRegistry};
use crate::paths::{check_model_name, resolve_dir, PathError};
use crate::protocol::{invalid, Entry, ErrorCode, InvalidRequest, Request, Response};
use crate::state::Shared;
use std::path::PathBuf;

/// A parsed request, ready to run.
pub trait Command: Send {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply;
}

type Parser = fn(&Request) -> Result<Box<dyn Command>, InvalidRequest>;

/// A management command (all but 0x01): its parsed argument and the function
/// that answers it with entries; the response code is the request's + 1.
struct Management<A> {
    code: u8,
    arg: A,
    run: fn(&A, &Conn) -> Vec<Entry>,
}

impl<A: Send> Command for Management<A> {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply {
        Reply::answer(self.code, (self.run)(&self.arg, conn))
    }
}

/// What a management command's `parse` returns.
fn management<A: Send + 'static>(code: u8, arg: A, run: fn(&A, &Conn) -> Vec<Entry>) -> Result<Box<dyn Command>, InvalidRequest> {
    Ok(Box::new(Management { code, arg, run }))
}

/// Request code and the parser of its command file.
const COMMANDS: &[(u8, Parser)] = &[
    (0x01, classify::parse),
    (0x03, stop::parse),
    (0x20, download_model::parse),
    (0x22, current_model::parse),
    (0x24, list_models::parse),
    (0x26, change_model::parse),
    (0x28, delete_model::parse),
    (0x30, change_image_dir::parse),
    (0x32, current_image_dir::parse),
    (0x34, change_model_dir::parse),
];

/// The command a request names, with its arguments checked.
pub fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    match COMMANDS.iter().find(|(code, _)| u64::from(*code) == req.code) {
        Some((_, parse)) => parse(req),
        None => Err(invalid(format!("unknown command {}", req.name()))),
    }
}

/// What a command gives back to the connection.
pub enum Reply {
    Ready(Response),
    /// A 0x01 in flight; `extended` adds the optional result fields.
    Batch { batch: Batch, extended: bool },
}

impl Reply {
    /// The answer to request `code`: response code `code + 1`.
    pub fn answer(code: u8, entries: Vec<Entry>) -> Reply {
        Reply::Ready(Response::new(code + 1, entries))
    }

    /// Images this reply put into the queue (they are in flight until it is written).
    pub fn accepted_images(&self) -> usize {
        match self {
            Reply::Ready(_) => 0,
            Reply::Batch { batch, .. } => batch.queued(),
        }
    }

    /// The response to write, waiting for a batch's images if needed, and a
    /// detail for the log line.
    pub fn finish(self) -> (Response, String) {
        match self {
            Reply::Ready(r) => (r, String::new()),
            Reply::Batch { batch, extended } => {
                let (files, outcomes) = batch.wait();
                let detail = format!(" files={}", files.len());
                (classify::respond(files, outcomes, extended), detail)
            }
        }
    }
}

/// The connection a command arrived on.
pub struct Conn<'a> {
    pub shared: &'a Shared,
    pub cancel: &'a CancelRegistry,
    pub peer: &'a str,
}

/// A model file in the current model folder. A name of the original's
/// PyTorch weights (`best.pt`, `x.pth`) resolves to its converted bundle
/// (`best.safetensors`) when only that exists.
pub(crate) fn model_file(shared: &Shared, name: &str) -> Result<PathBuf, PathError> {
    check_model_name(name)?;
    let dir = shared.model_dir();
    let direct = dir.join(name);
    if direct.is_file() {
        return Ok(direct);
    }
    if let Some(stem) = name.strip_suffix(".pt").or_else(|| name.strip_suffix(".pth")) {
        let bundle = dir.join(format!("{stem}.safetensors"));
        if bundle.is_file() {
            return Ok(bundle);
        }
    }
    Err(PathError::NotFound(format!("model '{name}' not found in {}", dir.display())))
}

/// 0x30 and 0x34: move a folder to an existing directory inside `roots`;
/// outside the roots answers error_code 1, a missing folder 2.
pub(crate) fn change_dir(conn: &Conn, what: &str, path: &str, roots: &[PathBuf], apply: impl FnOnce(PathBuf)) -> Vec<Entry> {
    match resolve_dir(roots, path) {
        Ok(dir) => {
            log::info!("{}: {what} folder is now {}", conn.peer, dir.display());
            apply(dir.clone());
            vec![Entry::ok(Some(dir.display().to_string()))]
        }
        Err(e) => {
            log::warn!("{}: {what} folder '{path}' refused: {e}", conn.peer);
            let code = if matches!(e, PathError::Refused(_)) { ErrorCode::InvalidMessage } else { ErrorCode::ResourceNotFound };
            vec![Entry::failed(Some(path.to_string()), code, e.to_string())]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_request;

    fn check(text: &str) -> Result<(), String> {
        parse(&parse_request(text.as_bytes()).map_err(|e| e.0)?).map(|_| ()).map_err(|e| e.0)
    }

    #[test]
    fn every_code_has_one_command() {
        let mut codes: Vec<u8> = COMMANDS.iter().map(|(c, _)| *c).collect();
        codes.dedup();
        assert_eq!(codes.len(), 10);
        assert!(codes.iter().all(|c| c % 2 == 1 || *c >= 0x20 && c % 2 == 0));
    }

    #[test]
    fn commands_check_their_own_data() {
        assert!(check(r#"{"cmd" : 0x32, "request_data": null }"#).is_ok());
        assert!(check(r#"{"cmd": 1, "request_data": ["a.JPG"]}"#).is_ok());
        assert!(check(r#"{"cmd": 1, "request_data": []}"#).unwrap_err().contains("non-empty"));
        assert!(check(r#"{"cmd": 1, "request_data": ["a.txt"]}"#).unwrap_err().contains(".png"));
        assert!(check(r#"{"cmd": 0x99, "request_data": null}"#).unwrap_err().contains("unknown command 0x99"));
        assert!(check(r#"{"cmd": 0x26, "request_data": ["a", "b"]}"#).unwrap_err().contains("exactly one"));
        assert!(check(r#"{"cmd": 0x22, "request_data": ["x"]}"#).unwrap_err().contains("takes no request_data"));
        assert!(check(r#"{"cmd": 0x20, "request_data": ["ftp://h/m.safetensors"]}"#).unwrap_err().contains("http"));
    }
}
