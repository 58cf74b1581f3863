//! 0x30: change the image folder, only to an existing folder inside `images.allowed_roots`.

use super::{change_dir, Conn};
use crate::protocol::Entry;

pub fn handle(path: &str, conn: &Conn) -> Vec<Entry> {
    change_dir(conn, "image", path, &conn.shared.image_roots(), |d| conn.shared.set_image_dir(d))
}
