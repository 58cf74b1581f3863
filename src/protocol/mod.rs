//! The wire protocol, pure: bytes in, values out, no I/O.
//!
//! `frame` cuts the stream into objects, `request` validates one object into a
//! `Command`, `response` builds what goes back.

pub mod frame;
pub mod request;
pub mod response;

pub use frame::{Frame, Framer};
pub use request::{parse_request, Command, InvalidRequest};
pub use response::{Entry, ErrorCode, Extended, Response};
