//! 0x24: the files in the model folder (hidden and partial downloads excluded).

use super::{management, Command, Conn, Spec};
use pear_protocol::{no_data, Entry, ErrorCode, InvalidRequest, Request};

pub(super) const COMMAND: Spec = Spec { code: 0x24, parse };

fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    no_data(req)?;
    management(req, (), |_, conn| handle(conn))
}

fn handle(conn: &Conn) -> Vec<Entry> {
    let dir = conn.state.models.dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        return vec![Entry::failed(None, ErrorCode::ResourceNotFound, format!("no model files in {}", dir.display()))];
    }
    names.into_iter().map(|n| Entry::ok(Some(n))).collect()
}
