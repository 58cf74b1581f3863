//! 0x32: the current image folder.

use super::{Command, Conn, Reply};
use crate::protocol::{no_data, InvalidRequest, Request};
use crate::protocol::Entry;

fn handle(conn: &Conn) -> Vec<Entry> {
    vec![Entry::ok(Some(conn.shared.image_dir().display().to_string()))]
}

struct CurrentImageDir;

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    no_data(req)?;
    Ok(Box::new(CurrentImageDir))
}

impl Command for CurrentImageDir {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply {
        Reply::answer(0x32, handle(conn))
    }
}
