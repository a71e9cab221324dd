//! The store conformance suite: every test body takes a fresh `dyn Store`, and the
//! [`conformance!`] macro runs each one against every implementation: `sqlite::<test>`
//! on a temporary file and `postgres::<test>` on a fresh PostgreSQL database (see
//! `support.rs`: it must be reachable unless `PIPELET_SKIP_POSTGRES=1`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use pipelet_api::Pipeline;
use pipelet_api::clock::{Clock, ManualClock};
use pipelet_store::postgres::{PgOptions, PgStore};
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::*;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::support::{UsageLine, new_job, usage_lines};

enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    },
    Postgres(crate::support::PgDb),
}

struct Fixture {
    store: Arc<dyn Store>,
    backend: Backend,
    /// The store's clock: tests move it on instead of sleeping through leases and ages.
    clock: ManualClock,
}

impl Fixture {
    /// A second store on the same data and clock, as after a server restart.
    async fn reopen(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Arc::new(
                SqliteStore::open_with_clock(path, self.clock.shared())
                    .await
                    .unwrap(),
            ),
            Backend::Postgres(db) => Arc::new(pg_store(&db.url, &self.clock).await),
        }
    }

    /// Now, by the store's clock.
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Lets every lease handed out so far (at most [`LEASE_MS`]) run out, then reaps.
    async fn reap_after_expiry(&self) -> Vec<ReapedJob> {
        self.advance_ms(LEASE_MS as u64 + 1);
        self.store.reap_expired(self.now()).await.unwrap()
    }

    /// Moves the store's clock on by `ms` milliseconds.
    fn advance_ms(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }
}

async fn pg_store(url: &str, clock: &ManualClock) -> PgStore {
    let options = PgConnectOptions::from_str(url).unwrap();
    PgStore::connect_with_clock(options, PgOptions::default(), clock.shared())
        .await
        .unwrap()
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipelet.db");
    let clock = ManualClock::new();
    let store = Arc::new(
        SqliteStore::open_with_clock(&path, clock.shared())
            .await
            .unwrap(),
    );
    Fixture {
        store,
        backend: Backend::Sqlite { _dir: dir, path },
        clock,
    }
}

async fn postgres() -> Option<Fixture> {
    let db = crate::support::pg_db()?;
    let clock = ManualClock::new();
    let store = Arc::new(pg_store(&db.url, &clock).await);
    Some(Fixture {
        store,
        backend: Backend::Postgres(db),
        clock,
    })
}

/// Generates `sqlite::<name>` and `postgres::<name>` tests from `async fn <name>(&Fixture)`.
macro_rules! conformance {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let f = super::sqlite().await;
                    super::$test(&f).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(f) = super::postgres().await else {
                        return;
                    };
                    super::$test(&f).await;
                }
            )+
        }
    };
}

conformance!(
    positions_follow_priority_then_age_per_pipeline,
    cancel_rules,
    leases_are_fenced,
    heartbeats_extend_the_lease_from_now,
    retries_then_fails_after_last_attempt,
    loaded_pipeline_is_preferred_until_another_waits_too_long,
    release_leases_of_a_previous_run,
    release_leases_of_is_an_exact_case_sensitive_prefix,
    a_failure_with_a_forced_cancel_pending_ends_cancelled,
    a_stranded_job_with_a_forced_cancel_pending_says_cancelled,
    a_failure_keeps_the_client_reason_apart_from_the_detail,
    a_lost_worker_is_not_named_to_the_client,
    ack_cancelled_needs_a_cancel_request,
    concurrent_creates_are_all_committed_in_order,
    state_and_positions_survive_reopen,
    an_unreadable_spec_is_corrupt,
    a_queued_job_this_version_cannot_read_fails_without_blocking,
    keys_are_found_by_secret_only,
    // Key management.
    keys_live_names_are_unique,
    keys_are_listed_without_secrets,
    keys_revoked_rotated_and_updated_by_name,
    keys_expire,
    keys_last_used_is_written_at_most_once_a_minute,
    // Idempotent creates.
    idempotent_creates_replay_mismatch_and_are_scoped_per_owner,
    concurrent_idempotent_creates_make_one_job,
    // History (GET /requests).
    history_is_newest_first_and_filtered,
    history_pages_are_stable_while_jobs_arrive,
    history_page_sizes_are_bounded,
    // Retention.
    retention_releases_inputs_expires_results_and_deletes_jobs,
    retention_works_in_bounded_batches_oldest_first,
    // Webhooks.
    webhook_events_are_written_with_each_state_change,
    webhook_due_keeps_each_jobs_events_in_order_and_holds_them,
    webhook_secrets_are_per_owner_stable_and_rotate,
    concurrent_webhook_due_never_hands_out_an_event_twice,
    retention_deletes_a_jobs_webhook_events,
    // Usage.
    usage_counts_each_terminal_transition_once_and_survives_retention,
    // Per-key quotas.
    queued_per_key_quota_refuses_creates_beyond_it,
    running_per_key_quota_skips_a_key_at_it,
);

/// The lease the tests take (and let run out by moving the clock on).
const LEASE_MS: i64 = 30_000;

fn claim_req(pipelines: &[Pipeline], lease_ms: i64) -> ClaimRequest {
    ClaimRequest {
        worker_id: "worker:test".into(),
        pipelines: pipelines.to_vec(),
        loaded: None,
        lease_ms,
        max_wait_for_switch_ms: 60_000,
    }
}

/// Creates `job`, which must be accepted.
async fn created(s: &dyn Store, job: NewJob) -> JobRecord {
    s.create_job(job).await.unwrap().job
}

/// Leases the next job of `pipeline` for `lease_ms`; there must be one.
async fn claim_one(s: &dyn Store, pipeline: Pipeline, lease_ms: i64) -> Lease {
    s.claim(&claim_req(&[pipeline], lease_ms))
        .await
        .unwrap()
        .expect("a queued job to claim")
}

async fn position(store: &dyn Store, id: Uuid) -> Option<u64> {
    store.job_status(id).await.unwrap().unwrap().1
}

async fn positions_follow_priority_then_age_per_pipeline(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let b = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let c = s.create_job(new_job(Pipeline::T2v, 10)).await.unwrap();
    let d = s.create_job(new_job(Pipeline::I2v, 0)).await.unwrap();
    // The create answers the position as of its commit, in the same call.
    let at_create: Vec<u64> = [&a, &b, &c, &d].iter().map(|j| j.position).collect();
    assert_eq!(at_create, [0, 1, 0, 0]);
    assert_eq!(
        a.job.spec,
        pipelet_api::JobSpec::sample("p"),
        "the spec round-trips"
    );
    assert_eq!(a.state, JobState::Queued);
    assert!(b.seq > a.seq);
    assert_eq!(position(s, c.id).await, Some(0));
    assert_eq!(position(s, a.id).await, Some(1));
    assert_eq!(position(s, b.id).await, Some(2));
    assert_eq!(position(s, d.id).await, Some(0));
    assert_eq!(s.queued_total(), 4);

    let lease = claim_one(s, Pipeline::T2v, 30_000).await;
    assert_eq!(lease.job.id, c.id, "highest priority first");
    assert_eq!(lease.job.state, JobState::Running);
    assert_eq!(lease.job.attempt, 1);
    assert_eq!(position(s, a.id).await, Some(0));
    assert_eq!(position(s, b.id).await, Some(1));
    assert_eq!(position(s, c.id).await, None);
    let next = claim_one(s, Pipeline::T2v, 30_000).await;
    assert_eq!(next.job.id, a.id, "then age");
}

