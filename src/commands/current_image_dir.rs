//! 0x32: the current image folder.

use super::Conn;
use crate::protocol::Entry;

pub fn handle(conn: &Conn) -> Vec<Entry> {
    vec![Entry::ok(Some(conn.shared.image_dir().display().to_string()))]
}
