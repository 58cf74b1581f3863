//! The wire protocol, pure: bytes in, values out, no I/O.
//!
//! `frame` cuts the stream into objects, `request` checks one object's
//! envelope (`cmd`, `request_data`), `response` builds what goes back (and
//! reads it, for clients). `client` is the one blocking client that
//! `pear-client`, the tests and the benches share; it does no server I/O.

pub mod client;
pub mod frame;
mod json_string;
pub mod request;
pub mod response;

pub use frame::{Frame, Framer};
pub use request::{invalid, no_data, one_string, parse_request, positive_option, string_list, InvalidRequest, Request, IMAGE_EXTENSIONS};
pub use response::{Entry, ErrorCode, Extended, Fruit, Response};
