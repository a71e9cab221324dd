//! Upgrading a database made by an older pipelet: a failure recorded before the
//! client-reason/detail split named the lost worker in `error`; after the upgrade the
//! client reads a plain reason and the old text is the admin-only detail. Run on both
//! backends, starting from a database with only the first migration applied. Likewise keys:
//! live keys that shared a name are renamed apart by the key-management migration, and
//! jobs finished before usage was counted are counted by the usage migration.

use std::path::{Path, PathBuf};

use pipelet_store::postgres::PgStore;
use pipelet_store::prelude::*;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::{JobState, UsageQuery};
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

/// A new SQLite database in `dir` with only the first migration applied, as an older
/// release left it: its path, and a connection to it.
async fn old_sqlite(dir: &Path) -> (PathBuf, SqliteConnection) {
    let migrations = dir.join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    let path = dir.join("pipelet.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    first_migration_only("sqlite", &migrations)
        .await
        .run(&mut conn)
        .await
        .unwrap();
    (path, conn)
}

/// A connection to the PostgreSQL database `url` after applying only the first migration
/// (its migrator's files kept in `dir`).
async fn old_postgres(url: &str, dir: &Path) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    first_migration_only("postgres", dir)
        .await
        .run(&mut conn)
        .await
        .unwrap();
    conn
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
    // A spec the store can read back (it loads queued jobs when it opens).
    let spec = serde_json::to_string(&pipelet_api::JobSpec::sample("p")).unwrap();
    format!(
        "INSERT INTO jobs (id, model_id, pipeline, owner_key_id, priority, state, spec, \
         created_at, enqueued_at, attempt, max_attempts, error) VALUES ({}, 'm', 't2v', 'o', 0, \
         {}, '{spec}', 1, 1, 3, 3, {})",
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
    let (path, mut conn) = old_sqlite(dir.path()).await;
    let cases = cases();
    {
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
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    {
        let mut conn = old_postgres(&db.url, dir.path()).await;
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
    drop(db);
}

/// Keys of an older release: two live keys named alike (names were not unique then) and a
/// revoked one of the same name, each as `(id, secret, created_at, revoked_at)`.
const OLD_KEYS: [(&str, &str, i64, Option<i64>); 3] = [
    (
        "aaaaaaaa-0000-0000-0000-000000000001",
        "plt_old-first",
        1,
        None,
    ),
    (
        "bbbbbbbb-0000-0000-0000-000000000002",
        "plt_old-second",
        2,
        None,
    ),
    (
        "cccccccc-0000-0000-0000-000000000003",
        "plt_old-revoked",
        0,
        Some(5),
    ),
];

fn insert_key_sql(numbered: bool) -> String {
    let values = if numbered {
        "$1, 'alice', 'client', $2, 0, $3, $4"
    } else {
        "?, 'alice', 'client', ?, 0, ?, ?"
    };
    format!(
        "INSERT INTO api_keys (id, name, role, secret_sha256, max_priority, created_at, \
         revoked_at) VALUES ({values})"
    )
}

fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// After the upgrade the oldest live key keeps its name, the other live one is renamed
/// apart (live names are unique now), the revoked one is untouched, and every old secret
/// still works (or stays revoked).
async fn check_keys(store: &dyn Store) {
    let keys = store.list_keys().await.unwrap();
    let name_of = |id: &str| {
        keys.iter()
            .find(|k| k.id == id)
            .map(|k| k.name.clone())
            .unwrap()
    };
    assert_eq!(name_of(OLD_KEYS[0].0), "alice");
    assert_eq!(name_of(OLD_KEYS[1].0), "alice (bbbbbbbb)");
    assert_eq!(name_of(OLD_KEYS[2].0), "alice");
    assert!(
        keys.iter()
            .all(|k| k.prefix.is_empty() && k.expires_at_ms.is_none())
    );
    for (id, secret, _, revoked_at) in OLD_KEYS {
        let found = store.find_key_by_secret(secret).await.unwrap();
        assert_eq!(
            found.map(|k| k.id),
            revoked_at.is_none().then(|| id.to_string())
        );
    }
}

#[tokio::test]
async fn sqlite_upgrade_makes_live_key_names_unique() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut conn) = old_sqlite(dir.path()).await;
    {
        for (id, secret, created_at, revoked_at) in OLD_KEYS {
            sqlx::query(&insert_key_sql(false))
                .bind(id)
                .bind(sha256_hex(secret))
                .bind(created_at)
                .bind(revoked_at)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    check_keys(&store).await;
}

#[tokio::test]
async fn postgres_upgrade_makes_live_key_names_unique() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let mut conn = old_postgres(&db.url, dir.path()).await;
        for (id, secret, created_at, revoked_at) in OLD_KEYS {
            sqlx::query(&insert_key_sql(true))
                .bind(id)
                .bind(sha256_hex(secret))
                .bind(created_at)
                .bind(revoked_at)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }
    let store = PgStore::connect(&db.url).await.unwrap();
    check_keys(&store).await;
    store.close().await;
    drop(db);
}

/// Jobs finished before the usage table existed: two completed (81 frames at 16 fps,
/// 1.5 s of rendering each) and one failed on 2026-01-02, one cancelled on 2026-01-03,
/// and a queued one, which counts for nothing.
const FINISHED_BEFORE_USAGE: [(&str, Option<i64>); 5] = [
    ("completed", Some(1_767_312_000_000)),
    ("completed", Some(1_767_398_399_999)),
    ("failed", Some(1_767_312_000_001)),
    ("cancelled", Some(1_767_398_400_000)),
    ("queued", None),
];

fn insert_finished_sql(numbered: bool) -> String {
    let p: Vec<String> = (1..=5)
        .map(|i| {
            if numbered {
                format!("${i}")
            } else {
                "?".into()
            }
        })
        .collect();
    let id = if numbered { "$1::uuid" } else { "?" };
    format!(
        "INSERT INTO jobs (id, model_id, pipeline, owner_key_id, priority, state, spec, \
         created_at, enqueued_at, attempt, max_attempts, finished_at, result) VALUES ({id}, \
         'm', 't2v', 'o', 0, {}, {}, 1, 1, 1, 3, {}, {})",
        p[1], p[2], p[3], p[4]
    )
}

fn finished_result() -> String {
    let result = crate::support::result_at("results/old.mp4");
    serde_json::to_string(&result).unwrap()
}

async fn check_backfilled_usage(store: &dyn Store) {
    let query = UsageQuery {
        from_day: "2026-01-01".into(),
        to_day: "2026-01-31".into(),
        owner_key_id: None,
        owner_key_name: None,
    };
    let rows = crate::support::usage_lines(store, &query).await;
    let row = |day: &str, c, f, x, v, r| {
        (
            day.to_string(),
            "o".to_string(),
            "m".to_string(),
            c,
            f,
            x,
            v,
            r,
        )
    };
    assert_eq!(
        rows,
        [
            row("2026-01-02", 2, 1, 0, 10_124, 3_000),
            row("2026-01-03", 0, 0, 1, 0, 0),
        ]
    );
}

#[tokio::test]
async fn sqlite_upgrade_counts_jobs_finished_before_usage() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut conn) = old_sqlite(dir.path()).await;
    let spec = serde_json::to_string(&pipelet_api::JobSpec::sample("p")).unwrap();
    {
        for (state, finished_at) in FINISHED_BEFORE_USAGE {
            let result = (state == "completed").then(finished_result);
            sqlx::query(&insert_finished_sql(false))
                .bind(Uuid::new_v4().to_string())
                .bind(state)
                .bind(&spec)
                .bind(finished_at)
                .bind(result)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    check_backfilled_usage(&store).await;
}

#[tokio::test]
async fn postgres_upgrade_counts_jobs_finished_before_usage() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::to_string(&pipelet_api::JobSpec::sample("p")).unwrap();
    {
        let mut conn = old_postgres(&db.url, dir.path()).await;
        for (state, finished_at) in FINISHED_BEFORE_USAGE {
            let result = (state == "completed").then(finished_result);
            sqlx::query(&insert_finished_sql(true))
                .bind(Uuid::new_v4().to_string())
                .bind(state)
                .bind(&spec)
                .bind(finished_at)
                .bind(result)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }
    let store = PgStore::connect(&db.url).await.unwrap();
    check_backfilled_usage(&store).await;
    store.close().await;
    drop(db);
}
