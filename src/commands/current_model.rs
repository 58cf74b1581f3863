//! 0x22: the active model's file name.

use super::{Command, Conn, Reply};
use crate::protocol::{no_data, InvalidRequest, Request};
use crate::protocol::Entry;

fn handle(conn: &Conn) -> Vec<Entry> {
    vec![Entry::ok(Some(conn.shared.model().name.clone()))]
}

struct CurrentModel;

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    no_data(req)?;
    Ok(Box::new(CurrentModel))
}

impl Command for CurrentModel {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply {
        Reply::answer(0x22, handle(conn))
    }
}
