//! 0x03: stop classification. Cancels this connection's images that are still
//! queued (they answer error_code 4 in their own 0x02, which is written first).

use super::{management, Command, Conn, Spec};
use pear_protocol::{no_data, Entry, InvalidRequest, Request};

pub(super) const COMMAND: Spec = Spec { code: 0x03, parse };

fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    no_data(req)?;
    management(req, (), |_, conn| handle(conn))
}

fn handle(conn: &Conn) -> Vec<Entry> {
    let n = conn.cancel.cancel_all(&conn.state.pool);
    if n > 0 {
        log::info!("{}: 0x03 cancelled {n} queued images", conn.peer);
    }
    vec![Entry::ok(None)]
}
