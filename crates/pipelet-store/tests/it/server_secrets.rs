//! Shared server secrets (`Store::server_secret`): the first call creates one, every
//! later or concurrent call — from any server on the same database — reads the same one,
//! and it survives a restart. Run on both backends.

use std::sync::Arc;

use pipelet_store::postgres::PgStore;
use pipelet_store::prelude::*;
use pipelet_store::sqlite::SqliteStore;

/// Eight concurrent first calls over `stores` agree, and another name gets another secret.
async fn all_agree(stores: &[Arc<dyn Store>]) -> String {
    let calls = (0..8).map(|i| {
        let store = stores[i % stores.len()].clone();
        tokio::spawn(async move { store.server_secret("result_links").await })
    });
    let mut secrets = Vec::new();
    for call in calls {
        secrets.push(call.await.expect("task").expect("server_secret"));
    }
    let first = secrets[0].clone();
    assert!(first.len() >= 32, "{first}");
    assert!(secrets.iter().all(|s| *s == first), "{secrets:?}");
    let other = stores[0].server_secret("another").await.expect("another");
    assert_ne!(other, first);
    first
}

#[tokio::test]
async fn sqlite_secrets_are_created_once_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pipelet.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("open"));
    let secret = all_agree(std::slice::from_ref(&store)).await;
    drop(store);
    let reopened = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(
        reopened.server_secret("result_links").await.unwrap(),
        secret
    );
}

#[tokio::test]
async fn postgres_servers_starting_together_share_one_secret() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let a: Arc<dyn Store> = Arc::new(PgStore::connect(&db.url).await.expect("server a"));
    let b: Arc<dyn Store> = Arc::new(PgStore::connect(&db.url).await.expect("server b"));
    let secret = all_agree(&[a.clone(), b.clone()]).await;
    drop((a, b));
    let c = PgStore::connect(&db.url).await.expect("server c");
    assert_eq!(c.server_secret("result_links").await.unwrap(), secret);
    drop(c);
    drop(db);
}
