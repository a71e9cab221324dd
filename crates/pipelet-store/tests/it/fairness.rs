//! Fair sharing between keys at equal priority (`pipelet_store::fair`), on SQLite and
//! PostgreSQL: a burst from one key does not hold back another key's job, weights share
//! dispatches, priorities still come first, and every promised queue position is the
//! dispatch order workers then see, including under random submissions from several
//! keys and weights, concurrent (group-committed) creates and interleaved claims.

use std::collections::HashMap;
use std::sync::Arc;

use pipelet_api::Pipeline;
use pipelet_store::postgres::PgStore;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use uuid::Uuid;

use crate::support::new_job;

/// A store on a fresh file or database, and what keeps it alive.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _db: Option<crate::support::PgDb>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("pipelet.db"))
        .await
        .unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
        _db: None,
    }
}

async fn postgres() -> Option<Fixture> {
    let db = crate::support::pg_db()?;
    let store = PgStore::connect(&db.url).await.unwrap();
    Some(Fixture {
        store: Arc::new(store),
        _dir: None,
        _db: Some(db),
    })
}

/// `sqlite::<name>` and `postgres::<name>` from `async fn <name>(&dyn Store)`.
macro_rules! on_both {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let f = super::sqlite().await;
                    super::$test(f.store.as_ref()).await;
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
                    super::$test(f.store.as_ref()).await;
                }
            )+
        }
    };
}

on_both!(
    a_burst_does_not_hold_back_another_key,
    weights_share_dispatches,
    priorities_still_come_first,
    a_retry_goes_back_to_the_front,
    random_submissions_dispatch_as_promised,
);

/// A client key named `name` with `weight`; its id is what jobs record as their owner.
async fn key_with_weight(s: &dyn Store, name: &str, weight: i64) -> String {
    let (key, _) = s
        .create_key(NewKey {
            name: name.into(),
            role: Role::Client,
            max_priority: 10,
            expires_at_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(key.weight, 1, "default weight");
    let updated = s
        .update_key(
            name,
            KeyUpdate {
                weight: Some(weight),
                ..KeyUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.weight, weight);
    key.id
}

fn job_of(owner: &str, priority: i64) -> NewJob {
    NewJob {
        owner_key_id: owner.into(),
        ..new_job(Pipeline::T2v, priority)
    }
}

fn one_worker() -> ClaimRequest {
    ClaimRequest {
        worker_id: "worker:fair/1".into(),
        pipelines: vec![Pipeline::T2v],
        loaded: Some(Pipeline::T2v),
        lease_ms: 60_000,
        max_wait_for_switch_ms: 24 * 3_600_000,
    }
}

/// Every queued job's position now, by id.
async fn positions(s: &dyn Store, ids: &[Uuid]) -> HashMap<Uuid, u64> {
    let mut out = HashMap::new();
    for &id in ids {
        if let Some((_, Some(position))) = s.job_status(id).await.unwrap() {
            out.insert(id, position);
        }
    }
    out
}

/// Claims everything with one worker and checks that the claim order is the order the
/// positions promised: position 0 first, then 1, …
async fn drain_in_promised_order(s: &dyn Store, ids: &[Uuid]) -> Vec<Uuid> {
    let promised = positions(s, ids).await;
    let mut by_position: Vec<(u64, Uuid)> = promised.iter().map(|(&id, &p)| (p, id)).collect();
    by_position.sort_unstable();
    for (expected, (position, _)) in by_position.iter().enumerate() {
        assert_eq!(
            *position, expected as u64,
            "positions are 0..n without gaps"
        );
    }
    let mut claimed = Vec::new();
    while let Some(lease) = s.claim(&one_worker()).await.unwrap() {
        claimed.push(lease.job.id);
    }
    let expected: Vec<Uuid> = by_position.into_iter().map(|(_, id)| id).collect();
    assert_eq!(claimed, expected, "dispatch order is the promised order");
    claimed
}

async fn a_burst_does_not_hold_back_another_key(s: &dyn Store) {
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(s.create_job(job_of("key-a", 0)).await.unwrap().job.id);
    }
    let b = s.create_job(job_of("key-b", 0)).await.unwrap();
    assert_eq!(b.position, 1, "behind A's head only, not behind 200 jobs");
    ids.push(b.job.id);
    let order = drain_in_promised_order(s, &ids).await;
    assert_eq!(order[0], ids[0]);
    assert_eq!(order[1], b.job.id);
}

async fn weights_share_dispatches(s: &dyn Store) {
    let heavy = key_with_weight(s, "heavy", 2).await;
    let light = key_with_weight(s, "light", 1).await;
    let mut ids = Vec::new();
    let mut owner_of = HashMap::new();
    for _ in 0..60 {
        for owner in [&heavy, &light] {
            let id = s.create_job(job_of(owner, 0)).await.unwrap().job.id;
            owner_of.insert(id, owner.clone());
            ids.push(id);
        }
    }
    let order = drain_in_promised_order(s, &ids).await;
    let heavy_share = order[..30]
        .iter()
        .filter(|id| owner_of[id] == heavy)
        .count();
    assert_eq!(heavy_share, 20, "weight 2 gets 2 of every 3 dispatches");
}

async fn priorities_still_come_first(s: &dyn Store) {
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(s.create_job(job_of("key-a", 0)).await.unwrap().job.id);
    }
    let b = s.create_job(job_of("key-b", 0)).await.unwrap();
    let urgent = s.create_job(job_of("key-a", 5)).await.unwrap();
    assert_eq!(urgent.position, 0);
    assert_eq!(s.job_status(b.job.id).await.unwrap().unwrap().1, Some(2));
    ids.extend([b.job.id, urgent.job.id]);
    let order = drain_in_promised_order(s, &ids).await;
    assert_eq!(&order[..3], &[urgent.job.id, ids[0], b.job.id]);
}

async fn a_retry_goes_back_to_the_front(s: &dyn Store) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.create_job(job_of("key-a", 0)).await.unwrap().job.id);
    }
    let first = s.claim(&one_worker()).await.unwrap().unwrap();
    let second = s.claim(&one_worker()).await.unwrap().unwrap();
    // The queue emptied and refilled meanwhile for another key.
    for _ in 0..3 {
        ids.push(s.create_job(job_of("key-b", 0)).await.unwrap().job.id);
    }
    let failure = Failure::plain("out of memory");
    assert_eq!(
        s.fail(&second.lease, &failure, true).await.unwrap(),
        FailOutcome::Requeued
    );
    assert_eq!(
        s.fail(&first.lease, &failure, true).await.unwrap(),
        FailOutcome::Requeued
    );
    let promised = positions(s, &ids).await;
    assert_eq!(promised[&first.job.id], 0, "the older retry first");
    assert_eq!(promised[&second.job.id], 1);
    drain_in_promised_order(s, &ids).await;
}

