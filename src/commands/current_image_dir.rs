//! 0x32: the current image folder.

use super::{management, Command, Conn};
use crate::protocol::{no_data, Entry, InvalidRequest, Request};

fn handle(conn: &Conn) -> Vec<Entry> {
    vec![Entry::ok(Some(conn.shared.image_dir().display().to_string()))]
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    no_data(req)?;
    management(0x32, (), |_, conn| handle(conn))
}
