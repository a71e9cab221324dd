//! The one worker loop: claim a job from a [`JobSource`], render it with a
//! [`pipelet_runner::Runner`], heartbeat progress while it runs, upload the MP4 and
//! complete. `pipelet serve`'s in-process workers use [`LocalSource`] (the store
//! directly); remote workers use an HTTP source with the same trait, so there is one
//! code path to test.

mod http;
mod local;
mod source;
mod worker;

pub use http::HttpSource;
pub use local::LocalSource;
pub use source::{Assignment, JobSource, SourceError};
pub use worker::{StepOutcome, Worker, WorkerConfig};