/// Overwrites a job's stored spec behind the store's back, as an incompatible version
/// would have written it.
async fn spoil_spec(f: &Fixture, id: uuid::Uuid, spoil: &str) {
    use sqlx::Connection;
    match &f.backend {
        Backend::Sqlite { path, .. } => {
            let url = format!("sqlite://{}", path.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("UPDATE jobs SET spec = ? WHERE id = ?")
                .bind(spoil)
                .bind(id.to_string())
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Backend::Postgres(db) => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query("UPDATE jobs SET spec = $1 WHERE id = $2::uuid")
                .bind(spoil)
                .bind(id.to_string())
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// A queued job whose spec this version cannot read (written by an incompatible
/// version) is failed when the store opens, with a status that still reads, and the jobs
/// behind it are claimed as usual: it never blocks the queue.
async fn a_queued_job_this_version_cannot_read_fails_without_blocking(f: &Fixture) {
    let spoiled = created(f.store.as_ref(), new_job(Pipeline::T2v, 5)).await;
    let next = created(f.store.as_ref(), new_job(Pipeline::T2v, 0)).await;
    spoil_spec(f, spoiled.id, r#"{"prompt": "a cat", "width": "wide"}"#).await;
    let store = f.reopen().await;
    let failed = store.get_job(spoiled.id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("the job's stored settings cannot be read by this server version")
    );
    assert_eq!(failed.spec.prompt, "a cat");
    assert!(
        failed
            .error_detail
            .as_deref()
            .unwrap_or_default()
            .contains("\"wide\""),
        "{:?}",
        failed.error_detail
    );
    let lease = claim_one(store.as_ref(), Pipeline::T2v, 30_000).await;
    assert_eq!(lease.job.id, next.id);
}

/// The spec is decoded once, where a row becomes a record: a row whose spec this
/// version cannot read is `Corrupt`, not a record with a half-read spec.
async fn an_unreadable_spec_is_corrupt(f: &Fixture) {
    let job = created(f.store.as_ref(), new_job(Pipeline::T2v, 0)).await;
    // Finished, so the SQLite store does not load it into memory when it opens.
    let cancelled = f.store.cancel(job.id, false, "test").await.unwrap();
    assert_eq!(cancelled, CancelOutcome::Cancelled);
    spoil_spec(f, job.id, r#"{"prompt": 7}"#).await;
    // A fresh store, so nothing is answered from memory.
    let store = f.reopen().await;
    let read = store.get_job(job.id).await;
    assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
}

async fn cancel_rules(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let b = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    assert_eq!(
        s.cancel(a.id, false, "me").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        s.cancel(a.id, false, "me").await.unwrap(),
        CancelOutcome::AlreadyCancelled
    );
    assert_eq!(position(s, b.id).await, Some(0));
    let job = s.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.cancelled_by.as_deref(), Some("me"));
    assert!(job.finished_at_ms.is_some());

    let lease = claim_one(s, Pipeline::T2v, 30_000).await;
    assert_eq!(
        s.cancel(b.id, false, "me").await.unwrap(),
        CancelOutcome::NotCancellable(JobState::Running)
    );
    assert_eq!(
        s.cancel(b.id, true, "me").await.unwrap(),
        CancelOutcome::StopRequested
    );
    let hb = s.heartbeat(&lease.lease, None, 30_000).await.unwrap();
    assert!(hb.cancel_requested);
    s.ack_cancelled(&lease.lease).await.unwrap();
    assert_eq!(
        s.get_job(b.id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert!(matches!(
        s.cancel(Uuid::new_v4(), false, "me").await,
        Err(StoreError::NotFound)
    ));
    // Finished jobs cannot be cancelled, even by force.
    let c = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let lease = claim_one(s, Pipeline::T2v, 30_000).await;
    s.complete(&lease.lease, &result()).await.unwrap();
    assert_eq!(
        s.cancel(c.id, true, "me").await.unwrap(),
        CancelOutcome::NotCancellable(JobState::Completed)
    );
}

fn result() -> JobResult {
    crate::support::result_at("results/x.mp4")
}

async fn leases_are_fenced(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let first = claim_one(s, Pipeline::T2v, 30_000).await;
    assert_eq!(first.expires_at_ms, f.now() + 30_000);
    // The lease is live up to its last millisecond, and reaped once it has passed.
    f.advance_ms(30_000);
    assert!(s.reap_expired(f.now()).await.unwrap().is_empty());
    f.advance_ms(1);
    let reaped = s.reap_expired(f.now()).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].outcome, ReapOutcome::Requeued);
    let (job, pos) = s.job_status(a.id).await.unwrap().unwrap();
    assert_eq!((job.state, pos), (JobState::Queued, Some(0)));
    assert_eq!(
        job.error.as_deref(),
        Some("the worker stopped responding (attempt 1 of 3)")
    );
    assert!(
        job.error_detail
            .as_deref()
            .unwrap_or("")
            .contains("lease expired"),
        "{job:?}"
    );

    let second = claim_one(s, Pipeline::T2v, 30_000).await;
    assert!(second.lease.token > first.lease.token);
    assert_eq!(second.job.attempt, 2);
    // The zombie's calls are refused and change nothing.
    assert!(matches!(
        s.heartbeat(&first.lease, None, 30_000).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        s.complete(&first.lease, &result()).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        s.fail(&first.lease, &Failure::plain("x"), false).await,
        Err(StoreError::LeaseLost)
    ));
    assert_eq!(
        s.get_job(a.id).await.unwrap().unwrap().state,
        JobState::Running
    );

    let progress = ProgressUpdate { done: 3, total: 10 };
    s.heartbeat(&second.lease, Some(progress), 30_000)
        .await
        .unwrap();
    assert_eq!(
        s.get_job(a.id).await.unwrap().unwrap().progress,
        Some(progress)
    );
    s.complete(&second.lease, &result()).await.unwrap();
    let done = s.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(result()));
    assert!(matches!(
        s.complete(&second.lease, &result()).await,
        Err(StoreError::LeaseLost)
    ));
}

async fn heartbeats_extend_the_lease_from_now(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let lease = claim_one(s, Pipeline::T2v, 10_000).await;
    // Heartbeats every 6 s keep a 10 s lease alive well past its first expiry.
    for _ in 0..5 {
        f.advance_ms(6_000);
        let reply = s.heartbeat(&lease.lease, None, 10_000).await.unwrap();
        assert_eq!(reply.expires_at_ms, f.now() + 10_000);
        assert!(s.reap_expired(f.now()).await.unwrap().is_empty());
    }
    assert_eq!(
        s.get_job(a.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    // Once they stop, the lease runs out 10 s after the last one.
    f.advance_ms(10_000);
    assert!(s.reap_expired(f.now()).await.unwrap().is_empty());
    f.advance_ms(1);
    let reaped = s.reap_expired(f.now()).await.unwrap();
    assert_eq!(reaped.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a.id]);
    assert!(matches!(
        s.heartbeat(&lease.lease, None, 10_000).await,
        Err(StoreError::LeaseLost)
    ));
}

async fn retries_then_fails_after_last_attempt(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::I2v, 0)).await.unwrap();
    for attempt in 1..=3u32 {
        let lease = claim_one(s, Pipeline::I2v, 30_000).await;
        assert_eq!(lease.job.attempt, attempt);
        let outcome = s
            .fail(&lease.lease, &Failure::plain("runner crashed"), true)
            .await
            .unwrap();
        let expected = if attempt < 3 {
            FailOutcome::Requeued
        } else {
            FailOutcome::Failed
        };
        assert_eq!(outcome, expected);
    }
    let job = s.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.as_deref(), Some("runner crashed"));
    assert!(
        s.claim(&claim_req(&[Pipeline::I2v], 30_000))
            .await
            .unwrap()
            .is_none()
    );

    // A permanent error fails at once.
    let b = s.create_job(new_job(Pipeline::I2v, 0)).await.unwrap();
    let lease = claim_one(s, Pipeline::I2v, 30_000).await;
    assert_eq!(
        s.fail(&lease.lease, &Failure::plain("bad image"), false)
            .await
            .unwrap(),
        FailOutcome::Failed
    );
    assert_eq!(
        s.get_job(b.id).await.unwrap().unwrap().state,
        JobState::Failed
    );

    // Reaping after the last attempt fails the job with a clear reason.
    let c = s.create_job(new_job(Pipeline::I2v, 0)).await.unwrap();
    for _ in 0..3 {
        claim_one(s, Pipeline::I2v, LEASE_MS).await;
        f.reap_after_expiry().await;
    }
    let job = s.get_job(c.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error.as_deref(),
        Some("the worker stopped responding; retried 2 times")
    );
    let detail = job.error_detail.unwrap_or_default();
    assert!(detail.contains("gave up after 3 attempts"), "{detail}");
}

async fn loaded_pipeline_is_preferred_until_another_waits_too_long(f: &Fixture) {
    let s = f.store.as_ref();
    let i2v = s.create_job(new_job(Pipeline::I2v, 0)).await.unwrap();
    let t2v = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let mut req = claim_req(&[Pipeline::T2v, Pipeline::I2v], 30_000);
    req.loaded = Some(Pipeline::T2v);
    let lease = s.claim(&req).await.unwrap().unwrap();
    assert_eq!(lease.job.id, t2v.id, "older i2v waits while t2v is loaded");

    let t2v2 = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    req.max_wait_for_switch_ms = -1;
    let lease = s.claim(&req).await.unwrap().unwrap();
    assert_eq!(lease.job.id, i2v.id, "a job that waited too long wins");
    req.loaded = None;
    let lease = s.claim(&req).await.unwrap().unwrap();
    assert_eq!(lease.job.id, t2v2.id);
}

async fn release_leases_of_a_previous_run(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let b = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let mut req = claim_req(&[Pipeline::T2v], 30_000);
    req.worker_id = "local:old/0".into();
    s.claim(&req).await.unwrap().unwrap();
    req.worker_id = "worker:remote".into();
    s.claim(&req).await.unwrap().unwrap();
    assert_eq!(s.release_leases_of("local:").await.unwrap(), 1);
    assert_eq!(position(s, a.id).await, Some(0));
    assert_eq!(
        s.get_job(b.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    // `_` and `%` in the prefix are plain characters.
    assert_eq!(s.release_leases_of("worker_").await.unwrap(), 0);
}

async fn release_leases_of_is_an_exact_case_sensitive_prefix(f: &Fixture) {
    let s = f.store.as_ref();
    let owners = ["local:old/0", "Local:old/1", "wörker:É/2", "50%_off/3"];
    let mut jobs = Vec::new();
    for owner in owners {
        let job = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
        let mut req = claim_req(&[Pipeline::T2v], 30_000);
        req.worker_id = owner.into();
        let lease = s.claim(&req).await.unwrap().unwrap();
        assert_eq!(lease.job.id, job.id);
        jobs.push(job.id);
    }
    let state = |i: usize| {
        let id = jobs[i];
        async move { s.get_job(id).await.unwrap().unwrap().state }
    };
    // Neither ASCII nor non-ASCII case folds; no wildcards.
    for prefix in [
        "LOCAL:",
        "local:OLD",
        "WÖRKER:",
        "wörker:é",
        "%",
        "_",
        "50_",
        "local:old/0/",
    ] {
        assert_eq!(s.release_leases_of(prefix).await.unwrap(), 0, "{prefix:?}");
    }
    for i in 0..owners.len() {
        assert_eq!(state(i).await, JobState::Running);
    }
    assert_eq!(s.release_leases_of("local:").await.unwrap(), 1);
    assert_eq!(state(0).await, JobState::Queued);
    assert_eq!(state(1).await, JobState::Running);
    assert_eq!(s.release_leases_of("wörker:É").await.unwrap(), 1);
    assert_eq!(state(2).await, JobState::Queued);
    assert_eq!(s.release_leases_of("50%_").await.unwrap(), 1);
    assert_eq!(state(3).await, JobState::Queued);
    // The whole owner is a prefix of itself; the empty prefix matches every owner.
    assert_eq!(s.release_leases_of("Local:old/1").await.unwrap(), 1);
    let c = s.create_job(new_job(Pipeline::I2v, 0)).await.unwrap();
    claim_one(s, Pipeline::I2v, 30_000).await;
    assert_eq!(s.release_leases_of("").await.unwrap(), 1);
    assert_eq!(position(s, c.id).await, Some(0));
}

async fn a_failure_with_a_forced_cancel_pending_ends_cancelled(f: &Fixture) {
    let s = f.store.as_ref();
    for retryable in [true, false] {
        let job = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
        let lease = claim_one(s, Pipeline::T2v, 30_000).await;
        assert_eq!(
            s.cancel(job.id, true, "me").await.unwrap(),
            CancelOutcome::StopRequested
        );
        assert_eq!(
            s.fail(&lease.lease, &Failure::plain("runner crashed"), retryable)
                .await
                .unwrap(),
            FailOutcome::Cancelled,
            "retryable = {retryable}"
        );
        let (job, pos) = s.job_status(job.id).await.unwrap().unwrap();
        assert_eq!((job.state, pos), (JobState::Cancelled, None));
        assert_eq!(job.cancelled_by.as_deref(), Some("me"));
        assert_eq!(job.error.as_deref(), Some("runner crashed"));
        assert!(job.finished_at_ms.is_some());
        assert_eq!(s.queued_total(), 0);
        assert!(matches!(
            s.fail(&lease.lease, &Failure::plain("again"), retryable)
                .await,
            Err(StoreError::LeaseLost)
        ));
    }
}

async fn a_stranded_job_with_a_forced_cancel_pending_says_cancelled(f: &Fixture) {
    let s = f.store.as_ref();
    // Reaped: the lease expired after the cancel request.
    let a = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    claim_one(s, Pipeline::T2v, LEASE_MS).await;
    s.cancel(a.id, true, "me").await.unwrap();
    let reaped = f.reap_after_expiry().await;
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].outcome, ReapOutcome::Cancelled);
    let job = s.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.cancelled_by.as_deref(), Some("me"));
    let error = job.error.unwrap();
    assert!(
        error.starts_with("cancelled: the worker stopped"),
        "{error}"
    );
    assert!(!error.contains("worker:test"), "{error}");
    let detail = job.error_detail.unwrap();
    assert!(detail.starts_with("cancelled: lease expired"), "{detail}");
    assert!(!detail.contains("re-queued"), "{detail}");

    // Released: the server restarted after the cancel request.
    let b = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let mut req = claim_req(&[Pipeline::T2v], 30_000);
    req.worker_id = "local:old/0".into();
    s.claim(&req).await.unwrap().unwrap();
    s.cancel(b.id, true, "me").await.unwrap();
    assert_eq!(s.release_leases_of("local:").await.unwrap(), 1);
    let (job, pos) = s.job_status(b.id).await.unwrap().unwrap();
    assert_eq!((job.state, pos), (JobState::Cancelled, None));
    let error = job.error.unwrap();
    assert!(error.starts_with("cancelled: "), "{error}");
    assert!(error.contains("server restarted"), "{error}");
    assert!(!error.contains("local:old"), "{error}");
    let detail = job.error_detail.unwrap();
    assert!(detail.contains("holder local:old/0"), "{detail}");
    assert!(!detail.contains("re-queued"), "{detail}");
    assert_eq!(s.queued_total(), 0);
}

async fn a_failure_keeps_the_client_reason_apart_from_the_detail(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let mut req = claim_req(&[Pipeline::T2v], 30_000);
    req.worker_id = "worker:gpu-1/vm-3389".into();
    let lease = s.claim(&req).await.unwrap().unwrap();
    let failure = Failure::new(
        "the video could not be written",
        "cannot write /var/lib/pipelet/scratch/x.mp4: disk full",
    );
    assert_eq!(
        s.fail(&lease.lease, &failure, true).await.unwrap(),
        FailOutcome::Requeued
    );
    let (job, _) = s.job_status(a.id).await.unwrap().unwrap();
    assert_eq!(job.error.as_deref(), Some("the video could not be written"));
    assert_eq!(
        job.error_detail.as_deref(),
        Some(
            "cannot write /var/lib/pipelet/scratch/x.mp4: disk full (holder \
             worker:gpu-1/vm-3389, attempt 1 of 3)"
        )
    );
    // A later failure replaces both texts; without a detail the reason stands in.
    let lease = s.claim(&req).await.unwrap().unwrap();
    s.fail(&lease.lease, &Failure::plain("bad image"), false)
        .await
        .unwrap();
    let job = s.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.as_deref(), Some("bad image"));
    assert_eq!(
        job.error_detail.as_deref(),
        Some("bad image (holder worker:gpu-1/vm-3389, attempt 2 of 3)")
    );
    // Both survive a restart (they are columns, not memory).
    let reopened = f.reopen().await;
    assert_eq!(reopened.get_job(a.id).await.unwrap().unwrap(), job);
}

