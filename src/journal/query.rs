//! Reading the journal for the history API: filters in, JSON values out.
//! Each call opens the file read-only (WAL lets it read while the writer
//! writes), so a journal moved aside or replaced is simply read anew.

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OpenFlags, Row};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Rows one call returns at most.
pub const MAX_LIMIT: u32 = 1000;

/// `/api/inspections` filters; every one optional.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Filter {
    /// UTC ms since 1970, inclusive.
    pub since_ms: Option<i64>,
    /// UTC ms since 1970, exclusive.
    pub until_ms: Option<i64>,
    /// Images answered error_code 0 with this result.
    pub class: Option<i64>,
    /// Only images answered with an error.
    pub errors: bool,
    /// File names that start with this.
    pub file_prefix: Option<String>,
    pub model: Option<String>,
    /// Rows with a smaller id than this (the previous page's `next_cursor`).
    pub before_id: Option<i64>,
}

impl Filter {
    fn sql(&self) -> (String, Vec<Sql>) {
        let mut w = vec!["1 = 1".to_string()];
        let mut p = Vec::new();
        let mut add = |cond: &str, v: Sql| {
            p.push(v);
            w.push(cond.replace('?', &format!("?{}", p.len())));
        };
        if let Some(t) = self.since_ms {
            add("time_ms >= ?", Sql::Integer(t));
        }
        if let Some(t) = self.until_ms {
            add("time_ms < ?", Sql::Integer(t));
        }
        if let Some(c) = self.class {
            add("error_code = 0 AND result = ?", Sql::Integer(c));
        }
        if self.errors {
            add("error_code <> ?", Sql::Integer(0));
        }
        if let Some(f) = &self.file_prefix {
            add(&format!("substr(file, 1, {}) = ?", f.chars().count()), Sql::Text(f.clone()));
        }
        if let Some(m) = &self.model {
            add("model = ?", Sql::Text(m.clone()));
        }
        if let Some(id) = self.before_id {
            add("id < ?", Sql::Integer(id));
        }
        (w.join(" AND "), p)
    }
}

fn open(path: &Path) -> Result<Connection, String> {
    if !path.is_file() {
        return Err(format!("no journal at {} yet", path.display()));
    }
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(|e| e.to_string())
}

const COLUMNS: &str = "id, time_ms, host, peer, request, view, image_dir, file, image_bytes, image_sha256, model, model_sha256,
    result, label, confidence, bbox_x1, bbox_y1, bbox_x2, bbox_y2, detected, error_code, message, missed_deadline, fruit_id,
    queue_wait_ms, inference_ms, answer_ms";

fn row_json(r: &Row) -> rusqlite::Result<Value> {
    let bbox: Option<[f64; 4]> = match (r.get(15)?, r.get(16)?, r.get(17)?, r.get(18)?) {
        (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
        _ => None,
    };
    let fruit: Option<String> = r.get(23)?;
    Ok(json!({
        "id": r.get::<_, i64>(0)?, "time_ms": r.get::<_, i64>(1)?, "host": r.get::<_, String>(2)?, "peer": r.get::<_, String>(3)?,
        "request": r.get::<_, i64>(4)?, "view": r.get::<_, i64>(5)?, "image_dir": r.get::<_, String>(6)?, "file": r.get::<_, String>(7)?,
        "image_bytes": r.get::<_, Option<i64>>(8)?, "image_sha256": r.get::<_, Option<String>>(9)?,
        "model": r.get::<_, String>(10)?, "model_sha256": r.get::<_, String>(11)?,
        "result": r.get::<_, Option<i64>>(12)?, "label": r.get::<_, Option<String>>(13)?, "confidence": r.get::<_, Option<f64>>(14)?,
        "bbox": bbox, "detected": r.get::<_, bool>(19)?, "error_code": r.get::<_, i64>(20)?, "message": r.get::<_, Option<String>>(21)?,
        "missed_deadline": r.get::<_, bool>(22)?,
        // Stored as JSON text; given back as the value the client sent.
        "fruit_id": fruit.and_then(|f| serde_json::from_str::<Value>(&f).ok()),
        "queue_wait_ms": r.get::<_, Option<f64>>(24)?, "inference_ms": r.get::<_, Option<f64>>(25)?, "answer_ms": r.get::<_, f64>(26)?,
    }))
}

/// What a thumbnail of record `id` needs: where its image was, and the answer to draw on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub image_dir: String,
    pub file: String,
    pub image_sha256: Option<String>,
    pub result: Option<i64>,
    pub label: Option<String>,
    pub confidence: Option<f64>,
    pub bbox: Option<[f32; 4]>,
    pub detected: bool,
}

