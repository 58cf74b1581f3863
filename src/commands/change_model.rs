//! 0x26: switch the active model. The new bundle is loaded completely before
//! the switch; images already queued finish on the model they were queued with;
//! on any failure the previous model stays active.

use super::{management, model_file, Command, Conn};
use crate::protocol::{one_string, Entry, ErrorCode, InvalidRequest, Request};
use crate::state::ActiveModel;
use std::sync::Arc;

fn handle(name: &str, conn: &Conn) -> Vec<Entry> {
    let shared = conn.shared;
    let _guard = shared.model_ops.lock().unwrap_or_else(|p| p.into_inner());
    let path = match model_file(shared, name) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("{}: 0x26 {name}: {e}", conn.peer);
            return vec![Entry::failed(Some(name.to_string()), ErrorCode::ResourceNotFound, e.to_string())];
        }
    };
    match shared.load_pipeline(&path) {
        Ok(p) => {
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| name.to_string());
            log::info!("{}: active model is now {file}", conn.peer);
            shared.set_model(ActiveModel { name: file.clone(), path, pipeline: Arc::new(p) });
            vec![Entry::ok(Some(file))]
        }
        Err(e) => {
            log::warn!("{}: 0x26 {name}: cannot load: {e}", conn.peer);
            vec![Entry::failed(Some(name.to_string()), ErrorCode::ResourceNotFound, format!("cannot load '{name}': {e}"))]
        }
    }
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    management(0x26, one_string(req, "a model file name")?, |name, conn| handle(name, conn))
}
