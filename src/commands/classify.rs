//! 0x01: classify images named relative to the image folder.
//!
//! Paths are checked here (refused: error_code 1, missing: 2) so workers only
//! see files inside the folder; the rest become jobs on the shared pool.

use super::{AnsweredImage, Answer, Command, Conn, Reply, Spec};
use crate::inference::{Batch, Outcome};
use crate::paths::{resolve_file, PathError};
use pear_protocol::{invalid, string_list, Entry, ErrorCode, Extended, InvalidRequest, Request, Response, IMAGE_EXTENSIONS};
use std::time::Duration;

pub(super) const COMMAND: Spec = Spec { code: 0x01, parse };

struct Classify {
    files: Vec<String>,
}

fn parse(req: &Request) -> Result<Box<dyn Command>, InvalidRequest> {
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
        let state = conn.state;
        let max = state.pool.per_connection();
        if self.files.len() > max {
            return Reply::Ready(Response::error(
                ErrorCode::InvalidMessage,
                format!("command 0x01 takes at most {max} files per request (inference.max_queued_per_connection), got {}", self.files.len()),
            ));
        }
        let dir = state.images.dir();
        let paths = self
            .files
            .iter()
            .map(|f| {
                resolve_file(&dir, f).map_err(|e| match e {
                    PathError::Refused(m) => Outcome::Refused(m),
                    PathError::NotFound(m) => Outcome::Unreadable(m),
                })
            })
            .collect();
        let model = state.models.active();
        let timeout = Duration::from_secs(state.config.inference.request_timeout_secs);
        let batch = Batch::submit(self.files, paths, model.pipeline.clone(), &state.pool, conn.cancel, timeout);
        log::debug!("{}: 0x01 queued {} of {} image(s)", conn.peer, batch.queued(), batch.files.len());
        Reply::Batch { batch, extended: state.config.protocol.extended_results }
    }
}

/// The 0x02 answer for finished outcomes, in request order.
pub(super) fn respond(files: Vec<String>, outcomes: Vec<Outcome>, extended: bool) -> Answer {
    let mut images = Vec::with_capacity(files.len());
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
            images.push(AnsweredImage { file: file.clone(), error_code: code, result });
            let mut e = Entry::new(Some(file), result, code);
            if extended {
                e.message = message;
                e.extended = Some(ext.unwrap_or(Extended { label: None, confidence: None, bbox: None, detected: false }));
            }
            e
        })
        .collect();
    Answer { response: Response::new(0x02, entries), images }
}