/// Record `id`'s image and answer, if the journal has it.
pub fn judged(path: &Path, id: i64) -> Result<Option<Judged>, String> {
    let db = open(path)?;
    let mut st = db
        .prepare(
            "SELECT image_dir, file, image_sha256, result, label, confidence, bbox_x1, bbox_y1, bbox_x2, bbox_y2, detected
             FROM inspections WHERE id = ?1",
        )
        .map_err(|e| e.to_string())?;
    let mut rows = st.query([id]).map_err(|e| e.to_string())?;
    let Some(r) = rows.next().map_err(|e| e.to_string())? else { return Ok(None) };
    let get = |e: rusqlite::Error| e.to_string();
    let b: [Option<f64>; 4] = [r.get(6).map_err(get)?, r.get(7).map_err(get)?, r.get(8).map_err(get)?, r.get(9).map_err(get)?];
    Ok(Some(Judged {
        image_dir: r.get(0).map_err(get)?,
        file: r.get(1).map_err(get)?,
        image_sha256: r.get(2).map_err(get)?,
        result: r.get(3).map_err(get)?,
        label: r.get(4).map_err(get)?,
        confidence: r.get(5).map_err(get)?,
        bbox: match b {
            [Some(a), Some(b), Some(c), Some(d)] => Some([a as f32, b as f32, c as f32, d as f32]),
            _ => None,
        },
        detected: r.get(10).map_err(get)?,
    }))
}

/// Newest first, at most `limit`; `next_cursor` (an id) asks for the page after, null at the end.
pub fn inspections(path: &Path, f: &Filter, limit: u32) -> Result<Value, String> {
    let db = open(path)?;
    let limit = limit.clamp(1, MAX_LIMIT);
    let (cond, mut params) = f.sql();
    params.push(Sql::Integer(i64::from(limit) + 1));
    let sql = format!("SELECT {COLUMNS} FROM inspections WHERE {cond} ORDER BY id DESC LIMIT ?{}", params.len());
    let mut st = db.prepare(&sql).map_err(|e| e.to_string())?;
    let mut rows: Vec<Value> = st
        .query_map(rusqlite::params_from_iter(params), row_json)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(|r| r["id"].clone()) } else { None };
    Ok(json!({ "inspections": rows, "next_cursor": next }))
}

/// One time bucket: images, counts by class, counts by error code.
type Bucket = (i64, Map<String, Value>, Map<String, Value>);

/// Counts per class and per error code in buckets of `bucket_secs`, oldest first.
pub fn summary(path: &Path, f: &Filter, bucket_secs: u32) -> Result<Value, String> {
    let db = open(path)?;
    let bucket_ms = i64::from(bucket_secs.max(1)) * 1000;
    let (cond, params) = f.sql();
    let sql = format!(
        "SELECT (time_ms / {bucket_ms}) * {bucket_ms} AS start, error_code, result, COUNT(*) FROM inspections WHERE {cond}
         GROUP BY start, error_code, result ORDER BY start"
    );
    let mut st = db.prepare(&sql).map_err(|e| e.to_string())?;
    let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
    let mut rows = st.query(rusqlite::params_from_iter(params)).map_err(|e| e.to_string())?;
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        let (start, code, result, n): (i64, i64, Option<i64>, i64) = (
            r.get(0).map_err(|e| e.to_string())?,
            r.get(1).map_err(|e| e.to_string())?,
            r.get(2).map_err(|e| e.to_string())?,
            r.get(3).map_err(|e| e.to_string())?,
        );
        let b = buckets.entry(start).or_default();
        b.0 += n;
        let bump = |m: &mut Map<String, Value>, k: String| {
            let v = m.get(&k).and_then(Value::as_i64).unwrap_or(0) + n;
            m.insert(k, json!(v));
        };
        bump(&mut b.2, code.to_string());
        if let (0, Some(class)) = (code, result) {
            bump(&mut b.1, class.to_string());
        }
    }
    drop(rows);
    // Answer times per bucket, for p50/p99 (SQLite has no percentile function).
    let sql = format!("SELECT (time_ms / {bucket_ms}) * {bucket_ms}, answer_ms FROM inspections WHERE {cond}");
    let mut st = db.prepare(&sql).map_err(|e| e.to_string())?;
    let mut times: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let (_, params) = f.sql();
    let mut rows = st.query(rusqlite::params_from_iter(params)).map_err(|e| e.to_string())?;
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        let (start, ms): (i64, f64) = (r.get(0).map_err(|e| e.to_string())?, r.get(1).map_err(|e| e.to_string())?);
        times.entry(start).or_default().push(ms);
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize).copied()
    };
    let list: Vec<Value> = buckets
        .into_iter()
        .map(|(start, (n, by_class, by_code))| {
            let mut t = times.remove(&start).unwrap_or_default();
            json!({ "start_ms": start, "images": n, "by_class": by_class, "by_error_code": by_code,
                    "answer_ms_p50": pct(&mut t, 0.5), "answer_ms_p99": pct(&mut t, 0.99) })
        })
        .collect();
    Ok(json!({ "bucket_seconds": bucket_ms / 1000, "buckets": list }))
}