/// What the simulation does next.
#[derive(Debug, Clone)]
enum Step {
    /// `count` creates at once (concurrent, so they may share a batch).
    Create {
        count: usize,
        key: usize,
        priority: i64,
    },
    /// One claim; the claimed job must be the one at position 0.
    Claim,
}

const WEIGHTS: [i64; 4] = [1, 2, 3, 5];

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (1usize..=6, 0..WEIGHTS.len(), prop_oneof![3 => Just(0i64), 1 => Just(1)])
            .prop_map(|(count, key, priority)| Step::Create { count, key, priority }),
        2 => Just(Step::Claim),
    ];
    proptest::collection::vec(step, 1..40)
}

/// Random submissions from keys of different weights and priorities, claims in between:
/// every claim takes the job whose position was 0, a key with nothing queued gets a job
/// at most one job per other busy key behind its priority's head, and the queue left at
/// the end drains exactly in its promised order.
async fn random_submissions_dispatch_as_promised(s: &dyn Store) {
    let mut keys = Vec::new();
    for (i, &weight) in WEIGHTS.iter().enumerate() {
        keys.push(key_with_weight(s, &format!("sim-{i}"), weight).await);
    }
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16u32);
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    for _ in 0..cases {
        let plan = steps().new_tree(&mut runner).unwrap().current();
        run_plan(s, &keys, &plan).await;
    }
}

async fn run_plan(s: &dyn Store, keys: &[String], plan: &[Step]) {
    // The queue is empty between plans: each drains it.
    let mut queued: Vec<(Uuid, usize, i64)> = Vec::new();
    for step in plan {
        match *step {
            Step::Create {
                count,
                key,
                priority,
            } => {
                let ids: Vec<Uuid> = queued.iter().map(|q| q.0).collect();
                let now = positions(s, &ids).await;
                let others_busy = queued
                    .iter()
                    .filter(|q| q.2 == priority && q.1 != key)
                    .map(|q| q.1)
                    .collect::<std::collections::HashSet<_>>()
                    .len() as u64;
                let idle = !queued.iter().any(|q| q.2 == priority && q.1 == key);
                let higher = queued.iter().filter(|q| q.2 > priority).count() as u64;
                let creates = (0..count).map(|_| s.create_job(job_of(&keys[key], priority)));
                let created = futures::future::join_all(creates).await;
                for created in created {
                    let created = created.unwrap();
                    queued.push((created.job.id, key, priority));
                }
                if idle && count == 1 {
                    let id = queued.last().map(|q| q.0).unwrap_or_default();
                    let position = s.job_status(id).await.unwrap().unwrap().1.unwrap();
                    assert!(
                        position <= higher + others_busy,
                        "an idle key's job at {position}, behind {higher} of higher \
                         priority and {others_busy} busy keys ({} queued before)",
                        now.len()
                    );
                }
            }
            Step::Claim => {
                let ids: Vec<Uuid> = queued.iter().map(|q| q.0).collect();
                let now = positions(s, &ids).await;
                let first = now.iter().find(|(_, p)| **p == 0).map(|(id, _)| *id);
                let got = s.claim(&one_worker()).await.unwrap().map(|l| l.job.id);
                assert_eq!(got, first, "the claim takes position 0");
                queued.retain(|q| Some(q.0) != got);
            }
        }
    }
    let ids: Vec<Uuid> = queued.iter().map(|q| q.0).collect();
    drain_in_promised_order(s, &ids).await;
}
