//! pipelet-server's integration tests, one binary: the public queue API (create rules,
//! status, cancel, results, history, idempotency, webhooks, signed links, retention, https),
//! the worker API, OpenAPI and the docs, against the real server in process
//! (`pipelet_testkit::app`). Shared helpers are in `common/`.

// Test code: a panic is the failure report we want, and test items need no docs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod admin_keys;
mod api_auth;
mod api_create;
mod api_history;
mod api_i2v_rules;
mod api_idempotency;
mod api_positions;
mod api_progress_eta;
mod api_render;
mod api_result;
mod api_status_cancel;
mod api_t2v_rules;
mod api_webhooks;
mod client_facing;
mod common;
mod disk_full;
mod failure_reasons;
mod interfaces;
mod openapi;
mod quotas;
mod result_links;
mod retention;
mod tls;
mod usage;
mod webhooks;
mod worker_api;
mod worker_step;
