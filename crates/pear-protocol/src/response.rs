//! Response values and their wire form, both ways: the server writes them,
//! clients read them back into the same types.
//!
//! Every entry carries `file_name`, `result` and `error_code` (the original
//! omitted some; emitting all three is what its clients accept). Each response
//! is one JSON object followed by `\n`, so netcat sessions stay readable.

use serde::{Deserialize, Serialize};

/// The original's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    NoError = 0,
    InvalidMessage = 1,
    ResourceNotFound = 2,
    /// Named "not_exist_command" by the original, which also uses it for internal errors.
    Internal = 3,
    Timeout = 4,
}

impl ErrorCode {
    pub fn from_code(code: u8) -> Option<ErrorCode> {
        Some(match code {
            0 => ErrorCode::NoError,
            1 => ErrorCode::InvalidMessage,
            2 => ErrorCode::ResourceNotFound,
            3 => ErrorCode::Internal,
            4 => ErrorCode::Timeout,
            _ => return None,
        })
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u8::deserialize(d)?;
        ErrorCode::from_code(code).ok_or_else(|| serde::de::Error::custom(format!("unknown error_code {code}")))
    }
}

/// `result` of management commands.
pub const RESULT_OK: i64 = 2;
pub const RESULT_FAILED: i64 = 1;

/// Extra fields of a 0x01 entry when `extended_results` is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extended {
    pub label: Option<String>,
    pub confidence: Option<f32>,
    pub bbox: Option<[f32; 4]>,
    pub detected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub file_name: Option<String>,
    pub result: Option<i64>,
    pub error_code: ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extended: Option<Extended>,
}

impl Entry {
    pub fn new(file_name: Option<String>, result: Option<i64>, error_code: ErrorCode) -> Self {
        Entry { file_name, result, error_code, message: None, extended: None }
    }

    /// A management success: `result` 2, error_code 0.
    pub fn ok(file_name: Option<String>) -> Self {
        Self::new(file_name, Some(RESULT_OK), ErrorCode::NoError)
    }

    /// A management failure: `result` 1 with the given code, and why (so a
    /// netcat user can tell).
    pub fn failed(file_name: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(file_name, Some(RESULT_FAILED), code).with_message(message)
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn is_ok(&self) -> bool {
        self.error_code == ErrorCode::NoError
    }
}

/// The grade of one fruit from its views: a 0x02 answer carries it when the
/// request named a `fruit_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fruit {
    /// As the client sent it: a string or an integer.
    pub fruit_id: serde_json::Value,
    /// The grade (a class index), or null when the fruit could not be graded.
    pub result: Option<i64>,
    pub error_code: ErrorCode,
    /// Views whose image was read and showed a pear.
    pub views_judged: usize,
    /// The file name of the view the grade comes from.
    pub decisive_view: Option<String>,
    pub confidence: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub cmd: Option<u8>,
    pub response_data: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fruit: Option<Fruit>,
    pub request_data: Option<()>,
}

impl Response {
    pub fn new(cmd: u8, entries: Vec<Entry>) -> Self {
        Response { cmd: Some(cmd), response_data: entries, fruit: None, request_data: None }
    }

    /// The original's protocol-level error shape (`cmd: null`).
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response { cmd: None, response_data: vec![Entry::new(None, None, code).with_message(message)], fruit: None, request_data: None }
    }

    /// True when it has entries and every one is error_code 0.
    pub fn all_ok(&self) -> bool {
        !self.response_data.is_empty() && self.response_data.iter().all(Entry::is_ok)
    }

    /// Reads one answer's JSON text.
    pub fn from_slice(bytes: &[u8]) -> Result<Response, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Wire form: compact JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|e| {
            // Serialising plain structs cannot fail; keep the wire valid if it ever does.
            format!(r#"{{"cmd": null, "response_data": [{{"file_name": null, "result": null, "error_code": 3, "message": "serialisation failed: {e}"}}], "request_data": null}}"#).into_bytes()
        });
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shape() {
        let r = Response::error(ErrorCode::InvalidMessage, "bad");
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            "{\"cmd\":null,\"response_data\":[{\"file_name\":null,\"result\":null,\"error_code\":1,\"message\":\"bad\"}],\"request_data\":null}\n"
        );
    }

    #[test]
    fn answers_read_back_as_written() {
        let mut e = Entry::new(Some("a.jpg".into()), Some(3), ErrorCode::NoError);
        e.extended =
            Some(Extended { label: Some("crack".into()), confidence: Some(0.5), bbox: Some([1.0, 2.0, 3.0, 4.0]), detected: true });
        let mut graded = Response::new(0x02, vec![e.clone()]);
        graded.fruit = Some(Fruit {
            fruit_id: serde_json::json!("f-7"),
            result: Some(3),
            error_code: ErrorCode::NoError,
            views_judged: 1,
            decisive_view: Some("a.jpg".into()),
            confidence: Some(0.5),
            message: None,
        });
        for r in [
            graded,
            Response::new(0x02, vec![e, Entry::new(Some("b.jpg".into()), None, ErrorCode::ResourceNotFound)]),
            Response::error(ErrorCode::Timeout, "x"),
        ] {
            assert_eq!(Response::from_slice(&r.to_bytes()).unwrap(), r);
        }
        let plain =
            Response::from_slice(br#"{"cmd":35,"response_data":[{"file_name":"m","result":2,"error_code":0}],"request_data":null}"#)
                .unwrap();
        assert_eq!(plain, Response::new(0x23, vec![Entry::ok(Some("m".into()))]));
        assert!(Response::from_slice(br#"{"cmd":2,"response_data":[{"file_name":"m","result":2,"error_code":9}],"request_data":null}"#)
            .is_err());
    }

    #[test]
    fn entry_keeps_all_keys() {
        let r = Response::new(0x04, vec![Entry::ok(None)]);
        let s = String::from_utf8(r.to_bytes()).unwrap();
        assert!(s.contains("\"file_name\":null") && s.contains("\"result\":2") && s.contains("\"error_code\":0"));
    }
}