async fn a_lost_worker_is_not_named_to_the_client(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let mut req = claim_req(&[Pipeline::T2v], LEASE_MS);
    req.worker_id = "worker:gpu-1/vm-3389".into();
    for attempt in 1..=3u32 {
        s.claim(&req).await.unwrap().unwrap();
        let reaped = f.reap_after_expiry().await;
        assert_eq!(reaped.len(), 1);
        let job = s.get_job(a.id).await.unwrap().unwrap();
        let (error, detail) = (job.error.unwrap(), job.error_detail.unwrap());
        assert!(!error.contains("gpu-1"), "{error}");
        assert!(!error.contains("holder"), "{error}");
        assert!(detail.contains("holder worker:gpu-1/vm-3389"), "{detail}");
        if attempt < 3 {
            assert_eq!(
                error,
                format!("the worker stopped responding (attempt {attempt} of 3)")
            );
        } else {
            assert_eq!(job.state, JobState::Failed);
            assert_eq!(error, "the worker stopped responding; retried 2 times");
        }
    }
}

async fn ack_cancelled_needs_a_cancel_request(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let lease = claim_one(s, Pipeline::T2v, 30_000).await;
    let before = s.get_job(a.id).await.unwrap().unwrap();
    assert!(matches!(
        s.ack_cancelled(&lease.lease).await,
        Err(StoreError::InvalidState(JobState::Running))
    ));
    // Refused and nothing changed: the lease is still good.
    assert_eq!(s.get_job(a.id).await.unwrap().unwrap(), before);
    let hb = s.heartbeat(&lease.lease, None, 30_000).await.unwrap();
    assert!(!hb.cancel_requested);
    // Stale and unknown leases are refused as before.
    let stale = LeaseRef {
        job_id: a.id,
        token: lease.lease.token + 1,
    };
    assert!(matches!(
        s.ack_cancelled(&stale).await,
        Err(StoreError::LeaseLost)
    ));
    let unknown = LeaseRef {
        job_id: Uuid::new_v4(),
        token: 1,
    };
    assert!(matches!(
        s.ack_cancelled(&unknown).await,
        Err(StoreError::NotFound)
    ));
    // Once a cancel is requested, the acknowledgement ends the job CANCELLED.
    s.cancel(a.id, true, "me").await.unwrap();
    s.ack_cancelled(&lease.lease).await.unwrap();
    let job = s.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.cancelled_by.as_deref(), Some("me"));
    assert_eq!(job.lease_owner, None);
    assert!(matches!(
        s.ack_cancelled(&lease.lease).await,
        Err(StoreError::LeaseLost)
    ));
}

async fn concurrent_creates_are_all_committed_in_order(f: &Fixture) {
    let mut handles = Vec::new();
    for _ in 0..300 {
        let store = f.store.clone();
        handles.push(tokio::spawn(async move {
            store.create_job(new_job(Pipeline::T2v, 0)).await.unwrap()
        }));
    }
    let mut jobs = Vec::new();
    for h in handles {
        jobs.push(h.await.unwrap());
    }
    jobs.sort_by_key(|j| j.seq);
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(position(f.store.as_ref(), job.id).await, Some(i as u64));
    }
    let counts = f.store.job_counts().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].count, 300);
    assert_eq!(f.store.list_jobs(Some("owner"), 5).await.unwrap().len(), 5);
    assert_eq!(f.store.list_jobs(Some("other"), 5).await.unwrap().len(), 0);
}

