//! Inference jobs and the fixed pool of worker threads that runs them.
//!
//! Each image of a 0x01 request is one job on a bounded crossbeam channel, so
//! images of different clients interleave and no client can queue unbounded
//! work. A full queue is answered at once, never waited on.

pub mod batch;
pub mod pool;
pub mod read;

pub use batch::{Batch, CancelRegistry};
pub use pool::{Inspector, Job, JobState, Outcome, Pool};
