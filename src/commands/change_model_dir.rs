//! 0x34: change the model folder, only to an existing folder inside
//! `model.allowed_roots`. The active model stays loaded.

use super::{change_dir, management, Command, Conn};
use crate::protocol::{one_string, Entry, InvalidRequest, Request};

fn handle(path: &str, conn: &Conn) -> Vec<Entry> {
    let _guard = conn.shared.model_ops.lock().unwrap_or_else(|p| p.into_inner());
    change_dir(conn, "model", path, &conn.shared.model_roots(), |d| conn.shared.set_model_dir(d))
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    management(0x34, one_string(req, "a folder path")?, |path, conn| handle(path, conn))
}
