//! 0x01: classify images named relative to the image folder.
//!
//! Paths are checked here (refused: error_code 1, missing: 2) so workers only
//! see files inside the folder; the rest become jobs on the shared pool.

use super::{Command, Conn, Reply};
use crate::inference::{Batch, Outcome};
use crate::paths::{resolve_file, PathError};
use crate::protocol::{invalid, string_list, Entry, ErrorCode, Extended, InvalidRequest, Request, Response, IMAGE_EXTENSIONS};
use std::time::Duration;

struct Classify {
    files: Vec<String>,
}

pub(super) fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
    let files = string_list(req)?;
    if files.is_empty() {
        return Err(invalid("command 0x01 needs a non-empty list of image file names"));
    }
    for f in &files {
        let ext = f.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        if !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            return Err(invalid(format!("'{f}' is not a .jpg, .jpeg or .png file name")));
        }
    }
    Ok(Box::new(Classify { files }))
}

impl Command for Classify {
    fn apply(self: Box<Self>, conn: &Conn) -> Reply {
        handle(self.files, conn)
    }
}

fn handle(files: Vec<String>, conn: &Conn) -> Reply {
    let shared = conn.shared;
    let max = shared.pool.per_connection();
    if files.len() > max {
        return Reply::Ready(Response::error(
            ErrorCode::InvalidMessage,
            format!("command 0x01 takes at most {max} files per request (inference.max_queued_per_connection), got {}", files.len()),
        ));
    }
    let dir = shared.image_dir();
    let paths = files
        .iter()
        .map(|f| {
            resolve_file(&dir, f).map_err(|e| match e {
                PathError::Refused(m) => Outcome::Refused(m),
                PathError::NotFound(m) => Outcome::Unreadable(m),
            })
        })
        .collect();
    let model = shared.model();
    let timeout = Duration::from_secs(shared.config.inference.request_timeout_secs);
    let batch = Batch::submit(files, paths, model.pipeline.clone(), &shared.pool, conn.cancel, timeout);
    log::debug!("{}: 0x01 queued {} of {} image(s)", conn.peer, batch.queued(), batch.files.len());
    shared.metrics.images_in_flight.inc_by(batch.queued() as i64);
    Reply::Batch { batch, extended: shared.config.protocol.extended_results }
}

/// The 0x02 response for finished outcomes, in request order.
pub fn respond(files: Vec<String>, outcomes: Vec<Outcome>, extended: bool) -> Response {
    let entries = files
        .into_iter()
        .zip(outcomes)
        .map(|(file, o)| {
            let (result, code, message, ext) = match o {
                Outcome::Done(ins) => {
                    let ext = Extended {
                        label: ins.label.clone(),
                        confidence: ins.confidence,
                        bbox: ins.bbox,
                        detected: ins.class.is_some(),
                    };
                    // No pear answers 0 like the original; `detected` tells them apart.
                    (Some(ins.class.unwrap_or(0) as i64), ErrorCode::NoError, None, Some(ext))
                }
                Outcome::Unreadable(m) => (None, ErrorCode::ResourceNotFound, Some(m), None),
                Outcome::Refused(m) => (None, ErrorCode::InvalidMessage, Some(m), None),
                Outcome::Failed(m) => (None, ErrorCode::Timeout, Some(format!("inference failed: {m}")), None),
                Outcome::Cancelled => (None, ErrorCode::Timeout, Some("cancelled by 0x03".into()), None),
                Outcome::TimedOut => (None, ErrorCode::Timeout, Some("timed out: no image of this request was answered within inference.request_timeout_secs".into()), None),
                Outcome::Busy(why) => (None, ErrorCode::Timeout, Some(why.message().into()), None),
                Outcome::ShuttingDown => (None, ErrorCode::Timeout, Some("server shutting down (server.drain_timeout_secs passed)".into()), None),
            };
            let mut e = Entry::new(Some(file), result, code);
            if extended {
                e.message = message;
                e.extended = Some(ext.unwrap_or(Extended { label: None, confidence: None, bbox: None, detected: false }));
            }
            e
        })
        .collect();
    Response::new(0x02, entries)
}
