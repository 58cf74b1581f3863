//! One file per protocol command; `dispatch` picks the handler.
//!
//! Handlers get a validated `Command` and the shared state and return a
//! `Reply`: a finished response, or (0x01) a batch whose images are being
//! inferred and that the connection's writer completes in order.

mod change_image_dir;
mod change_model;
mod change_model_dir;
pub mod classify;
mod current_image_dir;
mod current_model;
mod delete_model;
mod download_model;
mod list_models;
mod stop;

use crate::inference::{Batch, CancelRegistry};
use crate::paths::{check_model_name, resolve_dir, PathError};
use crate::protocol::{Entry, ErrorCode};
use crate::protocol::{Command, Response};
use crate::state::Shared;
use std::path::PathBuf;

/// What a handler gives back to the connection.
pub enum Reply {
    Ready(Response),
    /// A 0x01 in flight; `extended` adds the optional result fields.
    Batch { batch: Batch, extended: bool },
}

/// The connection a command arrived on.
pub struct Conn<'a> {
    pub shared: &'a Shared,
    pub cancel: &'a CancelRegistry,
    pub peer: &'a str,
}

pub fn dispatch(cmd: Command, conn: &Conn) -> Reply {
    let code = cmd.response_code();
    let ready = |entries| Reply::Ready(Response::new(code, entries));
    match cmd {
        Command::Classify { files } => classify::handle(files, conn),
        Command::Stop => ready(stop::handle(conn)),
        Command::DownloadModel { url } => ready(download_model::handle(&url, conn)),
        Command::CurrentModel => ready(current_model::handle(conn)),
        Command::ListModels => ready(list_models::handle(conn)),
        Command::ChangeModel { name } => ready(change_model::handle(&name, conn)),
        Command::DeleteModel { name } => ready(delete_model::handle(&name, conn)),
        Command::ChangeImageDir { path } => ready(change_image_dir::handle(&path, conn)),
        Command::CurrentImageDir => ready(current_image_dir::handle(conn)),
        Command::ChangeModelDir { path } => ready(change_model_dir::handle(&path, conn)),
    }
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
