//! 0x28: delete a model file; the active model cannot be deleted.

use super::{management, Command, Conn, Spec};
use crate::paths::PathError;
use pear_protocol::{one_string, Entry, ErrorCode, InvalidRequest, Request};

pub(super) const COMMAND: Spec = Spec { code: 0x28, parse };

fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    management(req, one_string(req, "a model file name")?, |name, conn| handle(name, conn))
}

fn handle(name: &str, conn: &Conn) -> Vec<Entry> {
    let models = &conn.state.models;
    let _guard = models.lock_ops();
    let file = Some(name.to_string());
    let path = match models.file(name) {
        Ok(p) => p,
        Err(e @ PathError::Refused(_)) => return vec![Entry::failed(file, ErrorCode::InvalidMessage, e.to_string())],
        Err(e @ PathError::NotFound(_)) => return vec![Entry::failed(file, ErrorCode::ResourceNotFound, e.to_string())],
    };
    let active = models.active();
    let same = match (path.canonicalize(), active.path.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        log::warn!("{}: 0x28 refused: {name} is the active model", conn.peer);
        return vec![Entry::failed(file, ErrorCode::InvalidMessage, format!("'{name}' is the active model; switch to another model first"))];
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {
            log::info!("{}: deleted model {}", conn.peer, path.display());
            vec![Entry::ok(file)]
        }
        Err(e) => {
            log::warn!("{}: 0x28 {name}: {e}", conn.peer);
            vec![Entry::failed(file, ErrorCode::ResourceNotFound, format!("cannot delete '{name}': {e}"))]
        }
    }
}
