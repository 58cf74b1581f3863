//! The one blocking client: requests out, answers in, cut from the stream
//! by the server's own framer in its answer mode (one JSON object per
//! answer, whatever the line breaks). `pear-client`, the tests and the load
//! bench all speak through it.

use crate::{Frame, Framer, Response};
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

/// One answer as it came: its bytes, and whether a newline followed it
/// (the server ends every answer with one, for netcat users).
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub bytes: Vec<u8>,
    pub newline: bool,
}

pub struct Client {
    addr: String,
    stream: TcpStream,
    framer: Framer,
    buf: Vec<u8>,
}

impl Client {
    /// Connects; `timeout` bounds each wait for an answer.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).map_err(|source| ClientError::Connect { addr: addr.into(), source })?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(timeout));
        Ok(Client { addr: addr.into(), stream, framer: Framer::for_answers(MAX_ANSWER), buf: vec![0; 64 * 1024] })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The socket, for tests that shut one side or change its timeout.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io { addr: self.addr.clone(), source }
    }

    fn invalid(&self, why: String) -> ClientError {
        ClientError::Invalid { addr: self.addr.clone(), why }
    }

    /// Sends bytes as they are (a test's malformed request, say).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).map_err(|e| self.io(e))
    }

    /// Sends `{"cmd": code, "request_data": data}` and a newline.
    pub fn send(&mut self, code: u8, data: &Value) -> Result<(), ClientError> {
        self.send_value(&request(code, data.clone()))
    }

    /// Sends a whole request object (one with optional keys, say) and a newline.
    pub fn send_value(&mut self, request: &Value) -> Result<(), ClientError> {
        let mut bytes = serde_json::to_vec(request).map_err(|e| self.invalid(e.to_string()))?;
        bytes.push(b'\n');
        self.send_raw(&bytes)
    }

    /// Reads more bytes into the framer; false at end of stream.
    fn fill(&mut self) -> Result<bool, ClientError> {
        let n = self.stream.read(&mut self.buf).map_err(|e| self.io(e))?;
        self.framer.push(&self.buf[..n]);
        Ok(n > 0)
    }

    /// The next answer's bytes.
    fn next_object(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            match self.framer.next_frame() {
                Some(Frame::Object(bytes)) => return Ok(bytes),
                Some(Frame::Garbage { reason, .. }) => return Err(self.invalid(reason.to_string())),
                Some(Frame::TooLarge { limit }) => return Err(self.invalid(format!("larger than {limit} bytes"))),
                None if !self.fill()? => return Err(ClientError::Closed { addr: self.addr.clone() }),
                None => {}
            }
        }
    }

    /// The next answer's bytes, and whether a newline followed it (waiting
    /// for the byte after the answer, so only for servers that send one).
    pub fn recv_raw(&mut self) -> Result<RawAnswer, ClientError> {
        let bytes = self.next_object()?;
        let newline = loop {
            match self.framer.peek_byte() {
                Some(b) => break b == b'\n',
                None if !self.fill()? => break false,
                None => {}
            }
        };
        Ok(RawAnswer { bytes, newline })
    }

    /// The next answer.
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        let bytes = self.next_object()?;
        Response::from_slice(&bytes).map_err(|e| self.invalid(e))
    }

    pub fn request(&mut self, code: u8, data: &Value) -> Result<Response, ClientError> {
        self.send(code, data)?;
        self.recv()
    }
}

/// A request: `{"cmd": code, "request_data": data}`.
pub fn request(code: u8, data: Value) -> Value {
    serde_json::json!({ "cmd": code, "request_data": data })
}
