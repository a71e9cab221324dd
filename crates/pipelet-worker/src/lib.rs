//! The one worker loop: claim a job from a [`JobSource`], render it with a
//! [`pipelet_runner::Runner`], heartbeat progress while it runs, upload the MP4 and
//! complete. `pipelet serve`'s in-process workers use the server's queue service (the
//! store directly); remote workers use [`HttpSource`] with the same trait, so there is
//! one code path to test. The worker speaks only `pipelet-api`: no database, no blob
//! store.

mod http;
mod source;
mod worker_loop;

pub use http::HttpSource;
pub use source::{Assignment, JobSource, SourceError};
pub use worker_loop::{StepOutcome, Worker, WorkerConfig};
