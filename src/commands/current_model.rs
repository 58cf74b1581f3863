//! 0x22: the active model's file name.

use super::{management, Command, Conn, Spec};
use pear_protocol::{no_data, Entry, InvalidRequest, Request};

pub(super) const COMMAND: Spec = Spec { code: 0x22, parse };

fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    no_data(req)?;
    management(req, (), |_, conn| handle(conn))
}

fn handle(conn: &Conn) -> Vec<Entry> {
    vec![Entry::ok(Some(conn.state.models.active().name.clone()))]
}
