//! pipelet-worker's integration tests, one binary: the worker loop over fake sources
//! (on tokio's paused clock, so backoffs and deadlines take no real time) and the HTTP
//! source's reading of a server's error answers (over real TCP, on the real clock).

// Test code: a panic is a test failure, and helpers need no API docs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod step;
