//! 0x22: the active model's file name.

use super::{management, Command, Conn};
use crate::protocol::{no_data, Entry, InvalidRequest, Request};

fn handle(conn: &Conn) -> Vec<Entry> {
    vec![Entry::ok(Some(conn.shared.model().name.clone()))]
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    no_data(req)?;
    management(0x22, (), |_, conn| handle(conn))
}
