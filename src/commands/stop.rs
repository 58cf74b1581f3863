//! 0x03: stop classification. Cancels this connection's images that are still
//! queued (they answer error_code 4 in their own 0x02, which is written first).

use super::Conn;
use crate::protocol::Entry;

pub fn handle(conn: &Conn) -> Vec<Entry> {
    let n = conn.cancel.cancel_all(&conn.shared.pool);
    if n > 0 {
        log::info!("{}: 0x03 cancelled {n} queued images", conn.peer);
    }
    vec![Entry::ok(None)]
}
