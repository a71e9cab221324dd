//! The `usage_daily` table in PostgreSQL: the upsert each terminal transition runs in its
//! transaction, and the report read.

use pipelet_api::wire::usage::utc_day;
use sqlx::PgConnection;

use crate::usage::{
    ADD_ONE_FAILURE_SQL, UPSERT_UNREADABLE_SQL, UsageDelta, select_query, upsert_query,
    usage_from_row,
};
use crate::{Result, UsageQuery, UsageRecord};

/// Adds `delta` to its day's row (in the caller's transaction); nothing for `None`.
pub(super) async fn record(conn: &mut PgConnection, delta: Option<UsageDelta>) -> Result<()> {
    let Some(d) = delta else {
        return Ok(());
    };
    upsert_query(d).execute(&mut *conn).await?;
    Ok(())
}

/// The rows `query` asks for.
pub(super) async fn read(conn: &mut PgConnection, query: &UsageQuery) -> Result<Vec<UsageRecord>> {
    let rows = select_query(query).fetch_all(&mut *conn).await?;
    rows.iter().map(usage_from_row).collect()
}

/// Counts one failure for the job `id`, failed because this version cannot read it (in
/// the caller's transaction).
pub(super) async fn record_unreadable(
    conn: &mut PgConnection,
    id: &str,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(&format!(
        "{UPSERT_UNREADABLE_SQL}id = $2::uuid{ADD_ONE_FAILURE_SQL}"
    ))
    .bind(utc_day(now_ms))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
