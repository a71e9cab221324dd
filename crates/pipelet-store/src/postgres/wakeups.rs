//! Background work of a [`super::PgStore`]: the `LISTEN` loop that turns notifications
//! on [`super::JOBS_CHANNEL`] into wake-ups, and the poller that wakes workers every
//! interval regardless (notifications are a hint: they are lost while the listener's
//! connection is down) and re-reads the queued count behind `queued_total()`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;

use super::JOBS_CHANNEL;
use super::gauge::QueuedGauge;
use crate::Result;

/// Subscribes to [`JOBS_CHANNEL`] on a connection of `pool`.
pub(super) async fn listen(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(JOBS_CHANNEL).await?;
    Ok(listener)
}

/// Wakes waiting workers on every notification. `recv` reconnects (and re-subscribes)
/// by itself after a lost connection; notifications sent meanwhile are gone, which the
/// poller covers.
pub(super) async fn run_listener(mut listener: PgListener, available: Arc<Notify>) {
    loop {
        match listener.recv().await {
            Ok(_) => available.notify_waiters(),
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN {JOBS_CHANNEL} failed; relying on polling");
                available.notify_waiters();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Every `interval`: wakes the workers (the polling fallback) and refreshes the gauge.
pub(super) async fn run_poller(
    pool: PgPool,
    gauge: Arc<QueuedGauge>,
    available: Arc<Notify>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        available.notify_waiters();
        if pool.is_closed() {
            return;
        }
        if let Err(e) = refresh_gauge(&pool, &gauge).await {
            tracing::debug!(error = %e, "refreshing the queued count");
        }
    }
}

/// Re-reads how many jobs are queued (an index-only count over the partial dispatch
/// index) unless one of this process's writes raced it.
pub(super) async fn refresh_gauge(pool: &PgPool, gauge: &QueuedGauge) -> Result<()> {
    let ticket = gauge.begin_refresh();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'queued'")
        .fetch_one(pool)
        .await?;
    gauge.finish_refresh(ticket, count);
    Ok(())
}
