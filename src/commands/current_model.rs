//! 0x22: the active model's file name.

use super::Conn;
use crate::protocol::Entry;

pub fn handle(conn: &Conn) -> Vec<Entry> {
    vec![Entry::ok(Some(conn.shared.model().name.clone()))]
}
