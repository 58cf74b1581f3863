//! `pear-client history`: the journal's records through the server's
//! `/api/inspections`, newest first, as text, CSV or JSON lines.

use crate::csv_field;
use clap::Args;
use pear_server::record::utc_text as utc;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Args)]
pub struct HistoryArgs {
    /// The server's metrics listener, which serves the API.
    #[arg(long, default_value = "127.0.0.1:9091")]
    api: String,
    /// From this long ago (90s, 15m, 2h, 7d) or this time (UTC ms since 1970).
    #[arg(long)]
    since: Option<String>,
    /// Until this long ago, or this time.
    #[arg(long)]
    until: Option<String>,
    /// Only images answered with this class.
    #[arg(long)]
    class: Option<i64>,
    /// Only images answered with an error.
    #[arg(long)]
    errors: bool,
    /// Only file names starting with this.
    #[arg(long)]
    file: Option<String>,
    /// Only this model's answers (its file name).
    #[arg(long)]
    model: Option<String>,
    /// Records at most.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// CSV instead of text.
    #[arg(long)]
    csv: bool,
}

/// "2h" ago, or an absolute time in ms, as UTC ms since 1970.
fn when(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("'{s}': expected 90s, 15m, 2h, 7d or ms since 1970"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{s}': the unit is s, m, h or d")),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(now.saturating_sub(Duration::from_secs(secs)).as_millis() as i64)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn get(addr: &str, path: &str, timeout: Duration) -> Result<Value, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| format!("{addr}: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("{addr}: {e}"))?;
    let status = text.split_whitespace().nth(1).unwrap_or("");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: Value = serde_json::from_str(body).map_err(|e| format!("{addr}: answer is not JSON ({e}): {body:.200}"))?;
    if status != "200" {
        return Err(format!("{addr}: {status}: {}", v["error"].as_str().unwrap_or(body)));
    }
    Ok(v)
}

fn field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn history(a: &HistoryArgs, timeout: Duration, as_json: bool) -> Result<u8, String> {
    let mut q = Vec::new();
    if let Some(s) = &a.since {
        q.push(format!("since={}", when(s)?));
    }
    if let Some(s) = &a.until {
        q.push(format!("until={}", when(s)?));
    }
    if let Some(c) = a.class {
        q.push(format!("class={c}"));
    }
    if a.errors {
        q.push("errors=1".into());
    }
    if let Some(f) = &a.file {
        q.push(format!("file={}", encode(f)));
    }
    if let Some(m) = &a.model {
        q.push(format!("model={}", encode(m)));
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let io = |e: std::io::Error| e.to_string();
    if a.csv && !as_json {
        writeln!(out, "id,time_utc,file,result,label,confidence,error_code,message,model,fruit_id,image_sha256").map_err(io)?;
    }
    let (mut shown, mut cursor) = (0, None::<i64>);
    while shown < a.limit {
        let mut page = q.clone();
        page.push(format!("limit={}", (a.limit - shown).min(1000)));
        if let Some(c) = cursor {
            page.push(format!("cursor={c}"));
        }
        let v = get(&a.api, &format!("/api/inspections?{}", page.join("&")), timeout)?;
        let rows = v["inspections"].as_array().cloned().unwrap_or_default();
        for r in &rows {
            let time = utc(r["time_ms"].as_i64().unwrap_or(0));
            if as_json {
                writeln!(out, "{r}").map_err(io)?;
            } else if a.csv {
                let cells = [
                    field(&r["id"]),
                    time,
                    field(&r["file"]),
                    field(&r["result"]),
                    field(&r["label"]),
                    r["confidence"].as_f64().map(|c| format!("{c:.4}")).unwrap_or_default(),
                    field(&r["error_code"]),
                    field(&r["message"]),
                    field(&r["model"]),
                    if r["fruit_id"].is_null() { String::new() } else { r["fruit_id"].to_string() },
                    field(&r["image_sha256"]),
                ];
                writeln!(out, "{}", cells.map(|c| csv_field(&c)).join(",")).map_err(io)?;
            } else {
                let verdict = if r["error_code"] == 0 {
                    match (r["detected"].as_bool(), r["label"].as_str()) {
                        (Some(false), _) => format!("{} (no pear)", field(&r["result"])),
                        (_, Some(l)) => format!("{} {l} {:.2}", field(&r["result"]), r["confidence"].as_f64().unwrap_or(0.0)),
                        _ => field(&r["result"]),
                    }
                } else {
                    format!("error {}: {}", field(&r["error_code"]), field(&r["message"]))
                };
                writeln!(out, "{time}  {}  {verdict}", field(&r["file"])).map_err(io)?;
            }
        }
        shown += rows.len();
        match v["next_cursor"].as_i64() {
            Some(c) if !rows.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        assert_eq!(when("1234").unwrap(), 1234);
        let two_hours = when("0s").unwrap() - when("2h").unwrap();
        assert!((7_199_000..=7_201_000).contains(&two_hours), "{two_hours}");
        assert!(when("2y").is_err() && when("h").is_err());
    }
}
