//! Inference jobs and the fixed pool of worker threads that runs them.
//!
//! Each image of a 0x01 request is one job in a bounded queue served
//! round-robin across connections, so images of different clients interleave
//! and no client can take the whole queue. A full queue is answered at once,
//! never waited on.

pub mod annotated;
pub mod batch;
pub mod pool;
pub mod queue;
pub mod read;
pub mod service_time;

pub use batch::{Batch, CancelRegistry};
pub use pool::{Facts, Outcome, Pool, PoolOptions};
