//! 0x30: change the image folder, only to an existing folder inside `images.allowed_roots`.

use super::{change_dir, Conn, Command, Reply};
use crate::protocol::{one_string, InvalidRequest, Request};
use crate::protocol::Entry;

fn handle(path: &str, conn: &Conn) -> Vec<Entry> {
    change_dir(conn, "image", path, &conn.shared.image_roots(), |d| conn.shared.set_image_dir(d))
}

struct ChangeImageDir {
    path: String,
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    Ok(Box::new(ChangeImageDir { path: one_string(req, "a folder path")? }))
}

impl Command for ChangeImageDir {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply {
        Reply::answer(0x30, handle(&self.path, conn))
    }
}
