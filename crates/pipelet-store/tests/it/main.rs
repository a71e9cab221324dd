//! pipelet-store's integration tests, one binary: the conformance suite run on SQLite and
//! PostgreSQL, the model-based property test, PostgreSQL-only multi-server behaviour,
//! migrations, the server lock and secrets, and the (ignored) position-cost benchmark.
//! PostgreSQL comes from `pipelet-testkit` (see `support.rs`).

// Test code: a panic is the failure report we want, and test items need no docs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod conformance;
mod fairness;
mod migrations;
mod model;
mod position_cost;
mod postgres;
mod server_lock;
mod server_secrets;
mod support;
