//! A blocking client connection for `pear-client`: requests out, answers in,
//! cut from the stream by the server's own framer in its answer mode (one
//! JSON object per answer, whatever the line breaks).

use crate::protocol::{Frame, Framer};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest answer accepted (a 256-image answer with every optional field is ~60 KB).
const MAX_ANSWER: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("{addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("{addr}: connection closed before the answer")]
    Closed { addr: String },
    #[error("{addr}: answer is not valid: {why}")]
    Invalid { addr: String, why: String },
}

pub struct Connection {
    addr: String,
    stream: TcpStream,
    framer: Framer,
    buf: Vec<u8>,
}

impl Connection {
    pub fn connect(addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(addr).map_err(|source| ClientError::Connect { addr: addr.into(), source })?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(timeout));
        Ok(Connection { addr: addr.into(), stream, framer: Framer::for_answers(MAX_ANSWER), buf: vec![0; 64 * 1024] })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn send(&mut self, request: &Value) -> Result<(), ClientError> {
        let mut bytes = serde_json::to_vec(request).map_err(|e| ClientError::Invalid { addr: self.addr.clone(), why: e.to_string() })?;
        bytes.push(b'\n');
        self.stream.write_all(&bytes).map_err(|source| ClientError::Io { addr: self.addr.clone(), source })
    }

    /// The next answer.
    pub fn recv(&mut self) -> Result<Value, ClientError> {
        loop {
            if let Some(frame) = self.framer.next_frame() {
                let invalid = |why: String| ClientError::Invalid { addr: self.addr.clone(), why };
                return match frame {
                    Frame::Object(bytes) => serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string())),
                    Frame::Garbage { reason, .. } => Err(invalid(reason.to_string())),
                    Frame::TooLarge { limit } => Err(invalid(format!("larger than {limit} bytes"))),
                };
            }
            let n = self.stream.read(&mut self.buf).map_err(|source| ClientError::Io { addr: self.addr.clone(), source })?;
            if n == 0 {
                return Err(ClientError::Closed { addr: self.addr.clone() });
            }
            self.framer.push(&self.buf[..n]);
        }
    }

    pub fn request(&mut self, request: &Value) -> Result<Value, ClientError> {
        self.send(request)?;
        self.recv()
    }
}

/// A request: `{"cmd": code, "request_data": data}`.
pub fn request(code: u8, data: Value) -> Value {
    serde_json::json!({ "cmd": code, "request_data": data })
}

/// The entries of an answer (empty if it has none).
pub fn entries(answer: &Value) -> &[Value] {
    answer["response_data"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// True when every entry of the answer has error_code 0.
pub fn all_ok(answer: &Value) -> bool {
    let e = entries(answer);
    !e.is_empty() && e.iter().all(|x| x["error_code"] == 0)
}
