//! 0x34: change the model folder, only to an existing folder inside
//! `model.allowed_roots`. The active model stays loaded.

use super::{change_dir, Conn, Command, Reply};
use crate::protocol::{one_string, InvalidRequest, Request};
use crate::protocol::Entry;

fn handle(path: &str, conn: &Conn) -> Vec<Entry> {
    let _guard = conn.shared.model_ops.lock().unwrap_or_else(|p| p.into_inner());
    change_dir(conn, "model", path, &conn.shared.model_roots(), |d| conn.shared.set_model_dir(d))
}

struct ChangeModelDir {
    path: String,
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    Ok(Box::new(ChangeModelDir { path: one_string(req, "a folder path")? }))
}

impl Command for ChangeModelDir {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply {
        Reply::answer(0x34, handle(&self.path, conn))
    }
}
