//! PostgreSQL-only behaviour: several stores (servers) on one database. Claims never
//! hand one job to two workers, positions agree between servers, reapers never
//! re-queue a job twice, notifications cross servers, one reaper wins the election,
//! and servers starting together migrate once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pipelet_api::Pipeline;
use pipelet_store::postgres::{PgOptions, PgStore};
use pipelet_store::*;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::support::new_job;

fn claim_req(worker: &str, lease_ms: i64) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker.into(),
        pipelines: vec![Pipeline::T2v, Pipeline::I2v],
        loaded: None,
        lease_ms,
        max_wait_for_switch_ms: 60_000,
    }
}

async fn connect(db: &crate::support::PgDb, poll: Duration) -> Arc<PgStore> {
    let options: PgConnectOptions = db.url.parse().unwrap();
    let tuning = PgOptions {
        poll_interval: poll,
        ..PgOptions::default()
    };
    Arc::new(PgStore::connect_with(options, tuning).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_never_hand_out_a_job_twice_and_agree_on_positions() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let a = connect(&db, Duration::from_secs(1)).await;
    let b = connect(&db, Duration::from_secs(1)).await;
    let mut created = Vec::new();
    for i in 0..200 {
        let (store, pipeline) = if i % 2 == 0 {
            (&a, Pipeline::T2v)
        } else {
            (&b, Pipeline::I2v)
        };
        created.push(
            store
                .create_job(new_job(pipeline, i % 3))
                .await
                .unwrap()
                .job,
        );
    }
    // Both servers give every job the same, exact position.
    for pipeline in [Pipeline::T2v, Pipeline::I2v] {
        let mut queued: Vec<&JobRecord> =
            created.iter().filter(|j| j.pipeline == pipeline).collect();
        queued.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.seq));
        for (expected, job) in queued.iter().enumerate() {
            let pa = a.job_status(job.id).await.unwrap().unwrap().1;
            let pb = b.job_status(job.id).await.unwrap().unwrap().1;
            assert_eq!((pa, pb), (Some(expected as u64), Some(expected as u64)));
        }
    }

    let mut claimers = Vec::new();
    for n in 0..8 {
        let store: Arc<dyn Store> = if n % 2 == 0 { a.clone() } else { b.clone() };
        claimers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let req = claim_req(&format!("worker:{n}"), 60_000);
            while let Some(lease) = store.claim(&req).await.unwrap() {
                assert_eq!(lease.job.state, JobState::Running);
                got.push(lease.job.id);
            }
            got
        }));
    }
    let mut times_claimed: HashMap<Uuid, u32> = HashMap::new();
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            *times_claimed.entry(id).or_default() += 1;
        }
    }
    assert_eq!(times_claimed.len(), 200, "every job claimed");
    assert!(
        times_claimed.values().all(|&n| n == 1),
        "no job claimed twice"
    );
    for job in &created {
        let (record, pos) = a.job_status(job.id).await.unwrap().unwrap();
        assert_eq!(
            (record.state, record.attempt, pos),
            (JobState::Running, 1, None)
        );
    }
    a.close().await;
    b.close().await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reapers_requeue_each_job_once() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let a = connect(&db, Duration::from_secs(1)).await;
    let b = connect(&db, Duration::from_secs(1)).await;
    for _ in 0..40 {
        a.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    }
    while a
        .claim(&claim_req("worker:gone", -1))
        .await
        .unwrap()
        .is_some()
    {}
    let now = now_ms();
    let (ra, rb) = tokio::join!(
        tokio::spawn({
            let a = a.clone();
            async move { a.reap_expired(now).await.unwrap() }
        }),
        tokio::spawn({
            let b = b.clone();
            async move { b.reap_expired(now).await.unwrap() }
        }),
    );
    let mut reaped: Vec<Uuid> = ra.unwrap().into_iter().map(|r| r.id).collect();
    reaped.extend(rb.unwrap().into_iter().map(|r| r.id));
    let total = reaped.len();
    reaped.sort();
    reaped.dedup();
    assert_eq!(
        (total, reaped.len()),
        (40, 40),
        "each job reaped exactly once"
    );
    for id in reaped {
        let job = b.get_job(id).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Queued, 1));
    }
    assert!(a.reap_expired(now_ms()).await.unwrap().is_empty());
    a.close().await;
    b.close().await;
    drop(db);
}

#[tokio::test]
async fn notifications_wake_workers_of_other_servers() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    // Polling is slowed to a minute, so only NOTIFY can wake `b` in time.
    let a = connect(&db, Duration::from_secs(60)).await;
    let b = connect(&db, Duration::from_secs(60)).await;
    let available = b.job_available();
    let woken = available.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    a.create_job(new_job(Pipeline::T2v, 0)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), woken)
        .await
        .expect("a create on one server wakes the workers of another");

    let lease = b
        .claim(&claim_req("worker:b", 60_000))
        .await
        .unwrap()
        .unwrap();
    let woken = available.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    let failure = Failure::new("oops\0nul", "detail\0nul");
    let requeued = a.fail(&lease.lease, &failure, true).await.unwrap();
    assert_eq!(requeued, FailOutcome::Requeued);
    tokio::time::timeout(Duration::from_secs(10), woken)
        .await
        .expect("a re-queue wakes workers too");
    let job = b.get_job(lease.job.id).await.unwrap().unwrap();
    assert_eq!(
        job.error.as_deref(),
        Some("oops\u{fffd}nul"),
        "NUL is not storable"
    );
    assert_eq!(
        job.error_detail.as_deref(),
        Some("detail\u{fffd}nul (holder worker:b, attempt 1 of 3)")
    );
    a.close().await;
    b.close().await;
    drop(db);
}

#[tokio::test]
async fn queued_total_follows_other_servers_within_a_poll_interval() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let a = connect(&db, Duration::from_millis(100)).await;
    let b = connect(&db, Duration::from_millis(100)).await;
    for _ in 0..5 {
        a.create_job(new_job(Pipeline::I2v, 0)).await.unwrap();
    }
    assert_eq!(a.queued_total(), 5, "own writes count at once");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.queued_total() != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never saw a's creates"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.claim(&claim_req("worker:b", 60_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.queued_total(), 4);
    a.close().await;
    b.close().await;
    drop(db);
}

#[tokio::test]
async fn one_reaper_is_elected() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let a = connect(&db, Duration::from_secs(1)).await;
    let b = connect(&db, Duration::from_secs(1)).await;
    assert!(a.try_reaper_lock().await.unwrap());
    assert!(!b.try_reaper_lock().await.unwrap());
    assert!(a.try_reaper_lock().await.unwrap(), "a leader stays leader");
    assert!(!b.try_reaper_lock().await.unwrap());
    a.release_reaper_lock().await.unwrap();
    // The lock goes with a's session; b takes over at its next try.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !b.try_reaper_lock().await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "b never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!a.try_reaper_lock().await.unwrap());
    a.close().await;
    b.close().await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_starting_together_migrate_once() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::connect(&url).await.map(|_| ()) })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let store = PgStore::connect(&db.url).await.unwrap();
    assert_eq!(store.count_keys().await.unwrap(), 0);
    store.close().await;
    drop(db);
}
