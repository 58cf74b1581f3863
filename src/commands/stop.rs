//! 0x03: stop classification. Cancels this connection's images that are still
//! queued (they answer error_code 4 in their own 0x02, which is written first).

use super::{Command, Conn, Reply};
use crate::protocol::{no_data, InvalidRequest, Request};
use crate::protocol::Entry;

fn handle(conn: &Conn) -> Vec<Entry> {
    let n = conn.cancel.cancel_all(&conn.shared.pool);
    if n > 0 {
        log::info!("{}: 0x03 cancelled {n} queued images", conn.peer);
    }
    vec![Entry::ok(None)]
}

struct Stop;

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    no_data(req)?;
    Ok(Box::new(Stop))
}

impl Command for Stop {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply {
        Reply::answer(0x03, handle(conn))
    }
}