async fn state_and_positions_survive_reopen(f: &Fixture) {
    let s = f.store.as_ref();
    let a = s.create_job(new_job(Pipeline::T2v, 5)).await.unwrap();
    let b = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    let c = s.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    s.cancel(b.id, false, "me").await.unwrap();
    let (key, secret) = s
        .create_key(NewKey {
            name: "k".into(),
            role: Role::Client,
            max_priority: 3,
            expires_at_ms: None,
        })
        .await
        .unwrap();
    let reopened = f.reopen().await;
    assert_eq!(position(reopened.as_ref(), a.id).await, Some(0));
    assert_eq!(position(reopened.as_ref(), c.id).await, Some(1));
    assert_eq!(
        reopened.get_job(b.id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(
        reopened.find_key_by_secret(&secret).await.unwrap(),
        Some(key)
    );
}

async fn keys_are_found_by_secret_only(f: &Fixture) {
    let s = f.store.as_ref();
    assert_eq!(s.count_keys().await.unwrap(), 0);
    let (key, secret) = s
        .create_key(NewKey {
            name: "ops".into(),
            role: Role::Admin,
            max_priority: 100,
            expires_at_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(key.role, Role::Admin);
    assert_eq!(s.count_keys().await.unwrap(), 1);
    assert_eq!(s.find_key_by_secret(&secret).await.unwrap(), Some(key));
    assert_eq!(s.find_key_by_secret("plt_wrong").await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// Key management: names, listing, revoke, rotate, update, expiry, last use
// ---------------------------------------------------------------------------------------

/// A key named `name` with `role`, that expires at `expires_at_ms`.
fn new_key(name: &str, role: Role, expires_at_ms: Option<i64>) -> NewKey {
    NewKey {
        name: name.into(),
        role,
        max_priority: 5,
        expires_at_ms,
    }
}

async fn keys_live_names_are_unique(f: &Fixture) {
    let s = f.store.as_ref();
    s.create_key(new_key("ci", Role::Client, None))
        .await
        .unwrap();
    let taken = s.create_key(new_key("ci", Role::Admin, None)).await;
    assert!(
        matches!(&taken, Err(StoreError::KeyNameTaken(n)) if n == "ci"),
        "{taken:?}"
    );
    // Once revoked, the name is free again.
    s.revoke_key("ci").await.unwrap();
    let (again, _) = s
        .create_key(new_key("ci", Role::Worker, None))
        .await
        .unwrap();
    assert_eq!(again.role, Role::Worker);
    assert_eq!(s.count_keys().await.unwrap(), 1);
    assert_eq!(s.list_keys().await.unwrap().len(), 2);
}

async fn keys_are_listed_without_secrets(f: &Fixture) {
    let s = f.store.as_ref();
    let (a, secret_a) = s
        .create_key(new_key("a", Role::Client, None))
        .await
        .unwrap();
    f.advance_ms(5);
    let expiry = f.now() + 60_000;
    let (b, _) = s
        .create_key(new_key("b", Role::Admin, Some(expiry)))
        .await
        .unwrap();
    assert_eq!(a.prefix.len(), 8);
    assert_eq!(
        &secret_a[4..12],
        a.prefix,
        "the prefix is the secret's start"
    );
    assert_eq!(b.expires_at_ms, Some(expiry));
    let listed = s.list_keys().await.unwrap();
    assert_eq!(
        listed,
        vec![a.clone(), b.clone()],
        "oldest first, as created"
    );
    assert!(
        listed
            .iter()
            .all(|k| k.last_used_at_ms.is_none() && k.revoked_at_ms.is_none())
    );
}

async fn keys_revoked_rotated_and_updated_by_name(f: &Fixture) {
    let s = f.store.as_ref();
    let (key, old) = s
        .create_key(new_key("svc", Role::Client, None))
        .await
        .unwrap();
    let generation = s.key_generation().await.unwrap();

    // Rotate: same id, name and role; the old secret is dead at once.
    let (rotated, new) = s.rotate_key("svc").await.unwrap();
    assert_ne!(new, old);
    assert_eq!(
        (&rotated.id, &rotated.name, rotated.role),
        (&key.id, &key.name, key.role)
    );
    assert_ne!(rotated.prefix, key.prefix);
    assert_eq!(s.find_key_by_secret(&old).await.unwrap(), None);
    assert_eq!(
        s.find_key_by_secret(&new).await.unwrap().unwrap().id,
        key.id
    );
    let after_rotate = s.key_generation().await.unwrap();
    assert_ne!(
        after_rotate, generation,
        "a rotation changes the generation"
    );

    // Update: the cap and the expiry, each alone.
    let updated = s
        .update_key(
            "svc",
            KeyUpdate {
                max_priority: Some(42),
                expires_at_ms: Some(Some(f.now() + 1_000)),
                ..KeyUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.max_priority, 42);
    assert_eq!(updated.expires_at_ms, Some(f.now() + 1_000));
    let cleared = s
        .update_key(
            "svc",
            KeyUpdate {
                max_priority: None,
                expires_at_ms: Some(None),
                ..KeyUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((cleared.max_priority, cleared.expires_at_ms), (42, None));
    let after_update = s.key_generation().await.unwrap();
    assert_ne!(
        after_update, after_rotate,
        "an update changes the generation"
    );

    // Revoke: the secret is refused, the record stays listed as revoked.
    let revoked = s.revoke_key("svc").await.unwrap();
    assert_eq!(revoked.revoked_at_ms, Some(f.now()));
    assert_eq!(s.find_key_by_secret(&new).await.unwrap(), None);
    assert_ne!(s.key_generation().await.unwrap(), after_update);
    assert_eq!(s.count_keys().await.unwrap(), 0);

    // No live key by that name any more (nor by a name never used).
    for name in ["svc", "nobody"] {
        assert!(matches!(
            s.revoke_key(name).await,
            Err(StoreError::KeyNotFound(_))
        ));
        assert!(matches!(
            s.rotate_key(name).await,
            Err(StoreError::KeyNotFound(_))
        ));
        let update = s.update_key(name, KeyUpdate::default()).await;
        assert!(
            matches!(update, Err(StoreError::KeyNotFound(_))),
            "{update:?}"
        );
    }
}

async fn keys_expire(f: &Fixture) {
    let s = f.store.as_ref();
    let (_, secret) = s
        .create_key(new_key("temp", Role::Client, Some(f.now() + 1_000)))
        .await
        .unwrap();
    assert!(s.find_key_by_secret(&secret).await.unwrap().is_some());
    f.advance_ms(1_000);
    assert_eq!(
        s.find_key_by_secret(&secret).await.unwrap(),
        None,
        "expired"
    );
    // Extending it brings it back.
    s.update_key(
        "temp",
        KeyUpdate {
            max_priority: None,
            expires_at_ms: Some(None),
            ..KeyUpdate::default()
        },
    )
    .await
    .unwrap();
    assert!(s.find_key_by_secret(&secret).await.unwrap().is_some());
}

async fn keys_last_used_is_written_at_most_once_a_minute(f: &Fixture) {
    let s = f.store.as_ref();
    let (_, secret) = s
        .create_key(new_key("poller", Role::Client, None))
        .await
        .unwrap();
    let last_used = || async { s.list_keys().await.unwrap()[0].last_used_at_ms };
    assert_eq!(last_used().await, None);
    let first = f.now();
    s.find_key_by_secret(&secret).await.unwrap().unwrap();
    assert_eq!(last_used().await, Some(first));
    // Polls within the minute are not written.
    for _ in 0..5 {
        f.advance_ms(10_000);
        s.find_key_by_secret(&secret).await.unwrap().unwrap();
    }
    assert_eq!(last_used().await, Some(first));
    f.advance_ms(10_000);
    s.find_key_by_secret(&secret).await.unwrap().unwrap();
    assert_eq!(
        last_used().await,
        Some(f.now()),
        "a minute on, it is written again"
    );
}

// ---------------------------------------------------------------------------------------
// History: keyset pages of list_jobs_page
// ---------------------------------------------------------------------------------------

fn owned_job(owner: &str, pipeline: Pipeline) -> NewJob {
    NewJob {
        owner_key_id: owner.into(),
        ..new_job(pipeline, 0)
    }
}

fn history(owner: Option<&str>, limit: u32) -> JobListQuery {
    JobListQuery {
        owner_key_id: owner.map(str::to_string),
        limit,
        ..Default::default()
    }
}

fn ids(jobs: &[JobRecord]) -> Vec<Uuid> {
    jobs.iter().map(|j| j.id).collect()
}

/// Every page of `query`, in order, following `next` until the last one.
async fn all_pages(s: &dyn Store, mut query: JobListQuery) -> Vec<JobRecord> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = s.list_jobs_page(&query).await.unwrap();
        out.extend(page.jobs);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return out,
        }
    }
    panic!("history never reached its last page");
}

/// A new client key named `name`.
async fn client_key(s: &dyn Store, name: &str) -> KeyRecord {
    let key = NewKey {
        name: name.into(),
        role: Role::Client,
        max_priority: 0,
        expires_at_ms: None,
    };
    s.create_key(key).await.unwrap().0
}

async fn history_is_newest_first_and_filtered(f: &Fixture) {
    let s = f.store.as_ref();
    let alice = client_key(s, "alice").await;
    // A second key with the same name once the first is revoked: `owner_key_name` finds
    // both.
    s.revoke_key("alice").await.unwrap();
    let alice2 = client_key(s, "alice").await;
    let mut mine = Vec::new();
    for i in 0..6 {
        let pipeline = if i % 2 == 0 {
            Pipeline::T2v
        } else {
            Pipeline::I2v
        };
        mine.push(s.create_job(owned_job(&alice.id, pipeline)).await.unwrap());
        s.create_job(owned_job("someone-else", Pipeline::T2v))
            .await
            .unwrap();
    }
    let rotated = s
        .create_job(owned_job(&alice2.id, Pipeline::T2v))
        .await
        .unwrap();
    s.cancel(mine[1].id, false, "me").await.unwrap();
    s.cancel(mine[4].id, false, "me").await.unwrap();

    let newest_first: Vec<Uuid> = mine.iter().rev().map(|j| j.id).collect();
    let page = s
        .list_jobs_page(&history(Some(&alice.id), 20))
        .await
        .unwrap();
    assert_eq!(
        ids(&page.jobs),
        newest_first,
        "only the owner's jobs, newest first"
    );
    assert_eq!(page.next, None, "one page holds them all");
    assert_eq!(
        page.jobs[0].state,
        JobState::Queued,
        "the rows are whole jobs"
    );

    let everyone = s.list_jobs_page(&history(None, 100)).await.unwrap();
    assert_eq!(everyone.jobs.len(), 13, "no owner filter: every key's jobs");
    assert_eq!(everyone.jobs[0].id, rotated.id);

    let by_model = s
        .list_jobs_page(&JobListQuery {
            model_id: Some("wan22-fast-i2v".into()),
            ..history(Some(&alice.id), 20)
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&by_model.jobs),
        vec![mine[5].id, mine[3].id, mine[1].id]
    );

    let cancelled = s
        .list_jobs_page(&JobListQuery {
            state: Some(JobState::Cancelled),
            ..history(Some(&alice.id), 20)
        })
        .await
        .unwrap();
    assert_eq!(ids(&cancelled.jobs), vec![mine[4].id, mine[1].id]);
    assert!(
        cancelled
            .jobs
            .iter()
            .all(|j| j.state == JobState::Cancelled && j.finished_at_ms.is_some())
    );

    let both = s
        .list_jobs_page(&JobListQuery {
            model_id: Some("wan22-fast-i2v".into()),
            state: Some(JobState::Queued),
            ..history(Some(&alice.id), 20)
        })
        .await
        .unwrap();
    assert_eq!(ids(&both.jobs), vec![mine[5].id, mine[3].id]);

    let by_name = s
        .list_jobs_page(&JobListQuery {
            owner_key_name: Some("alice".into()),
            ..history(None, 100)
        })
        .await
        .unwrap();
    let mut expected = vec![rotated.id];
    expected.extend(&newest_first);
    assert_eq!(ids(&by_name.jobs), expected, "every key named alice");

    for nobody in ["nobody", "alice\0", "' OR 1=1 --"] {
        let none = s
            .list_jobs_page(&JobListQuery {
                owner_key_name: Some(nobody.into()),
                ..history(None, 100)
            })
            .await
            .unwrap();
        assert!(none.jobs.is_empty(), "{nobody:?}");
    }
    let other = s
        .list_jobs_page(&history(Some("nobody"), 20))
        .await
        .unwrap();
    assert!(other.jobs.is_empty());
    assert_eq!(other.next, None);
}

async fn history_pages_are_stable_while_jobs_arrive(f: &Fixture) {
    let s = f.store.as_ref();
    let mut before = Vec::new();
    for _ in 0..25 {
        before.push(s.create_job(owned_job("me", Pipeline::T2v)).await.unwrap());
    }
    let mut query = history(Some("me"), 10);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = s.list_jobs_page(&query).await.unwrap();
        pages += 1;
        seen.extend(ids(&page.jobs));
        // New jobs (and a state change) between pages must not shift what follows.
        for _ in 0..3 {
            s.create_job(owned_job("me", Pipeline::T2v)).await.unwrap();
        }
        s.cancel(before[pages].id, false, "me").await.unwrap();
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<Uuid> = before.iter().rev().map(|j| j.id).collect();
    assert_eq!(
        seen, expected,
        "every job once, in order, none of the new ones"
    );

    // A fresh walk sees everything, the new jobs first.
    let all = all_pages(s, history(Some("me"), 7)).await;
    assert_eq!(all.len(), 25 + 9);
    assert_eq!(&ids(&all)[9..], &expected[..]);
}

async fn history_page_sizes_are_bounded(f: &Fixture) {
    let s = f.store.as_ref();
    for _ in 0..5 {
        s.create_job(owned_job("me", Pipeline::T2v)).await.unwrap();
    }
    // Exactly a page's worth: no empty page follows.
    let exact = s.list_jobs_page(&history(Some("me"), 5)).await.unwrap();
    assert_eq!(exact.jobs.len(), 5);
    assert_eq!(exact.next, None);

    let first = s.list_jobs_page(&history(Some("me"), 4)).await.unwrap();
    assert_eq!(first.jobs.len(), 4);
    let next = first.next.expect("a fifth job remains");
    assert_eq!(next, JobCursor::of(&first.jobs[3]));
    let rest = s
        .list_jobs_page(&JobListQuery {
            after: Some(next),
            ..history(Some("me"), 4)
        })
        .await
        .unwrap();
    assert_eq!(rest.jobs.len(), 1);
    assert_eq!(rest.next, None);

    // Zero is read as one; the cursor survives its text form.
    let one = s.list_jobs_page(&history(Some("me"), 0)).await.unwrap();
    assert_eq!(one.jobs.len(), 1);
    let cursor = JobCursor::decode(&one.next.unwrap().encode()).unwrap();
    let after_one = s
        .list_jobs_page(&JobListQuery {
            after: Some(cursor),
            ..history(Some("me"), 100)
        })
        .await
        .unwrap();
    assert_eq!(after_one.jobs.len(), 4);
    assert!(!ids(&after_one.jobs).contains(&one.jobs[0].id));
}

// Retention.

/// A job with an input blob named after its id, as the create route stores it.
fn job_with_input(pipeline: Pipeline) -> NewJob {
    let mut job = new_job(pipeline, 0);
    job.input_blob = Some(blob::Blobs::input_key(job.id));
    job
}

/// Claims the next job and completes it with a result blob named after its lease.
async fn complete_next(s: &dyn Store) -> (Uuid, String) {
    let lease = s
        .claim(&claim_req(&Pipeline::ALL, 60_000))
        .await
        .unwrap()
        .expect("a job to claim");
    let key = blob::Blobs::result_key(lease.job.id, lease.lease.token);
    let done = JobResult {
        blob: key.clone(),
        ..result()
    };
    s.complete(&lease.lease, &done).await.unwrap();
    (lease.job.id, key)
}

fn keys_of(released: &[ReleasedBlobs], id: Uuid) -> Vec<String> {
    released
        .iter()
        .filter(|r| r.job_id == id)
        .flat_map(|r| r.keys.clone())
        .collect()
}

async fn retention_releases_inputs_expires_results_and_deletes_jobs(f: &Fixture) {
    let s = f.store.as_ref();
    let completed = s.create_job(job_with_input(Pipeline::I2v)).await.unwrap();
    let (done_id, result_key) = complete_next(s).await;
    assert_eq!(done_id, completed.id);
    let cancelled = s.create_job(job_with_input(Pipeline::I2v)).await.unwrap();
    s.cancel(cancelled.id, false, "me").await.unwrap();
    let running = s.create_job(job_with_input(Pipeline::I2v)).await.unwrap();
    let lease = s.claim(&claim_req(&[Pipeline::I2v], 60_000)).await.unwrap();
    assert_eq!(lease.map(|l| l.job.id), Some(running.id));
    let queued = s.create_job(job_with_input(Pipeline::I2v)).await.unwrap();
    let later = f.now() + 1_000;

    // Nothing finished long enough ago yet.
    assert!(
        s.release_inputs(later - 3_600_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.expire_results(later - 3_600_000, later, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.delete_finished_jobs(later - 3_600_000, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Inputs: only finished jobs give theirs up, once.
    let released = s.release_inputs(later, 100).await.unwrap();
    assert_eq!(released.len(), 2, "{released:?}");
    assert_eq!(
        keys_of(&released, completed.id),
        vec![blob::Blobs::input_key(completed.id)]
    );
    assert_eq!(
        keys_of(&released, cancelled.id),
        vec![blob::Blobs::input_key(cancelled.id)]
    );
    assert!(s.release_inputs(later, 100).await.unwrap().is_empty());
    for (id, held) in [
        (completed.id, false),
        (cancelled.id, false),
        (running.id, true),
        (queued.id, true),
    ] {
        let job = s.get_job(id).await.unwrap().unwrap();
        assert_eq!(job.input_blob.is_some(), held, "{job:?}");
    }

    // Results: the job stays COMPLETED and says when its result expired.
    let expired = s.expire_results(later, later + 5, 100).await.unwrap();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(keys_of(&expired, completed.id), vec![result_key]);
    assert!(
        s.expire_results(later, later + 5, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let (job, _) = s.job_status(completed.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.result_expired_at_ms, Some(later + 5));
    assert!(job.result.is_some(), "what the video was is kept: {job:?}");
    let reopened = f.reopen().await;
    let job = reopened.get_job(completed.id).await.unwrap().unwrap();
    assert_eq!(job.result_expired_at_ms, Some(later + 5));

    // Rows: finished jobs go, and with them nothing more to delete (all released).
    let deleted = s.delete_finished_jobs(later, 100).await.unwrap();
    let mut gone: Vec<Uuid> = deleted.iter().map(|r| r.job_id).collect();
    gone.sort();
    let mut want = vec![completed.id, cancelled.id];
    want.sort();
    assert_eq!(gone, want);
    assert!(deleted.iter().all(|r| r.keys.is_empty()), "{deleted:?}");
    assert!(s.get_job(completed.id).await.unwrap().is_none());
    assert!(s.job_status(cancelled.id).await.unwrap().is_none());
    assert!(s.get_job(running.id).await.unwrap().is_some());
    assert_eq!(position(s, queued.id).await, Some(0));
    s.reclaim_space(1_000).await.unwrap();
}

async fn retention_works_in_bounded_batches_oldest_first(f: &Fixture) {
    let s = f.store.as_ref();
    let mut done = Vec::new();
    for _ in 0..3 {
        let job = s.create_job(job_with_input(Pipeline::I2v)).await.unwrap();
        let (id, key) = complete_next(s).await;
        assert_eq!(id, job.id);
        done.push((id, key));
        // Distinct finish times, so "oldest first" is observable.
        f.advance_ms(5);
    }
    let later = f.now() + 1_000;
    // A result that expires before its input was released takes the input with it.
    let first = s.expire_results(later, later, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        keys_of(&first, done[0].0),
        vec![blob::Blobs::input_key(done[0].0), done[0].1.clone()]
    );
    let second = s.expire_results(later, later, 1).await.unwrap();
    assert_eq!(
        second.iter().map(|r| r.job_id).collect::<Vec<_>>(),
        vec![done[1].0]
    );
    // A job deleted with its result still live gives up the result and the input.
    let deleted = s.delete_finished_jobs(later, 2).await.unwrap();
    assert_eq!(deleted.len(), 2);
    let third = s.delete_finished_jobs(later, 2).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(
        keys_of(&third, done[2].0),
        vec![blob::Blobs::input_key(done[2].0), done[2].1.clone()]
    );
    assert!(s.delete_finished_jobs(later, 2).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Idempotent creates
// ---------------------------------------------------------------------------------------

/// An `Idempotency-Key` as the server passes it at `now`: entries older than the window
/// do not count.
fn idem_at(now: i64, owner: &str, key: &str, hash: &str) -> Idempotency {
    Idempotency {
        owner: owner.into(),
        key: key.into(),
        request_hash: hash.into(),
        not_before_ms: now - IDEMPOTENCY_WINDOW_MS,
    }
}

fn job_of(owner: &str) -> NewJob {
    NewJob {
        owner_key_id: owner.into(),
        ..new_job(Pipeline::T2v, 0)
    }
}

async fn total_jobs(s: &dyn Store) -> u64 {
    s.job_counts().await.unwrap().iter().map(|c| c.count).sum()
}

async fn idempotent_creates_replay_mismatch_and_are_scoped_per_owner(f: &Fixture) {
    let s = f.store.as_ref();
    let CreateOutcome::Created(first) = s
        .create_job_idempotent(job_of("a"), idem_at(f.now(), "a", "k1", "h1"))
        .await
        .unwrap()
    else {
        panic!("the first create with a key must create");
    };
    // The same request again: the first job, and nothing new.
    let again = job_of("a");
    let again_id = again.id;
    assert_eq!(
        s.create_job_idempotent(again, idem_at(f.now(), "a", "k1", "h1"))
            .await
            .unwrap(),
        CreateOutcome::Replayed(first.id)
    );
    assert_eq!(s.get_job(again_id).await.unwrap(), None);
    // The same key for another request.
    assert_eq!(
        s.create_job_idempotent(job_of("a"), idem_at(f.now(), "a", "k1", "h2"))
            .await
            .unwrap(),
        CreateOutcome::Mismatch
    );
    assert_eq!(total_jobs(s).await, 1);
    // Another owner's key of the same name is its own.
    let CreateOutcome::Created(other) = s
        .create_job_idempotent(job_of("b"), idem_at(f.now(), "b", "k1", "h2"))
        .await
        .unwrap()
    else {
        panic!("another owner's key must create its own job");
    };
    assert_ne!(other.id, first.id);
    assert_eq!(total_jobs(s).await, 2);
    // Replays hold after the job has left the queue.
    let lease = s.claim(&claim_req(&[Pipeline::T2v], 60_000)).await.unwrap();
    assert_eq!(lease.unwrap().job.id, first.id);
    assert_eq!(
        s.create_job_idempotent(job_of("a"), idem_at(f.now(), "a", "k1", "h1"))
            .await
            .unwrap(),
        CreateOutcome::Replayed(first.id)
    );
    // Once the window has passed, the entry is ignored and replaced.
    f.advance_ms(IDEMPOTENCY_WINDOW_MS as u64 + 1);
    let CreateOutcome::Created(renewed) = s
        .create_job_idempotent(job_of("a"), idem_at(f.now(), "a", "k1", "h3"))
        .await
        .unwrap()
    else {
        panic!("an expired key must create a new job");
    };
    assert_eq!(
        s.create_job_idempotent(job_of("a"), idem_at(f.now(), "a", "k1", "h3"))
            .await
            .unwrap(),
        CreateOutcome::Replayed(renewed.id)
    );
    // Purging forgets keys created before the cut-off, and only those: first owner b's
    // key from a window ago, then the renewed one.
    assert_eq!(s.purge_idempotency_keys(f.now() - 60_000).await.unwrap(), 1);
    assert_eq!(s.purge_idempotency_keys(f.now() + 60_000).await.unwrap(), 1);
    assert!(matches!(
        s.create_job_idempotent(job_of("a"), idem_at(f.now(), "a", "k1", "h1"))
            .await
            .unwrap(),
        CreateOutcome::Created(_)
    ));
    assert_eq!(total_jobs(s).await, 4);
}

/// Concurrent creates with one key make exactly one job (on SQLite they share a
/// group-commit batch, so the batch itself must resolve them), while creates without a
/// key or with other keys in the same rush are unaffected.
async fn concurrent_idempotent_creates_make_one_job(f: &Fixture) {
    let now = f.now();
    let mut handles = Vec::new();
    for i in 0..40 {
        let store = f.store.clone();
        handles.push(tokio::spawn(async move {
            match i % 4 {
                0 => CreateOutcome::Created(store.create_job(job_of("a")).await.unwrap()),
                3 => store
                    .create_job_idempotent(
                        job_of("a"),
                        idem_at(now, "a", &format!("other-{i}"), "h"),
                    )
                    .await
                    .unwrap(),
                _ => store
                    .create_job_idempotent(job_of("a"), idem_at(now, "a", "same", "h"))
                    .await
                    .unwrap(),
            }
        }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.unwrap());
    }
    let same: Vec<_> = outcomes
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(i % 4, 1 | 2))
        .map(|(_, o)| o)
        .collect();
    assert_eq!(same.len(), 20);
    let created: Vec<Uuid> = same
        .iter()
        .filter_map(|o| match o {
            CreateOutcome::Created(job) => Some(job.id),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{same:?}");
    for o in &same {
        assert!(
            **o == CreateOutcome::Replayed(created[0]) || matches!(o, CreateOutcome::Created(_)),
            "{o:?}"
        );
    }
    // 10 without a key, 10 with keys of their own, and the one.
    assert_eq!(total_jobs(f.store.as_ref()).await, 21);
}

// ---- Webhooks ----

const HOOK: &str = "https://hooks.example.com/pipelet";

fn hooked_job(pipeline: Pipeline) -> NewJob {
    NewJob {
        webhook_url: Some(HOOK.into()),
        ..new_job(pipeline, 0)
    }
}

async fn event_types(s: &dyn Store, id: Uuid) -> Vec<WebhookEventType> {
    s.webhook_events_of(id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.event_type)
        .collect()
}

async fn webhook_events_are_written_with_each_state_change(f: &Fixture) {
    use WebhookEventType::*;
    let s = f.store.as_ref();
    let before = f.now();

    // acquired, retried (fail), retried (reaper), acquired, completed.
    let a = s.create_job(hooked_job(Pipeline::T2v)).await.unwrap();
    let plain = s.create_job(new_job(Pipeline::I2v, 0)).await.unwrap();
    assert!(
        s.webhook_events_of(a.id).await.unwrap().is_empty(),
        "none at create"
    );
    let lease = claim_one(s, Pipeline::T2v, 30_000).await;
    s.fail(
        &lease.lease,
        &Failure::new("runner crashed", "oom on gpu0"),
        true,
    )
    .await
    .unwrap();
    claim_one(s, Pipeline::T2v, LEASE_MS).await;
    f.reap_after_expiry().await;
    let lease = claim_one(s, Pipeline::T2v, 30_000).await;
    s.complete(&lease.lease, &result()).await.unwrap();
    let records = s.webhook_events_of(a.id).await.unwrap();
    let types: Vec<_> = records.iter().map(|r| r.event.event_type).collect();
    assert_eq!(
        types,
        [Acquired, Retried, Acquired, Retried, Acquired, Completed]
    );
    let mut ids = std::collections::HashSet::new();
    for r in &records {
        let e = &r.event;
        assert!(e.id.starts_with("msg_"), "{}", e.id);
        assert!(ids.insert(e.id.clone()), "event ids are unique");
        assert_eq!(e.job_id, a.id);
        assert_eq!(e.owner_key_id, "owner");
        assert_eq!(e.url, HOOK);
        assert_eq!(e.attempts, 0);
        assert_eq!(e.snapshot.model_id, a.model_id);
        assert!(e.snapshot.updated_at_ms >= before);
        assert!(e.created_at_ms >= before);
        assert_eq!(r.state, WebhookState::Pending);
        assert_eq!(r.next_attempt_at_ms, Some(e.created_at_ms), "due at once");
        assert_eq!(r.last_status, None);
    }
    assert!(records.windows(2).all(|w| w[0].event.seq < w[1].event.seq));
    let acquired = &records[0].event.snapshot;
    assert_eq!(acquired.worker_name.as_deref(), Some("worker:test"));
    assert!(
        acquired
            .lease_expiry_ms
            .is_some_and(|t| t >= before + 30_000)
    );
    assert!(acquired.acquired_at_ms.is_some_and(|t| t >= before));
    assert_eq!(acquired.error, None);
    assert_eq!(acquired.result, None);
    let retried = &records[1].event.snapshot;
    assert_eq!(
        retried.error.as_deref(),
        Some("runner crashed"),
        "the client reason only"
    );
    let completed = &records[5].event.snapshot;
    assert_eq!(completed.result, Some(result()));
    assert_eq!(completed.worker_name.as_deref(), Some("worker:test"));
    assert_eq!(completed.acquired_at_ms, lease.job.started_at_ms);
    // The worker's plain job made none.
    let l = claim_one(s, Pipeline::I2v, 30_000).await;
    assert_eq!(l.job.id, plain.id);
    s.complete(&l.lease, &result()).await.unwrap();
    assert!(s.webhook_events_of(plain.id).await.unwrap().is_empty());

    // failed (final, not retryable).
    let b = s.create_job(hooked_job(Pipeline::T2v)).await.unwrap();
    let lease = claim_one(s, Pipeline::T2v, 30_000).await;
    s.fail(&lease.lease, &Failure::new("bad input", "detail"), false)
        .await
        .unwrap();
    let records = s.webhook_events_of(b.id).await.unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| r.event.event_type)
            .collect::<Vec<_>>(),
        [Acquired, Failed]
    );
    assert_eq!(
        records[1].event.snapshot.error.as_deref(),
        Some("bad input")
    );
    assert_eq!(
        records[1].event.snapshot.worker_name.as_deref(),
        Some("worker:test")
    );

    // cancelled while queued; a forced cancel of a running job only when it stops.
    let c = s.create_job(hooked_job(Pipeline::T2v)).await.unwrap();
    s.cancel(c.id, false, "me").await.unwrap();
    assert_eq!(event_types(s, c.id).await, [Cancelled]);
    let d = s.create_job(hooked_job(Pipeline::T2v)).await.unwrap();
    let lease = claim_one(s, Pipeline::T2v, 30_000).await;
    assert_eq!(
        s.cancel(d.id, true, "me").await.unwrap(),
        CancelOutcome::StopRequested
    );
    assert_eq!(event_types(s, d.id).await, [Acquired]);
    s.ack_cancelled(&lease.lease).await.unwrap();
    assert_eq!(event_types(s, d.id).await, [Acquired, Cancelled]);

    // A previous run's in-process worker: retried.
    let e = s.create_job(hooked_job(Pipeline::T2v)).await.unwrap();
    let mut req = claim_req(&[Pipeline::T2v], 30_000);
    req.worker_id = "local:old/0".into();
    s.claim(&req).await.unwrap().unwrap();
    assert_eq!(s.release_leases_of("local:old/").await.unwrap(), 1);
    assert_eq!(event_types(s, e.id).await, [Acquired, Retried]);

    // A refused transition (stale lease) writes nothing.
    assert!(s.complete(&lease.lease, &result()).await.is_err());
    assert_eq!(event_types(s, d.id).await, [Acquired, Cancelled]);
    assert_eq!(s.webhook_pending().await.unwrap(), 6 + 2 + 1 + 2 + 2);
}

async fn webhook_due_keeps_each_jobs_events_in_order_and_holds_them(f: &Fixture) {
    use WebhookEventType::*;
    let s = f.store.as_ref();
    let a = s.create_job(hooked_job(Pipeline::T2v)).await.unwrap();
    let lease = claim_one(s, Pipeline::T2v, 30_000).await;
    s.complete(&lease.lease, &result()).await.unwrap();
    let b = s.create_job(hooked_job(Pipeline::T2v)).await.unwrap();
    s.cancel(b.id, false, "me").await.unwrap();
    let now = f.now() + 1_000;
    assert_eq!(s.webhook_pending().await.unwrap(), 3);

    // Not yet due.
    assert!(
        s.webhook_due(now - 60_000, 10, 30_000)
            .await
            .unwrap()
            .is_empty()
    );
    // Each job's first event only.
    let due = s.webhook_due(now, 10, 30_000).await.unwrap();
    let mut got: Vec<_> = due.iter().map(|e| (e.job_id, e.event_type)).collect();
    got.sort();
    let mut want = vec![(a.id, Acquired), (b.id, Cancelled)];
    want.sort();
    assert_eq!(got, want);
    let a1 = due.iter().find(|e| e.job_id == a.id).unwrap().clone();
    // Held: a second call (another loop or server) gets nothing.
    assert!(s.webhook_due(now, 10, 30_000).await.unwrap().is_empty());
    assert!(
        s.webhook_due(now + 29_999, 10, 30_000)
            .await
            .unwrap()
            .is_empty()
    );

    // A retry later: the next event of `a` still waits for it.
    s.webhook_record_attempt(
        &a1.id,
        WebhookAttempt::Retry {
            status: Some(500),
            error: "HTTP 500".into(),
            next_at_ms: now + 5_000,
        },
        now,
    )
    .await
    .unwrap();
    assert!(
        s.webhook_due(now + 4_999, 10, 30_000)
            .await
            .unwrap()
            .is_empty()
    );
    let due = s.webhook_due(now + 5_000, 10, 30_000).await.unwrap();
    assert_eq!(due.len(), 1, "b is still held: {due:?}");
    assert_eq!(due[0].id, a1.id, "the same event (same webhook-id) again");
    assert_eq!(due[0].attempts, 1);
    let records = s.webhook_events_of(a.id).await.unwrap();
    assert_eq!(records[0].state, WebhookState::Pending);
    assert_eq!(records[0].last_status, Some(500));
    assert_eq!(records[0].last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(records[0].next_attempt_at_ms, Some(now + 5_000));

    // Delivered: then `a`'s second event is due.
    s.webhook_record_attempt(
        &a1.id,
        WebhookAttempt::Delivered { status: 204 },
        now + 5_000,
    )
    .await
    .unwrap();
    let due = s.webhook_due(now + 5_000, 10, 30_000).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].job_id, due[0].event_type), (a.id, Completed));
    assert_eq!(due[0].snapshot.result, Some(result()));
    s.webhook_record_attempt(
        &due[0].id,
        WebhookAttempt::GaveUp {
            status: Some(410),
            error: "HTTP 410 Gone".into(),
        },
        now + 5_000,
    )
    .await
    .unwrap();
    let records = s.webhook_events_of(a.id).await.unwrap();
    assert_eq!(records[0].state, WebhookState::Delivered);
    assert_eq!(records[0].event.attempts, 2);
    assert_eq!(records[0].last_status, Some(204));
    assert_eq!(records[0].last_error, None);
    assert_eq!(records[0].next_attempt_at_ms, None);
    assert_eq!(records[1].state, WebhookState::GaveUp);
    assert_eq!(records[1].event.attempts, 1);
    assert_eq!(records[1].last_status, Some(410));
    assert_eq!(records[1].next_attempt_at_ms, None);
    assert_eq!(s.webhook_pending().await.unwrap(), 1, "b's event");
    // b's hold runs out: it is due again, then finished.
    assert!(
        s.webhook_due(now + 29_999, 10, 30_000)
            .await
            .unwrap()
            .is_empty()
    );
    let due = s.webhook_due(now + 30_000, 10, 30_000).await.unwrap();
    assert_eq!(due.iter().map(|e| e.job_id).collect::<Vec<_>>(), [b.id]);
    s.webhook_record_attempt(&due[0].id, WebhookAttempt::Delivered { status: 200 }, now)
        .await
        .unwrap();
    assert_eq!(s.webhook_pending().await.unwrap(), 0);
    assert!(s.webhook_due(i64::MAX / 2, 10, 1).await.unwrap().is_empty());
    // The limit holds; an unknown event is NotFound.
    assert!(matches!(
        s.webhook_record_attempt("msg_nope", WebhookAttempt::Delivered { status: 200 }, now)
            .await,
        Err(StoreError::NotFound)
    ));
    for _ in 0..3 {
        let j = s.create_job(hooked_job(Pipeline::I2v)).await.unwrap();
        s.cancel(j.id, false, "me").await.unwrap();
    }
    assert_eq!(
        s.webhook_due(now + 60_000, 2, 1_000).await.unwrap().len(),
        2
    );
    assert_eq!(
        s.webhook_due(now + 60_000, 2, 1_000).await.unwrap().len(),
        1
    );
}

async fn webhook_secrets_are_per_owner_stable_and_rotate(f: &Fixture) {
    let s = f.store.as_ref();
    let t = 1_700_000_000_000;
    let a = s.webhook_secrets("key-a", t).await.unwrap();
    assert!(a.current.starts_with("whsec_"), "{}", a.current);
    assert_eq!(a.previous, None);
    assert_eq!(
        s.webhook_secrets("key-a", t + 1).await.unwrap(),
        a,
        "stable"
    );
    let b = s.webhook_secrets("key-b", t).await.unwrap();
    assert_ne!(b.current, a.current, "per owner");

    let rotated = s.rotate_webhook_secret("key-a", t + 10).await.unwrap();
    assert_ne!(rotated.current, a.current);
    assert_eq!(rotated.previous.as_deref(), Some(a.current.as_str()));
    let day = 24 * 60 * 60 * 1000;
    assert_eq!(
        s.webhook_secrets("key-a", t + 10 + day - 1).await.unwrap(),
        rotated
    );
    let later = s.webhook_secrets("key-a", t + 10 + day).await.unwrap();
    assert_eq!(later.current, rotated.current);
    assert_eq!(later.previous, None, "the old secret stops after 24 h");
    assert_eq!(
        s.webhook_secrets("key-b", t).await.unwrap(),
        b,
        "others untouched"
    );
    // Rotating a key that never had one creates it.
    let c = s.rotate_webhook_secret("key-c", t).await.unwrap();
    assert!(c.current.starts_with("whsec_"));
    // Durable, and the same through another handle (another server).
    let other = f.reopen().await;
    assert_eq!(
        other.webhook_secrets("key-a", t + 20).await.unwrap(),
        rotated
    );
}

async fn concurrent_webhook_due_never_hands_out_an_event_twice(f: &Fixture) {
    let s = f.store.clone();
    let mut all = std::collections::HashSet::new();
    for _ in 0..40 {
        let j = s.create_job(hooked_job(Pipeline::T2v)).await.unwrap();
        s.cancel(j.id, false, "me").await.unwrap();
        all.extend(
            s.webhook_events_of(j.id)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.event.id),
        );
    }
    assert_eq!(all.len(), 40);
    let other = f.reopen().await;
    let now = f.now() + 1_000;
    let take = |store: Arc<dyn Store>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let due = store.webhook_due(now, 3, 600_000).await.unwrap();
                if due.is_empty() {
                    break got;
                }
                got.extend(due.into_iter().map(|e| e.id));
            }
        })
    };
    let handles = [
        take(s.clone()),
        take(other.clone()),
        take(s.clone()),
        take(other.clone()),
    ];
    let mut seen = Vec::new();
    for h in handles {
        seen.extend(h.await.unwrap());
    }
    seen.extend(
        s.webhook_due(now, 100, 600_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id),
    );
    let unique: std::collections::HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an event was handed out twice");
    assert_eq!(unique, all);
}

async fn retention_deletes_a_jobs_webhook_events(f: &Fixture) {
    let s = f.store.as_ref();
    let j = s.create_job(hooked_job(Pipeline::T2v)).await.unwrap();
    s.cancel(j.id, false, "me").await.unwrap();
    assert_eq!(s.webhook_events_of(j.id).await.unwrap().len(), 1);
    let deleted = s.delete_finished_jobs(f.now() + 1_000, 100).await.unwrap();
    assert_eq!(deleted.iter().map(|d| d.job_id).collect::<Vec<_>>(), [j.id]);
    assert!(s.webhook_events_of(j.id).await.unwrap().is_empty());
    assert_eq!(s.webhook_pending().await.unwrap(), 0);
}

/// A job of `owner` for model `m` (T2V).
fn usage_job(owner: &str, model: &str) -> NewJob {
    NewJob {
        owner_key_id: owner.into(),
        model_id: model.into(),
        ..new_job(Pipeline::T2v, 0)
    }
}

fn usage_query(from: i64, to: i64) -> UsageQuery {
    use pipelet_api::wire::usage::utc_day;
    UsageQuery {
        from_day: utc_day(from),
        to_day: utc_day(to),
        owner_key_id: None,
        owner_key_name: None,
    }
}

async fn usage_counts_each_terminal_transition_once_and_survives_retention(f: &Fixture) {
    use pipelet_api::wire::usage::utc_day;
    // Early in a UTC day, so a day's work (and a lease running out) stays in it.
    let day_ms: i64 = 86_400_000;
    f.advance_ms((day_ms - f.now().rem_euclid(day_ms) + 3_600_000) as u64);
    let s = f.store.as_ref();
    let key = s
        .create_key(NewKey {
            name: "acme".into(),
            role: Role::Client,
            max_priority: 0,
            expires_at_ms: None,
        })
        .await
        .unwrap()
        .0;
    let day1 = f.now();
    // Completed twice: 81 frames at 16 fps (5.062 s, in whole ms) and 1.5 s of rendering.
    for _ in 0..2 {
        s.create_job(usage_job(&key.id, "m1")).await.unwrap();
        let lease = claim_one(s, Pipeline::T2v, LEASE_MS).await;
        s.complete(&lease.lease, &result()).await.unwrap();
    }
    // Cancelled while queued; cancelled by its worker after a forced cancel.
    let queued = s.create_job(usage_job(&key.id, "m1")).await.unwrap();
    s.cancel(queued.id, false, "me").await.unwrap();
    let stopped = s.create_job(usage_job(&key.id, "m1")).await.unwrap();
    let lease = claim_one(s, Pipeline::T2v, LEASE_MS).await;
    s.cancel(stopped.id, true, "me").await.unwrap();
    s.ack_cancelled(&lease.lease).await.unwrap();
    // A retried failure counts once, when it ends; a non-retryable one at once.
    let mut retried = usage_job(&key.id, "m2");
    retried.max_attempts = 2;
    s.create_job(retried).await.unwrap();
    for expected in [FailOutcome::Requeued, FailOutcome::Failed] {
        let lease = claim_one(s, Pipeline::T2v, LEASE_MS).await;
        let failure = Failure::plain("runner crashed");
        assert_eq!(
            s.fail(&lease.lease, &failure, true).await.unwrap(),
            expected
        );
    }
    s.create_job(usage_job("other", "m1")).await.unwrap();
    let lease = claim_one(s, Pipeline::T2v, LEASE_MS).await;
    s.fail(&lease.lease, &Failure::plain("bad"), false)
        .await
        .unwrap();

    // The next day: the reaper gives up on a lost worker's last attempt.
    f.advance_ms(day_ms as u64);
    let day2 = f.now();
    let mut once = usage_job(&key.id, "m1");
    once.max_attempts = 1;
    s.create_job(once).await.unwrap();
    claim_one(s, Pipeline::T2v, LEASE_MS).await;
    let reaped = f.reap_after_expiry().await;
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].outcome, ReapOutcome::Failed);
    // Still queued or running: nothing counted.
    s.create_job(usage_job(&key.id, "m1")).await.unwrap();
    s.create_job(usage_job(&key.id, "m1")).await.unwrap();
    claim_one(s, Pipeline::T2v, LEASE_MS).await;

    let (d1, d2) = (utc_day(day1), utc_day(day2));
    let acme = || "acme".to_string();
    let expected: Vec<UsageLine> = vec![
        (d1.clone(), acme(), "m1".into(), 2, 0, 2, 10_124, 3_000),
        (d1.clone(), acme(), "m2".into(), 0, 1, 0, 0, 0),
        // A key id no key has is shown as itself.
        (d1.clone(), "other".into(), "m1".into(), 0, 1, 0, 0, 0),
        (d2.clone(), acme(), "m1".into(), 0, 1, 0, 0, 0),
    ];
    let all = usage_query(day1, day2);
    assert_eq!(usage_lines(s, &all).await, expected);

    // Ranges and filters.
    assert_eq!(
        usage_lines(s, &usage_query(day2, day2)).await,
        expected[3..].to_vec()
    );
    let own = UsageQuery {
        owner_key_id: Some("other".into()),
        ..all.clone()
    };
    assert_eq!(usage_lines(s, &own).await, expected[2..3].to_vec());
    let named = UsageQuery {
        owner_key_name: Some("acme".into()),
        ..all.clone()
    };
    let acme_rows: Vec<UsageLine> = expected.iter().filter(|r| r.1 == "acme").cloned().collect();
    assert_eq!(usage_lines(s, &named).await, acme_rows);
    let later = usage_query(day2 + day_ms, day2 + 2 * day_ms);
    assert!(usage_lines(s, &later).await.is_empty());

    // Retention deletes the finished jobs; their usage stays, also after a restart.
    let deleted = s.delete_finished_jobs(f.now(), 100).await.unwrap();
    assert_eq!(deleted.len(), 7, "{deleted:?}");
    assert_eq!(usage_lines(s, &all).await, expected);
    let reopened = f.reopen().await;
    assert_eq!(usage_lines(reopened.as_ref(), &all).await, expected);
}

// ---------------------------------------------------------------------------------------
// Per-key quotas
// ---------------------------------------------------------------------------------------

fn is_queue_full(r: &Result<Created>) -> Option<(u64, bool)> {
    match r {
        Err(StoreError::KeyQueueFull { limit, own }) => Some((*limit, *own)),
        _ => None,
    }
}

async fn queued_per_key_quota_refuses_creates_beyond_it(f: &Fixture) {
    let s = f.store.as_ref();
    let a = client_key(s, "a").await;
    let b = client_key(s, "b").await;
    // Unlimited by default.
    for _ in 0..3 {
        s.create_job(owned_job(&a.id, Pipeline::T2v)).await.unwrap();
    }
    s.set_quota_defaults(QuotaDefaults {
        max_queued: 3,
        max_running: 0,
    });
    let refused = s.create_job(owned_job(&a.id, Pipeline::T2v)).await;
    assert_eq!(is_queue_full(&refused), Some((3, false)), "{refused:?}");
    // Another key is not held back; nor are keys the store does not know.
    s.create_job(owned_job(&b.id, Pipeline::T2v)).await.unwrap();
    s.create_job(owned_job("no-such-key", Pipeline::T2v))
        .await
        .unwrap();
    // An idempotent create is refused too, and records no key (a retry may succeed).
    let idem = idem_at(f.now(), &a.id, "k1", "h");
    assert!(matches!(
        s.create_job_idempotent(owned_job(&a.id, Pipeline::T2v), idem.clone())
            .await,
        Err(StoreError::KeyQueueFull { limit: 3, .. })
    ));
    // Once one starts, there is room for one more.
    claim_one(s, Pipeline::T2v, LEASE_MS).await;
    assert!(matches!(
        s.create_job_idempotent(owned_job(&a.id, Pipeline::T2v), idem)
            .await,
        Ok(CreateOutcome::Created(_))
    ));
    assert!(is_queue_full(&s.create_job(owned_job(&a.id, Pipeline::T2v)).await).is_some());
    // The key's own quota beats the default: 0 is no limit, N is N.
    s.update_key(
        "a",
        KeyUpdate {
            max_queued: Some(Some(0)),
            ..KeyUpdate::default()
        },
    )
    .await
    .unwrap();
    s.create_job(owned_job(&a.id, Pipeline::T2v)).await.unwrap();
    s.update_key(
        "b",
        KeyUpdate {
            max_queued: Some(Some(1)),
            ..KeyUpdate::default()
        },
    )
    .await
    .unwrap();
    let refused = s.create_job(owned_job(&b.id, Pipeline::T2v)).await;
    assert_eq!(is_queue_full(&refused), Some((1, true)), "{refused:?}");
    // Concurrent creates of one key (one batch on SQLite) never overshoot.
    s.update_key(
        "b",
        KeyUpdate {
            max_queued: Some(Some(5)),
            ..KeyUpdate::default()
        },
    )
    .await
    .unwrap();
    let tries = (0..12).map(|_| s.create_job(owned_job(&b.id, Pipeline::I2v)));
    let results = futures::future::join_all(tries).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| is_queue_full(r).is_some())
        .count();
    assert_eq!((created, refused), (4, 8), "1 was queued already, so 4 fit");
    // `None` goes back to the default.
    let key = s
        .update_key(
            "b",
            KeyUpdate {
                max_queued: Some(None),
                ..KeyUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(key.max_queued, None);
}

async fn running_per_key_quota_skips_a_key_at_it(f: &Fixture) {
    let s = f.store.as_ref();
    let a = client_key(s, "a").await;
    let b = client_key(s, "b").await;
    s.set_quota_defaults(QuotaDefaults {
        max_queued: 0,
        max_running: 1,
    });
    // a may run only one job at a time.
    let a1 = created(s, owned_job(&a.id, Pipeline::T2v)).await.id;
    f.advance_ms(1);
    let a2 = created(s, owned_job(&a.id, Pipeline::T2v)).await.id;
    let first = claim_one(s, Pipeline::T2v, LEASE_MS).await;
    assert_eq!(first.job.id, a1);
    f.advance_ms(1);
    let b1 = created(s, owned_job(&b.id, Pipeline::T2v)).await.id;
    let second = claim_one(s, Pipeline::T2v, LEASE_MS).await;
    assert_eq!(second.job.id, b1, "a is at its limit: its next job waits");
    assert!(
        s.claim(&claim_req(&[Pipeline::T2v], LEASE_MS))
            .await
            .unwrap()
            .is_none(),
        "a2 waits while a1 runs"
    );
    s.complete(&first.lease, &result()).await.unwrap();
    let third = claim_one(s, Pipeline::T2v, LEASE_MS).await;
    assert_eq!(
        third.job.id, a2,
        "a's next job runs once one of its jobs ended"
    );
    // The key's own quota beats the default.
    s.update_key(
        "a",
        KeyUpdate {
            max_running: Some(Some(2)),
            ..KeyUpdate::default()
        },
    )
    .await
    .unwrap();
    let a3 = created(s, owned_job(&a.id, Pipeline::T2v)).await.id;
    let fourth = claim_one(s, Pipeline::T2v, LEASE_MS).await;
    assert_eq!(fourth.job.id, a3, "a may run two now");
    let a4 = created(s, owned_job(&a.id, Pipeline::T2v)).await.id;
    assert!(
        s.claim(&claim_req(&[Pipeline::T2v], LEASE_MS))
            .await
            .unwrap()
            .is_none()
    );
    // 0 is no limit for this key.
    s.update_key(
        "a",
        KeyUpdate {
            max_running: Some(Some(0)),
            ..KeyUpdate::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(claim_one(s, Pipeline::T2v, LEASE_MS).await.job.id, a4);
}
