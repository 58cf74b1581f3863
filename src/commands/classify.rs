//! 0x01: classify images named relative to the image folder.
//!
//! Paths are checked here (refused: error_code 1, missing: 2) so workers only
//! see files inside the folder; the rest become jobs on the shared pool.
//! Two optional keys beside `request_data`: `deadline_ms` (the answer is
//! written by then, whatever is not inferred yet answering "deadline
//! missed") and `fruit_id` (the images are views of one fruit, graded as one
//! in the answer's `fruit`; see `grade.rs`).

use super::{Answer, Command, Conn, Reply, Spec};
use crate::grade::grade;
use crate::inference::{Batch, Facts, Outcome};
use crate::record::{now_ms, Record, RequestContext};
use crate::paths::{resolve_file, PathError};
use pear_protocol::{
    invalid, positive_option, string_list, Entry, ErrorCode, Extended, InvalidRequest, Request, Response, IMAGE_EXTENSIONS,
};
use serde_json::Value;
use std::time::{Duration, Instant};

pub(super) const COMMAND: Spec = Spec { code: 0x01, parse };

/// Longest fruit_id string accepted.
const MAX_FRUIT_ID: usize = 256;

struct Classify {
    files: Vec<String>,
    deadline_ms: Option<u64>,
    fruit_id: Option<Value>,
}

/// How a batch's outcomes become the answer.
pub struct Form {
    /// `protocol.extended_results`: label, confidence, box, detected.
    extended: bool,
    /// Error entries say why (extended, or a request with the new keys: its client reads them).
    messages: bool,
    /// The fruit to grade, and `fruit.min_views_judged`.
    fruit: Option<(Value, usize)>,
    /// For the images' records.
    context: RequestContext,
    received: Instant,
}

fn fruit_id(req: &Request) -> Result<Option<Value>, InvalidRequest> {
    match req.options.get("fruit_id") {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_FRUIT_ID => Ok(Some(Value::String(s.clone()))),
        Some(v @ Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(v.clone())),
        Some(v) => Err(invalid(format!("command 0x01: 'fruit_id' must be an integer or a string of 1 to {MAX_FRUIT_ID} bytes, got {v}"))),
    }
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
    // The configured maximum is checked in `apply`; this bound keeps the arithmetic sane.
    let deadline_ms = positive_option(req, "deadline_ms", u64::from(u32::MAX))?;
    Ok(Box::new(Classify { files, deadline_ms, fruit_id: fruit_id(req)? }))
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
        let max_deadline = state.config.inference.max_deadline_ms;
        if let Some(ms) = self.deadline_ms.filter(|ms| *ms > max_deadline) {
            return Reply::Ready(Response::error(
                ErrorCode::InvalidMessage,
                format!("command 0x01: 'deadline_ms' is {ms}, more than inference.max_deadline_ms ({max_deadline})"),
            ));
        }
        let deadline = self.deadline_ms.map(|ms| conn.received + Duration::from_millis(ms));
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
        let batch = Batch::submit(self.files, paths, model.pipeline.clone(), &state.pool, conn.cancel, timeout, deadline);
        log::debug!("{}: 0x01 queued {} of {} image(s)", conn.peer, batch.queued(), batch.files.len());
        let extended = state.config.protocol.extended_results;
        let messages = extended || self.deadline_ms.is_some() || self.fruit_id.is_some();
        let context = RequestContext {
            host: state.host.clone(),
            peer: conn.peer.into(),
            request: conn.request,
            image_dir: dir.display().to_string().into(),
            model: model.name.as_str().into(),
            model_sha256: model.sha256.as_str().into(),
            fruit_id: self.fruit_id.as_ref().map(Value::to_string),
        };
        let fruit = self.fruit_id.map(|id| (id, state.config.fruit.min_views_judged));
        Reply::Batch { batch, form: Form { extended, messages, fruit, context, received: conn.received } }
    }
}

impl Form {
    /// The 0x02 answer for finished outcomes, in request order.
    pub(super) fn respond(self, files: Vec<String>, outcomes: Vec<Outcome>, facts: Vec<Facts>) -> Answer {
        let fruit = self.fruit.as_ref().map(|(id, min)| {
            let views: Vec<(&str, &Outcome)> = files.iter().map(String::as_str).zip(&outcomes).collect();
            grade(id.clone(), &views, *min)
        });
        let mut answer = self.entries(files, outcomes, facts);
        answer.response.fruit = fruit;
        answer
    }

    /// The entries, and each image's record beside its entry.
    fn entries(&self, files: Vec<String>, outcomes: Vec<Outcome>, facts: Vec<Facts>) -> Answer {
        let (extended, messages) = (self.extended, self.messages);
        let (time_ms, answer) = (now_ms(), self.received.elapsed());
        let mut images = Vec::with_capacity(files.len());
        let entries = files
            .into_iter()
            .zip(outcomes)
            .zip(facts)
            .enumerate()
            .map(|(index, ((file, o), facts))| {
            let missed_deadline = o == Outcome::DeadlineMissed;
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
                Outcome::DeadlineMissed => (None, ErrorCode::Timeout, Some("deadline missed".into()), None),
            };
            let ext = ext.unwrap_or(Extended { label: None, confidence: None, bbox: None, detected: false });
            let c = &self.context;
            let (image_bytes, image_sha256) = facts.image.map_or((None, None), |(n, h)| (Some(n), Some(h)));
            images.push(Record {
                time_ms,
                host: c.host.clone(),
                peer: c.peer.clone(),
                request: c.request,
                index,
                image_dir: c.image_dir.clone(),
                file: file.clone(),
                image_bytes,
                image_sha256,
                model: c.model.clone(),
                model_sha256: c.model_sha256.clone(),
                result,
                label: ext.label.clone(),
                confidence: ext.confidence,
                bbox: ext.bbox,
                detected: ext.detected,
                error_code: code,
                message: message.clone(),
                missed_deadline,
                fruit_id: c.fruit_id.clone(),
                queue_wait: facts.queue_wait,
                inference: facts.inference,
                answer,
            });
            let mut e = Entry::new(Some(file), result, code);
            if messages {
                e.message = message;
            }
            if extended {
                e.extended = Some(ext);
            }
            e
        })
        .collect();
        Answer { response: Response::new(0x02, entries), images, deadline: None }
    }
}
