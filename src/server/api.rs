//! The history API on the metrics listener: `GET /api/inspections` and
//! `GET /api/summary`, JSON over the journal (`journal/query.rs`), and
//! `GET /api/status` (the active model, its classes, the queue). Query
//! parameters become SQL parameters, never paths or SQL text.
//!
//! - `since`, `until`: UTC ms since 1970 (`until` exclusive);
//! - `class`: images answered error_code 0 with this result; `errors=1`: only errors;
//! - `file`: file names starting with this; `model`: one model's file name;
//! - `/api/inspections`: `limit` (1..1000, default 100) and `cursor` (the previous
//!   page's `next_cursor`); newest first;
//! - `/api/summary`: `bucket` seconds (default 60): counts per class and per error code.

use crate::journal::query::{self, Filter};
use crate::state::State;
use serde_json::{json, Value};

/// (status, JSON body) for an `/api/...` path and its query string.
pub fn answer(state: &State, path: &str, query_string: &str) -> (u16, Value) {
    if path == "/api/status" {
        return (200, status(state));
    }
    let Some(journal) = state.config.journal.path.as_deref() else {
        return (404, json!({ "error": "the journal is off ([journal] path is unset)" }));
    };
    let params = match parse(query_string) {
        Ok(p) => p,
        Err(e) => return (400, json!({ "error": e })),
    };
    let result = match path {
        "/api/inspections" => query::inspections(journal, &params.filter, params.limit.unwrap_or(100)),
        "/api/summary" => query::summary(journal, &params.filter, params.bucket.unwrap_or(60)),
        _ => return (404, json!({ "error": format!("no such API: {path} (try /api/inspections or /api/summary)") })),
    };
    match result {
        Ok(v) => (200, v),
        Err(e) => (503, json!({ "error": format!("journal: {e}") })),
    }
}

/// What the dashboard shows beside the history: the model, the queue, the workers.
fn status(state: &State) -> Value {
    let model = state.models.active();
    let m = &state.metrics;
    json!({
        "host": &*state.host,
        "model": model.name,
        "model_sha256": model.sha256,
        "classes": model.pipeline.meta.classifier.class_names,
        "queue_depth": state.pool.queued(),
        "images_in_flight": m.images_in_flight.get(),
        "busy_workers": m.busy_workers.get(),
        "journal": state.config.journal.path.is_some(),
    })
}

#[derive(Debug, Default)]
struct Params {
    filter: Filter,
    limit: Option<u32>,
    bucket: Option<u32>,
}

fn parse(qs: &str) -> Result<Params, String> {
    let mut p = Params::default();
    for pair in qs.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v).ok_or_else(|| format!("bad parameter {k}: not valid percent-encoded UTF-8"))?;
        let int = |v: &str| v.parse::<i64>().map_err(|_| format!("bad parameter {k}: '{v}' is not an integer"));
        let positive = |v: &str| match v.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("bad parameter {k}: '{v}' is not a positive integer")),
        };
        match k {
            "since" => p.filter.since_ms = Some(int(&v)?),
            "until" => p.filter.until_ms = Some(int(&v)?),
            "class" => p.filter.class = Some(int(&v)?),
            "errors" => p.filter.errors = matches!(v.as_str(), "1" | "true" | ""),
            "file" => p.filter.file_prefix = Some(v),
            "model" => p.filter.model = Some(v),
            "cursor" => p.filter.before_id = Some(int(&v)?),
            "limit" => p.limit = Some(positive(&v)?.min(query::MAX_LIMIT)),
            "bucket" => p.bucket = Some(positive(&v)?),
            _ => return Err(format!("bad parameter {k}: unknown (since, until, class, errors, file, model, limit, cursor, bucket)")),
        }
    }
    Ok(p)
}

/// `%xx` and `+` decoding of one query value.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_a_filter_or_a_clear_error() {
        let p = parse("since=100&class=4&file=lot%207%2F&errors=1&limit=5000&cursor=9").unwrap();
        assert_eq!(p.filter.since_ms, Some(100));
        assert_eq!(p.filter.class, Some(4));
        assert_eq!(p.filter.file_prefix.as_deref(), Some("lot 7/"));
        assert!(p.filter.errors);
        assert_eq!((p.limit, p.filter.before_id), (Some(query::MAX_LIMIT), Some(9)));
        assert!(parse("since=yesterday").unwrap_err().contains("not an integer"));
        assert!(parse("limit=0").unwrap_err().contains("positive"));
        assert!(parse("path=/etc").unwrap_err().contains("unknown"));
        assert!(parse("file=%zz").unwrap_err().contains("percent"));
    }
}
