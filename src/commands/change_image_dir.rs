//! 0x30: change the image folder, only to an existing folder inside `images.allowed_roots`.

use super::{change_dir, management, Command, Conn};
use crate::protocol::{one_string, Entry, InvalidRequest, Request};

fn handle(path: &str, conn: &Conn) -> Vec<Entry> {
    change_dir(conn, "image", path, &conn.shared.image_roots(), |d| conn.shared.set_image_dir(d))
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    management(0x30, one_string(req, "a folder path")?, |path, conn| handle(path, conn))
}
