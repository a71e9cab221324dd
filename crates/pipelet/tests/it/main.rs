//! pipelet's integration tests, one binary (one link, one process to schedule): the CLI
//! verbs, the worker fleet, the Wan runner end to end, shared engines and the crash and
//! restart suites, all against the real `pipelet` binary. Helpers live in
//! `pipelet-testkit`; the slow real-process suites run only with `PIPELET_SLOW_TESTS=1`.

// Test code: a panic is a test failure, and helpers need no API docs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod cli;
mod cli_submit_retry;
mod cli_verbs;
mod durability;
mod fleet;
mod keys;
mod presign;
mod serve_start;
mod shared_engines;
mod wan;
mod webhook_durability;

/// The `pipelet` binary built for these tests.
fn pipelet() -> pipelet_testkit::Pipelet {
    pipelet_testkit::pipelet!()
}
