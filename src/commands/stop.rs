//! 0x03: stop classification. Cancels this connection's images that are still
//! queued (they answer error_code 4 in their own 0x02, which is written first).

use super::{management, Command, Conn};
use crate::protocol::{no_data, Entry, InvalidRequest, Request};

fn handle(conn: &Conn) -> Vec<Entry> {
    let n = conn.cancel.cancel_all(&conn.shared.pool);
    if n > 0 {
        log::info!("{}: 0x03 cancelled {n} queued images", conn.peer);
    }
    vec![Entry::ok(None)]
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    no_data(req)?;
    management(0x03, (), |_, conn| handle(conn))
}
