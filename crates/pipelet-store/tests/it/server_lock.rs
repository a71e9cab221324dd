//! The PostgreSQL server lock: servers with shared blobs hold it together, a single
//! server holds it alone, and a released lock lets the other kind in.

use pipelet_store::postgres::{ServerLock, ServerLockMode};

#[tokio::test]
async fn a_single_server_and_any_other_server_exclude_each_other() {
    let Some(db) = crate::support::pg_db() else {
        return;
    };
    let url = db.url.clone();
    let take = |mode| {
        let url = url.clone();
        async move {
            ServerLock::try_acquire(&url, mode)
                .await
                .expect("the lock query answers")
        }
    };

    // Two servers with shared blobs run together; a single server cannot join them.
    let a = take(ServerLockMode::Shared)
        .await
        .expect("first shared server");
    let b = take(ServerLockMode::Shared)
        .await
        .expect("second shared server");
    assert!(take(ServerLockMode::Exclusive).await.is_none());
    a.release().await.expect("release a");
    assert!(
        take(ServerLockMode::Exclusive).await.is_none(),
        "b still runs"
    );
    // A server that dies without closing its session releases the lock too.
    drop(b);
    let single = wait_for(|| take(ServerLockMode::Exclusive)).await;

    // While the single server runs, no server of either kind may start.
    assert!(take(ServerLockMode::Exclusive).await.is_none());
    assert!(take(ServerLockMode::Shared).await.is_none());
    single.release().await.expect("release the single server");
    let shared = take(ServerLockMode::Shared)
        .await
        .expect("the single server has stopped");
    shared.release().await.expect("release");
    drop(db);
}

/// Retries `take` until it gets the lock: a dropped connection's session ends on the
/// server a moment after the client lets go.
async fn wait_for<F, Fut>(mut take: F) -> ServerLock
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<ServerLock>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(lock) = take().await {
            return lock;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lock of a dropped session was not released within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
