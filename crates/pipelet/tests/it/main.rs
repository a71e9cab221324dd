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
mod usage;
mod wan;
mod webhook_durability;

/// The `pipelet` binary built for these tests.
fn pipelet() -> pipelet_testkit::Pipelet {
    pipelet_testkit::pipelet!()
}

/// Creates a request of `body` on `model`: its request id.
async fn create_id(
    server: &pipelet_testkit::Server,
    client: &reqwest::Client,
    model: &str,
    body: serde_json::Value,
) -> String {
    server.create(client, model, body).await["request_id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Creates a request of `body` on `model` and waits (30 s at most) until a worker runs
/// it: its request id.
async fn create_running(
    server: &pipelet_testkit::Server,
    client: &reqwest::Client,
    model: &str,
    body: serde_json::Value,
) -> String {
    let id = create_id(server, client, model, body).await;
    server
        .wait_for(
            client,
            model,
            &id,
            "IN_PROGRESS",
            std::time::Duration::from_secs(30),
        )
        .await;
    id
}
