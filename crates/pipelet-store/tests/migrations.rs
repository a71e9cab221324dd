//! Upgrading a database made by an older pipelet: a failure recorded before the
//! client-reason/detail split named the lost worker in `error`; after the upgrade the
//! client reads a plain reason and the old text is the admin-only detail. Run on both
//! backends, starting from a database with only the first migration applied.

mod support;

use std::path::Path;

use pipelet_store::postgres::PgStore;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::{JobState, Store};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

/// A migrator that knows only `0001_init.sql` of `backend`, as an older release did.
async fn first_migration_only(backend: &str, dir: &Path) -> Migrator {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
        .join("0001_init.sql");
    std::fs::copy(&from, dir.join("0001_init.sql")).expect("copy the first migration");
    Migrator::new(dir).await.expect("migrator")
}

const OLD_REAPED: &str = "gave up after 3 attempts: lease expired: the worker stopped heartbeating (holder \
     worker:gpu-1/vm-3389)";
const OLD_RELEASED: &str = "the server restarted while the job was running (holder \
     local:abc/0, attempt 1 of 3); re-queued";
const PLAIN: &str = "the input image cannot be decoded";

fn insert_sql(numbered: bool) -> String {
    let p = |i: usize| {
        if numbered {
            format!("${i}")
        } else {
            "?".into()
        }
    };
    format!(
        "INSERT INTO jobs (id, model_id, pipeline, owner_key_id, priority, state, spec, \
         created_at, enqueued_at, attempt, max_attempts, error) VALUES ({}, 'm', 't2v', 'o', 0, \
         {}, '{{}}', 1, 1, 3, 3, {})",
        if numbered {
            "$1::uuid".to_string()
        } else {
            p(1)
        },
        p(2),
        p(3)
    )
}

fn cases() -> [(Uuid, &'static str, &'static str); 3] {
    [
        (Uuid::new_v4(), "failed", OLD_REAPED),
        (Uuid::new_v4(), "queued", OLD_RELEASED),
        (Uuid::new_v4(), "failed", PLAIN),
    ]
}

async fn check(store: &dyn Store, cases: &[(Uuid, &str, &str)]) {
    let [(reaped, ..), (released, ..), (plain, ..)] = cases else {
        unreachable!()
    };
    let job = store.get_job(*reaped).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.as_deref(), Some("the worker stopped responding"));
    assert_eq!(job.error_detail.as_deref(), Some(OLD_REAPED));
    let job = store.get_job(*released).await.unwrap().unwrap();
    assert_eq!(
        job.error.as_deref(),
        Some("the server restarted while the job was running")
    );
    assert_eq!(job.error_detail.as_deref(), Some(OLD_RELEASED));
    let job = store.get_job(*plain).await.unwrap().unwrap();
    assert_eq!(job.error.as_deref(), Some(PLAIN), "a plain reason is kept");
    assert_eq!(job.error_detail, None);
}

#[tokio::test]
async fn sqlite_upgrade_splits_old_failures() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    let path = dir.path().join("pipelet.db");
    let cases = cases();
    {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = SqliteConnection::connect(&url).await.unwrap();
        first_migration_only("sqlite", &migrations)
            .await
            .run(&mut conn)
            .await
            .unwrap();
        for (id, state, error) in &cases {
            sqlx::query(&insert_sql(false))
                .bind(id.to_string())
                .bind(*state)
                .bind(*error)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    check(&store, &cases).await;
}

#[tokio::test]
async fn postgres_upgrade_splits_old_failures() {
    let Some(db) = support::pg_test_db().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        first_migration_only("postgres", dir.path())
            .await
            .run(&mut conn)
            .await
            .unwrap();
        for (id, state, error) in &cases {
            sqlx::query(&insert_sql(true))
                .bind(id.to_string())
                .bind(*state)
                .bind(*error)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }
    let store = PgStore::connect(&db.url).await.unwrap();
    check(&store, &cases).await;
    store.close().await;
    db.drop_db().await;
}
