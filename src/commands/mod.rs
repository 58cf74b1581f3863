//! One file per protocol command, and the list that names them.
//!
//! Each command file declares its `COMMAND`: its request code (written there
//! and nowhere else) and its `parse`, which checks its own `request_data`
//! (pure, so it is fuzzed with the framer) into a value that implements
//! [`Command`]. `apply` runs it against the shared state and gives a
//! [`Reply`]: a finished response, or (0x01) a batch whose images are being
//! inferred. [`Reply::finish`] turns either into an [`Answer`]: the response
//! and the facts about it, which is all the connection's writer and the
//! metrics need. A new command is one new file and one line in `commands!`.

use crate::inference::{Batch, CancelRegistry};
use crate::paths::{resolve_dir, PathError};
use crate::record::Record;
use crate::state::State;
use pear_protocol::{invalid, Entry, ErrorCode, InvalidRequest, Request, Response};
use std::path::PathBuf;
use std::time::Instant;

/// Declares the command modules and the table of their `COMMAND`s.
macro_rules! commands {
    ($($module:ident),* $(,)?) => {
        $(mod $module;)*
        const COMMANDS: &[Spec] = &[$($module::COMMAND),*];
    };
}

commands! {
    classify,
    stop,
    download_model,
    current_model,
    list_models,
    change_model,
    delete_model,
    change_image_dir,
    current_image_dir,
    change_model_dir,
}

pub use download_model::Downloads;

/// A parsed request, ready to run.
pub trait Command: Send {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply;
}

/// A command's request code and the parser of its file.
pub(crate) struct Spec {
    code: u8,
    parse: fn(&Request) -> Result<Box<dyn Command>, InvalidRequest>,
}

/// The command a request names, with its arguments checked.
pub fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    match COMMANDS.iter().find(|c| u64::from(c.code) == req.code) {
        Some(c) => (c.parse)(req),
        None => Err(invalid(format!("unknown command {}", req.name()))),
    }
}

/// A management command (all but 0x01): its parsed argument and the function
/// that answers it with entries; the answer's code is the request's + 1.
struct Management<A> {
    answer_code: u8,
    arg: A,
    run: fn(&A, &Conn) -> Vec<Entry>,
}

impl<A: Send> Command for Management<A> {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply {
        Reply::Ready(Response::new(self.answer_code, (self.run)(&self.arg, conn)))
    }
}

/// What a management command's `parse` returns for request `req`.
fn management<A: Send + 'static>(req: &Request, arg: A, run: fn(&A, &Conn) -> Vec<Entry>) -> Result<Box<dyn Command>, InvalidRequest> {
    // Only codes of the table reach a parser, and they are all below 0xff.
    let answer_code = u8::try_from(req.code + 1).map_err(|_| invalid(format!("unknown command {}", req.name())))?;
    Ok(Box::new(Management { answer_code, arg, run }))
}

/// What a command gives back to the connection.
pub enum Reply {
    Ready(Response),
    /// A 0x01 in flight.
    Batch {
        batch: Batch,
        form: classify::Form,
    },
}

/// A finished reply: the response to write and what it says, so nothing
/// downstream has to read the response again.
#[derive(Debug)]
pub struct Answer {
    pub response: Response,
    /// The records of the images a 0x01 answered, in order (empty for other commands).
    pub images: Vec<Record>,
    /// When it was due, for a 0x01 with `deadline_ms`.
    pub deadline: Option<Instant>,
}

impl Answer {
    /// Every entry answered error_code 0.
    pub fn ok(&self) -> bool {
        self.response.cmd.is_some() && self.response.response_data.iter().all(Entry::is_ok)
    }
}

impl Reply {
    /// The answer to write, waiting for a batch's images if needed.
    pub fn finish(self) -> Answer {
        match self {
            Reply::Ready(response) => Answer { response, images: Vec::new(), deadline: None },
            Reply::Batch { batch, form } => {
                let deadline = batch.deadline();
                let (files, outcomes, facts) = batch.wait();
                Answer { deadline, ..form.respond(files, outcomes, facts) }
            }
        }
    }
}

/// The connection a command arrived on.
pub struct Conn<'a> {
    pub state: &'a State,
    pub cancel: &'a CancelRegistry,
    pub peer: &'a str,
    /// When the request's last byte was read (deadlines count from here).
    pub received: Instant,
    /// The request's sequence number, server-wide.
    pub request: u64,
}

/// 0x30 and 0x34: move a folder to an existing directory inside `roots`;
/// outside the roots answers error_code 1, a missing folder 2.
fn change_dir(conn: &Conn, what: &str, path: &str, roots: &[PathBuf], apply: impl FnOnce(PathBuf)) -> Vec<Entry> {
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
    use pear_protocol::parse_request;

    fn check(text: &str) -> Result<(), String> {
        parse(&parse_request(text.as_bytes()).map_err(|e| e.0)?).map(|_| ()).map_err(|e| e.0)
    }

    #[test]
    fn every_code_has_one_command() {
        let mut codes: Vec<u8> = COMMANDS.iter().map(|c| c.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), COMMANDS.len(), "a code is in the table twice");
        assert_eq!(codes, [0x01, 0x03, 0x20, 0x22, 0x24, 0x26, 0x28, 0x30, 0x32, 0x34]);
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
