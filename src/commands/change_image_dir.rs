//! 0x30: change the image folder, only to an existing folder inside `images.allowed_roots`.

use super::{change_dir, management, Command, Conn, Spec};
use pear_protocol::{one_string, Entry, InvalidRequest, Request};

pub(super) const COMMAND: Spec = Spec { code: 0x30, parse };

fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    management(req, one_string(req, "a folder path")?, |path, conn| handle(path, conn))
}

fn handle(path: &str, conn: &Conn) -> Vec<Entry> {
    let images = &conn.state.images;
    change_dir(conn, "image", path, images.roots(), |d| images.set_dir(d))
}
