//! 0x34: change the model folder, only to an existing folder inside
//! `model.allowed_roots`. The active model stays loaded.

use super::Conn;
use crate::paths::{resolve_dir, PathError};
use crate::protocol::{Entry, ErrorCode};

pub fn handle(path: &str, conn: &Conn) -> Vec<Entry> {
    let _guard = conn.shared.model_ops.lock().unwrap_or_else(|p| p.into_inner());
    match resolve_dir(&conn.shared.model_roots(), path) {
        Ok(dir) => {
            log::info!("{}: model folder is now {}", conn.peer, dir.display());
            conn.shared.set_model_dir(dir.clone());
            vec![Entry::ok(Some(dir.display().to_string()))]
        }
        Err(e) => {
            log::warn!("{}: 0x34 {path}: {e}", conn.peer);
            let code = if matches!(e, PathError::Refused(_)) { ErrorCode::InvalidMessage } else { ErrorCode::ResourceNotFound };
            vec![Entry::failed(Some(path.to_string()), code)]
        }
    }
}
