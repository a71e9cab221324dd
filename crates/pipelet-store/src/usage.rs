//! Usage per key, model and UTC day, in the `usage_daily` table. Every terminal
//! transition (complete, a final fail, a cancel, the reaper giving up) adds its
//! [`UsageDelta`] in the transition's own transaction, so the counts never drift from
//! the jobs and survive retention deleting them.

use pipelet_api::wire::usage::utc_day;

use crate::{JobRecord, JobResult, JobState};

/// Which usage rows to read: the days `from_day..=to_day` (`YYYY-MM-DD`, UTC), of one
/// key or every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// The first day, `YYYY-MM-DD`.
    pub from_day: String,
    /// The last day, `YYYY-MM-DD`, inclusive.
    pub to_day: String,
    /// Only this key's usage (by id).
    pub owner_key_id: Option<String>,
    /// Only the usage of keys with this name (revoked ones too).
    pub owner_key_name: Option<String>,
}

/// One key's use of one model on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// `YYYY-MM-DD`, UTC: the day the jobs finished.
    pub day: String,
    /// The key's id.
    pub owner_key_id: String,
    /// The key's name; its id when no key has it (e.g. a deleted key).
    pub key_name: String,
    /// The model.
    pub model_id: String,
    /// Jobs that ended completed.
    pub completed: u64,
    /// Jobs that ended failed (after their last attempt).
    pub failed: u64,
    /// Jobs that ended cancelled.
    pub cancelled: u64,
    /// Milliseconds of video the completed jobs produced (frames × 1000 / fps).
    pub video_ms: i64,
    /// Milliseconds workers spent rendering completed jobs (a failed attempt reports no
    /// time).
    pub run_ms: i64,
}

/// What one job's terminal transition adds to its day's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageDelta {
    pub day: String,
    pub owner_key_id: String,
    pub model_id: String,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub video_ms: i64,
    pub run_ms: i64,
}

impl UsageDelta {
    /// The delta of `job` ending in `state` at `now_ms` (with `result` when completed);
    /// `None` when `state` is not terminal (a re-queue adds nothing).
    pub(crate) fn ended(
        job: &JobRecord,
        state: JobState,
        result: Option<&JobResult>,
        now_ms: i64,
    ) -> Option<Self> {
        let (completed, failed, cancelled) = match state {
            JobState::Completed => (1, 0, 0),
            JobState::Failed => (0, 1, 0),
            JobState::Cancelled => (0, 0, 1),
            JobState::Queued | JobState::Running => return None,
        };
        let (video_ms, run_ms) = result.map_or((0, 0), |r| {
            let video = &r.video;
            let video_ms = match video.fps {
                0 => 0,
                fps => i64::from(video.frames) * 1000 / i64::from(fps),
            };
            // NaN and negatives (a confused worker) count as nothing.
            let run_ms = (video.run_seconds * 1000.0).round();
            let run_ms = if run_ms.is_finite() && run_ms > 0.0 {
                run_ms as i64
            } else {
                0
            };
            (video_ms, run_ms)
        });
        Some(Self {
            day: utc_day(now_ms),
            owner_key_id: job.owner_key_id.clone(),
            model_id: job.model_id.clone(),
            completed,
            failed,
            cancelled,
            video_ms,
            run_ms,
        })
    }
}

/// The upsert both stores run (SQLite accepts PostgreSQL's `$n` placeholders).
pub(crate) const UPSERT_SQL: &str = "INSERT INTO usage_daily (day, owner_key_id, model_id, \
     completed, failed, cancelled, video_ms, run_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (day, owner_key_id, model_id) DO UPDATE SET \
     completed = usage_daily.completed + excluded.completed, \
     failed = usage_daily.failed + excluded.failed, \
     cancelled = usage_daily.cancelled + excluded.cancelled, \
     video_ms = usage_daily.video_ms + excluded.video_ms, \
     run_ms = usage_daily.run_ms + excluded.run_ms";

/// The upsert for a job failed because this version cannot read it (no [`JobRecord`]
/// exists for it): one failure on `$1`, by the row's key and model; the caller appends
/// the `WHERE` that picks the row (as `$2`).
pub(crate) const UPSERT_UNREADABLE_SQL: &str = "INSERT INTO usage_daily (day, owner_key_id, \
     model_id, completed, failed, cancelled, video_ms, run_ms) \
     SELECT $1, owner_key_id, model_id, 0, 1, 0, 0, 0 FROM jobs WHERE ";

/// The conflict clause that completes [`UPSERT_UNREADABLE_SQL`].
pub(crate) const ADD_ONE_FAILURE_SQL: &str = " ON CONFLICT (day, owner_key_id, model_id) \
     DO UPDATE SET failed = usage_daily.failed + 1";

/// The read both stores run; `$3` and `$4` are the optional key id and name.
pub(crate) const SELECT_SQL: &str = "SELECT u.day, u.owner_key_id, \
     COALESCE(k.name, u.owner_key_id) AS key_name, u.model_id, u.completed, u.failed, \
     u.cancelled, u.video_ms, u.run_ms FROM usage_daily u \
     LEFT JOIN api_keys k ON k.id = u.owner_key_id \
     WHERE u.day >= $1 AND u.day <= $2 \
     AND (CAST($3 AS TEXT) IS NULL OR u.owner_key_id = $3) \
     AND (CAST($4 AS TEXT) IS NULL OR k.name = $4) \
     ORDER BY u.day, key_name, u.model_id";

/// Reads a [`UsageRecord`] from either backend's row of [`SELECT_SQL`]; a negative count
/// (never written) reads as 0.
pub(crate) fn usage_from_row<'r, R>(row: &'r R) -> crate::Result<UsageRecord>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let count = |name: &'static str| -> crate::Result<u64> {
        Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
    };
    Ok(UsageRecord {
        day: row.try_get("day")?,
        owner_key_id: row.try_get("owner_key_id")?,
        key_name: row.try_get("key_name")?,
        model_id: row.try_get("model_id")?,
        completed: count("completed")?,
        failed: count("failed")?,
        cancelled: count("cancelled")?,
        video_ms: row.try_get("video_ms")?,
        run_ms: row.try_get("run_ms")?,
    })
}

/// [`UPSERT_SQL`] with `d` bound, for either backend to execute.
pub(crate) fn upsert_query<'q, DB>(d: UsageDelta) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(UPSERT_SQL)
        .bind(d.day)
        .bind(d.owner_key_id)
        .bind(d.model_id)
        .bind(d.completed)
        .bind(d.failed)
        .bind(d.cancelled)
        .bind(d.video_ms)
        .bind(d.run_ms)
}

/// [`SELECT_SQL`] with `query` bound, for either backend to fetch.
pub(crate) fn select_query<'q, DB>(
    query: &'q UsageQuery,
) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(SELECT_SQL)
        .bind(&query.from_day)
        .bind(&query.to_day)
        .bind(query.owner_key_id.as_deref())
        .bind(query.owner_key_name.as_deref())
}
