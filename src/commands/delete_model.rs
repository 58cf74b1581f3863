//! 0x28: delete a model file; the active model cannot be deleted.

use super::{model_file, Conn, Command, Reply};
use crate::protocol::{one_string, InvalidRequest, Request};
use crate::paths::PathError;
use crate::protocol::{Entry, ErrorCode};

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

struct DeleteModel {
    name: String,
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    Ok(Box::new(DeleteModel { name: one_string(req, "a model file name")? }))
}

impl Command for DeleteModel {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply {
        Reply::answer(0x28, handle(&self.name, conn))
    }
}
