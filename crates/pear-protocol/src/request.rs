//! Turns one framed object into a request envelope (code + data).
//!
//! Clients write `cmd` as a hex literal (`0x26`), which is not JSON. The
//! original rewrote every `0x..` in the text, corrupting file names such as
//! `0x1f.jpg`; here hex is rewritten only outside strings, where a JSON number
//! may stand. Each command checks its own `request_data` (`commands/`), with
//! the argument helpers below.

use super::json_string::StringScanner;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A request that cannot be served; answered with error_code 1 and this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

pub fn invalid(msg: impl Into<String>) -> InvalidRequest {
    InvalidRequest(msg.into())
}

/// One request's envelope: the command code, its still unchecked
/// `request_data`, and the envelope's other keys (0x01 reads `deadline_ms`
/// and `fruit_id` there; like the original, other commands ignore them).
/// The command's own `parse` (in `commands/`) validates what it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub code: u64,
    pub data: Value,
    pub options: Map<String, Value>,
}

impl Request {
    /// How the command is named in messages.
    pub fn name(&self) -> String {
        format!("0x{:02x}", self.code)
    }
}

/// Image extensions accepted by 0x01 (as the original).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Parses one framed object (raw bytes) into a request envelope.
pub fn parse_request(bytes: &[u8]) -> Result<Request, InvalidRequest> {
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(format!("request is not valid UTF-8 ({e})")))?;
    let text = hex_to_decimal(text)?;
    let value: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("request is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else { return Err(invalid("request must be a JSON object")) };
    let cmd = obj.remove("cmd").ok_or_else(|| invalid("missing key 'cmd'"))?;
    let data = obj.remove("request_data").ok_or_else(|| invalid("missing key 'request_data'"))?;
    let code = cmd.as_u64().ok_or_else(|| invalid(format!("'cmd' must be a non-negative integer, got {cmd}")))?;
    Ok(Request { code, data, options: obj })
}

// Argument helpers for the commands' own parsers.

/// A command that takes no data: `null` or `[]`.
pub fn no_data(req: &Request) -> Result<(), InvalidRequest> {
    match &req.data {
        Value::Null => Ok(()),
        Value::Array(a) if a.is_empty() => Ok(()),
        d => Err(invalid(format!("command {} takes no request_data (null or []), got {d}", req.name()))),
    }
}

/// A list of strings.
pub fn string_list(req: &Request) -> Result<Vec<String>, InvalidRequest> {
    let (cmd, data) = (req.name(), &req.data);
    let arr = data.as_array().ok_or_else(|| invalid(format!("command {cmd} needs request_data to be a list, got {data}")))?;
    arr.iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("command {cmd}: every item must be a string, got {v}"))))
        .collect()
}

/// Exactly one non-blank string; `what` names it in the message.
pub fn one_string(req: &Request, what: &str) -> Result<String, InvalidRequest> {
    let cmd = req.name();
    let list = string_list(req)?;
    match <[String; 1]>::try_from(list) {
        Ok([s]) if !s.trim().is_empty() => Ok(s),
        Ok(_) => Err(invalid(format!("command {cmd} needs {what}, got an empty string"))),
        Err(l) => Err(invalid(format!("command {cmd} needs exactly one item ({what}), got {}", l.len()))),
    }
}

/// An optional positive integer option, at most `max`.
pub fn positive_option(req: &Request, key: &str, max: u64) -> Result<Option<u64>, InvalidRequest> {
    let Some(v) = req.options.get(key) else { return Ok(None) };
    match v.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(format!("command {}: '{key}' must be an integer from 1 to {max}, got {v}", req.name()))),
    }
}

/// Rewrites hex literals (`0x1F`) to decimal outside JSON strings, where a
/// number may start (after `:`, `,`, `[`, `{`, `-` or whitespace).
pub fn hex_to_decimal(text: &str) -> Result<Cow<'_, str>, InvalidRequest> {
    let b = text.as_bytes();
    if !text.contains("0x") && !text.contains("0X") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut strings = StringScanner::default();
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        let c = b[i];
        if strings.step(c) {
            i += 1;
            continue;
        }
        let at_boundary = i == 0 || matches!(b[i - 1], b':' | b',' | b'[' | b'{' | b'-') || b[i - 1].is_ascii_whitespace();
        if c == b'0' && at_boundary && matches!(b.get(i + 1), Some(b'x' | b'X')) {
            let digits_end = b[i + 2..].iter().position(|d| !d.is_ascii_hexdigit()).map_or(b.len(), |p| i + 2 + p);
            if digits_end > i + 2 {
                let hex = &text[i + 2..digits_end];
                let v = u64::from_str_radix(hex, 16).map_err(|_| invalid(format!("hex number 0x{hex} is too large")))?;
                out.push_str(&text[copied..i]);
                out.push_str(&v.to_string());
                copied = digits_end;
                i = digits_end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_only_outside_strings() {
        let t = hex_to_decimal(r#"{"cmd": 0x01, "request_data": ["0x1f.jpg"]}"#).unwrap();
        assert_eq!(t, r#"{"cmd": 1, "request_data": ["0x1f.jpg"]}"#);
        assert_eq!(hex_to_decimal(r#"{"cmd":0X2A}"#).unwrap(), r#"{"cmd":42}"#);
    }

    #[test]
    fn parses_envelopes() {
        let r = parse_request(br#"{"cmd" : 0x32, "request_data": null }"#).unwrap();
        assert_eq!((r.code, r.data, r.options.len()), (0x32, Value::Null, 0));
        let r = parse_request(br#"{"cmd": 1, "request_data": [], "deadline_ms": 0x96}"#).unwrap();
        assert_eq!(positive_option(&r, "deadline_ms", 1000), Ok(Some(150)));
        assert_eq!(positive_option(&r, "other", 1000), Ok(None));
        assert!(positive_option(&r, "deadline_ms", 100).unwrap_err().0.contains("from 1 to 100, got 150"));
        assert!(parse_request(br#"{"cmd": "0x22", "request_data": null}"#).is_err());
        assert!(parse_request(br#"{"cmd": -1, "request_data": null}"#).is_err());
        assert!(parse_request(br#"{"request_data": null}"#).is_err());
        assert!(parse_request(br#"[1]"#).is_err());
    }
}
