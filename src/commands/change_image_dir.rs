//! 0x30: change the image folder, only to an existing folder inside `images.allowed_roots`.

use super::Conn;
use crate::paths::{resolve_dir, PathError};
use crate::protocol::{Entry, ErrorCode};

pub fn handle(path: &str, conn: &Conn) -> Vec<Entry> {
    match resolve_dir(&conn.shared.image_roots(), path) {
        Ok(dir) => {
            log::info!("{}: image folder is now {}", conn.peer, dir.display());
            conn.shared.set_image_dir(dir.clone());
            vec![Entry::ok(Some(dir.display().to_string()))]
        }
        Err(e) => {
            log::warn!("{}: 0x30 {path}: {e}", conn.peer);
            let code = if matches!(e, PathError::Refused(_)) { ErrorCode::InvalidMessage } else { ErrorCode::ResourceNotFound };
            vec![Entry::failed(Some(path.to_string()), code)]
        }
    }
}
