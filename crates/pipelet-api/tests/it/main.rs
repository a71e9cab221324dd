//! pipelet-api's integration tests, one binary: the published error table against the
//! docs.

// Test code: a panic is a test failure, and helpers need no API docs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod error_docs;
