//! 0x28: delete a model file; the active model cannot be deleted.

use super::{management, model_file, Command, Conn};
use crate::protocol::{one_string, Entry, ErrorCode, InvalidRequest, Request};
use crate::paths::PathError;

fn handle(name: &str, conn: &Conn) -> Vec<Entry> {
    let shared = conn.shared;
    let _guard = shared.model_ops.lock().unwrap_or_else(|p| p.into_inner());
    let file = Some(name.to_string());
    let path = match model_file(shared, name) {
        Ok(p) => p,
        Err(e @ PathError::Refused(_)) => return vec![Entry::failed(file, ErrorCode::InvalidMessage, e.to_string())],
        Err(e @ PathError::NotFound(_)) => return vec![Entry::failed(file, ErrorCode::ResourceNotFound, e.to_string())],
    };
    let active = shared.model();
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

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    management(0x28, one_string(req, "a model file name")?, |name, conn| handle(name, conn))
}
