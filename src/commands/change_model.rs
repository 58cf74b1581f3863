//! 0x26: switch the active model. The new bundle is loaded completely before
//! the switch; images already queued finish on the model they were queued with;
//! on any failure the previous model stays active.

use super::{management, Command, Conn, Spec};
use crate::models::ActiveModel;
use pear_protocol::{one_string, Entry, ErrorCode, InvalidRequest, Request};
use std::sync::Arc;

pub(super) const COMMAND: Spec = Spec { code: 0x26, parse };

fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    management(req, one_string(req, "a model file name")?, |name, conn| handle(name, conn))
}

fn handle(name: &str, conn: &Conn) -> Vec<Entry> {
    let models = &conn.state.models;
    let _guard = models.lock_ops();
    let path = match models.file(name) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("{}: 0x26 {name}: {e}", conn.peer);
            return vec![Entry::failed(Some(name.to_string()), ErrorCode::ResourceNotFound, e.to_string())];
        }
    };
    match models.load(&path) {
        Ok(loaded) => {
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| name.to_string());
            log::info!("{}: active model is now {file} (sha256 {})", conn.peer, loaded.sha256);
            models.set_active(ActiveModel { name: file.clone(), path, sha256: loaded.sha256, pipeline: Arc::new(loaded.pipeline) });
            vec![Entry::ok(Some(file))]
        }
        Err(e) => {
            log::warn!("{}: 0x26 {name}: cannot load: {e}", conn.peer);
            vec![Entry::failed(Some(name.to_string()), ErrorCode::ResourceNotFound, format!("cannot load '{name}': {e}"))]
        }
    }
}
