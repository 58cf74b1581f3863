//! 0x34: change the model folder, only to an existing folder inside
//! `model.allowed_roots`. The active model stays loaded.

use super::{change_dir, management, Command, Conn, Spec};
use pear_protocol::{one_string, Entry, InvalidRequest, Request};

pub(super) const COMMAND: Spec = Spec { code: 0x34, parse };

fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    management(req, one_string(req, "a folder path")?, |path, conn| handle(path, conn))
}

fn handle(path: &str, conn: &Conn) -> Vec<Entry> {
    let models = &conn.state.models;
    let _guard = models.lock_ops();
    change_dir(conn, "model", path, models.roots(), |d| models.set_dir(d))
}
