//! Measures what a queue position costs at 10,000 queued jobs on each store (a
//! benchmark, so `#[ignore]`d): `cargo test -p pipelet-store --test it position_cost --
//! --ignored --nocapture`. The PostgreSQL half needs the test server (see
//! `support.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pipelet_api::Pipeline;
use pipelet_store::postgres::PgStore;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::*;
use uuid::Uuid;

const QUEUED: usize = 10_000;
const ROUNDS: usize = 300;

fn new_job(pipeline: Pipeline, priority: i64) -> NewJob {
    NewJob {
        spec: pipelet_api::JobSpec::sample("a corgi surfing a wave at sunset, cinematic"),
        ..crate::support::new_job(pipeline, priority)
    }
}

/// Queues `QUEUED` t2v jobs at three priorities (plus 2,000 i2v), returning the job at
/// each probed position: the head, the middle and the last.
async fn fill(store: &Arc<dyn Store>) -> Vec<(u64, Uuid)> {
    let mut jobs = Vec::new();
    for chunk in 0..(QUEUED / 500) {
        let mut batch = Vec::new();
        for i in 0..500 {
            let store = store.clone();
            let priority = ((chunk * 500 + i) % 3) as i64 * 10;
            batch.push(tokio::spawn(async move {
                store.create_job(new_job(Pipeline::T2v, priority)).await
            }));
        }
        for b in batch {
            jobs.push(b.await.unwrap().unwrap());
        }
    }
    for _ in 0..2_000 {
        store.create_job(new_job(Pipeline::I2v, 0)).await.unwrap();
    }
    jobs.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.seq));
    [0, QUEUED / 2, QUEUED - 1]
        .into_iter()
        .map(|at| (at as u64, jobs[at].id))
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(name: &str, store: &Arc<dyn Store>, probes: &[(u64, Uuid)]) {
    for &(expected, id) in probes {
        assert_eq!(
            store.job_status(id).await.unwrap().unwrap().1,
            Some(expected)
        );
        let mut status = Vec::with_capacity(ROUNDS);
        let mut row = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            store.job_status(id).await.unwrap();
            status.push(t.elapsed());
            let t = Instant::now();
            store.get_job(id).await.unwrap();
            row.push(t.elapsed());
        }
        status.sort();
        row.sort();
        println!(
            "{name:<22} position {expected:>5}: job_status median {:.3} ms (p90 {:.3}), \
             get_job alone median {:.3} ms",
            ms(status[ROUNDS / 2]),
            ms(status[ROUNDS * 9 / 10]),
            ms(row[ROUNDS / 2]),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn position_cost_at_10k_queued() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("p.db")).await.unwrap());
    let probes = fill(&sqlite).await;
    measure("sqlite", &sqlite, &probes).await;

    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let pg: Arc<dyn Store> = Arc::new(PgStore::connect(&db.url).await.unwrap());
    let probes = fill(&pg).await;
    measure("postgres (fresh rows)", &pg, &probes).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE jobs")
        .execute(&mut conn)
        .await
        .unwrap();
    measure("postgres (vacuumed)", &pg, &probes).await;
    drop(pg);
    drop(db);
}
