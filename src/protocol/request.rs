//! Turns one framed object into a typed, validated request.
//!
//! Clients write `cmd` as a hex literal (`0x26`), which is not JSON. The
//! original rewrote every `0x..` in the text, corrupting file names such as
//! `0x1f.jpg`; here hex is rewritten only outside strings, where a JSON number
//! may stand. Everything a handler needs is checked here, so handlers get
//! values, never raw JSON.

use serde_json::Value;
use std::borrow::Cow;

/// A request that cannot be served; answered with error_code 1 and this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

fn invalid(msg: impl Into<String>) -> InvalidRequest {
    InvalidRequest(msg.into())
}

/// The ten commands of the original protocol, with their arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// 0x01: classify images named relative to the image folder.
    Classify { files: Vec<String> },
    /// 0x03: cancel this connection's queued images.
    Stop,
    /// 0x20: download a model bundle into the model folder.
    DownloadModel { url: String },
    /// 0x22: name of the active model.
    CurrentModel,
    /// 0x24: files in the model folder.
    ListModels,
    /// 0x26: switch the active model.
    ChangeModel { name: String },
    /// 0x28: delete a model file.
    DeleteModel { name: String },
    /// 0x30: change the image folder.
    ChangeImageDir { path: String },
    /// 0x32: current image folder.
    CurrentImageDir,
    /// 0x34: change the model folder.
    ChangeModelDir { path: String },
}

impl Command {
    /// The request's command code.
    pub fn code(&self) -> u8 {
        match self {
            Command::Classify { .. } => 0x01,
            Command::Stop => 0x03,
            Command::DownloadModel { .. } => 0x20,
            Command::CurrentModel => 0x22,
            Command::ListModels => 0x24,
            Command::ChangeModel { .. } => 0x26,
            Command::DeleteModel { .. } => 0x28,
            Command::ChangeImageDir { .. } => 0x30,
            Command::CurrentImageDir => 0x32,
            Command::ChangeModelDir { .. } => 0x34,
        }
    }

    /// The code of the response (request code + 1).
    pub fn response_code(&self) -> u8 {
        self.code() + 1
    }
}

/// Image extensions accepted by 0x01 (as the original).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Parses one framed object (raw bytes) into a command.
pub fn parse_request(bytes: &[u8]) -> Result<Command, InvalidRequest> {
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(format!("request is not valid UTF-8 ({e})")))?;
    let text = hex_to_decimal(text)?;
    let value: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("request is not valid JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| invalid("request must be a JSON object"))?;
    let cmd = obj.get("cmd").ok_or_else(|| invalid("missing key 'cmd'"))?;
    let data = obj.get("request_data").ok_or_else(|| invalid("missing key 'request_data'"))?;
    let code = cmd
        .as_u64()
        .ok_or_else(|| invalid(format!("'cmd' must be a non-negative integer, got {cmd}")))?;
    let cmd_name = format!("0x{code:02x}");
    let command = match code {
        0x01 => {
            let files = string_list(data, &cmd_name)?;
            if files.is_empty() {
                return Err(invalid("command 0x01 needs a non-empty list of image file names"));
            }
            for f in &files {
                let ext = f.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
                if !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                    return Err(invalid(format!("'{f}' is not a .jpg, .jpeg or .png file name")));
                }
            }
            Command::Classify { files }
        }
        0x03 => no_data(data, &cmd_name).map(|_| Command::Stop)?,
        0x22 => no_data(data, &cmd_name).map(|_| Command::CurrentModel)?,
        0x24 => no_data(data, &cmd_name).map(|_| Command::ListModels)?,
        0x32 => no_data(data, &cmd_name).map(|_| Command::CurrentImageDir)?,
        0x20 => {
            let url = one_string(data, &cmd_name, "a URL")?;
            let lower = url.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return Err(invalid(format!("command 0x20 needs an http:// or https:// URL, got '{url}'")));
            }
            Command::DownloadModel { url }
        }
        0x26 => Command::ChangeModel { name: one_string(data, &cmd_name, "a model file name")? },
        0x28 => Command::DeleteModel { name: one_string(data, &cmd_name, "a model file name")? },
        0x30 => Command::ChangeImageDir { path: one_string(data, &cmd_name, "a folder path")? },
        0x34 => Command::ChangeModelDir { path: one_string(data, &cmd_name, "a folder path")? },
        _ => return Err(invalid(format!("unknown command {cmd_name}"))),
    };
    Ok(command)
}

fn no_data(data: &Value, cmd: &str) -> Result<(), InvalidRequest> {
    match data {
        Value::Null => Ok(()),
        Value::Array(a) if a.is_empty() => Ok(()),
        _ => Err(invalid(format!("command {cmd} takes no request_data (null or []), got {data}"))),
    }
}

fn string_list(data: &Value, cmd: &str) -> Result<Vec<String>, InvalidRequest> {
    let arr = data
        .as_array()
        .ok_or_else(|| invalid(format!("command {cmd} needs request_data to be a list, got {data}")))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("command {cmd}: every item must be a string, got {v}")))
        })
        .collect()
}

fn one_string(data: &Value, cmd: &str, what: &str) -> Result<String, InvalidRequest> {
    let list = string_list(data, cmd)?;
    match <[String; 1]>::try_from(list) {
        Ok([s]) if !s.trim().is_empty() => Ok(s),
        Ok(_) => Err(invalid(format!("command {cmd} needs {what}, got an empty string"))),
        Err(l) => Err(invalid(format!("command {cmd} needs exactly one item ({what}), got {}", l.len()))),
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
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    let mut copied = 0;
    while i < b.len() {
        let c = b[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
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
    fn parses_commands() {
        assert_eq!(parse_request(br#"{"cmd" : 0x32, "request_data": null }"#).unwrap(), Command::CurrentImageDir);
        assert_eq!(
            parse_request(br#"{"cmd": 1, "request_data": ["a.JPG"]}"#).unwrap(),
            Command::Classify { files: vec!["a.JPG".into()] }
        );
        assert!(parse_request(br#"{"cmd": 1, "request_data": []}"#).is_err());
        assert!(parse_request(br#"{"cmd": 0x99, "request_data": null}"#).is_err());
        assert!(parse_request(br#"{"cmd": 0x26, "request_data": ["a", "b"]}"#).is_err());
        assert!(parse_request(br#"{"cmd": "0x22", "request_data": null}"#).is_err());
    }
}
