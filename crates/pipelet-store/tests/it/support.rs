//! What the store test files share: a new job to create, and PostgreSQL for the tests: a fresh database per test from `pipelet_testkit`
//! (on `PIPELET_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`),
//! dropped with the value (kept for inspection when the test failed). An unreachable
//! server fails the test unless `PIPELET_SKIP_POSTGRES=1`.

use pipelet_api::Pipeline;
use pipelet_store::prelude::*;
use pipelet_store::{JobResult, NewJob, RenderedVideo, UsageQuery};
pub use pipelet_testkit::engines::PgDb;
use uuid::Uuid;

/// A fresh, empty database, or `None` when PostgreSQL tests are switched off.
pub fn pg_db() -> Option<PgDb> {
    if pipelet_testkit::engines::skipped(false, true) {
        return None;
    }
    Some(PgDb::create())
}

/// A job of `pipeline` with `priority`, three attempts, no input and no webhook.
pub fn new_job(pipeline: Pipeline, priority: i64) -> NewJob {
    NewJob {
        id: Uuid::new_v4(),
        model_id: format!("wan22-fast-{pipeline}"),
        pipeline,
        owner_key_id: "owner".into(),
        priority,
        spec: pipelet_api::JobSpec::sample("p"),
        input_blob: None,
        max_attempts: 3,
        webhook_url: None,
    }
}

/// A finished 832x480 preview render stored at `blob`.
pub fn result_at(blob: &str) -> JobResult {
    JobResult {
        blob: blob.into(),
        bytes: 10,
        video: RenderedVideo {
            width: 832,
            height: 480,
            frames: 81,
            fps: 16,
            backend: "preview".into(),
            run_seconds: 1.5,
        },
    }
}

/// (day, key name, model, completed, failed, cancelled, video ms, run ms) of each row.
pub type UsageLine = (String, String, String, u64, u64, u64, i64, i64);

/// The rows `query` reads, as [`UsageLine`]s.
pub async fn usage_lines(s: &dyn Store, query: &UsageQuery) -> Vec<UsageLine> {
    s.usage(query)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.day,
                r.key_name,
                r.model_id,
                r.completed,
                r.failed,
                r.cancelled,
                r.video_ms,
                r.run_ms,
            )
        })
        .collect()
}
