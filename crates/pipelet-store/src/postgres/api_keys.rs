//! API keys in PostgreSQL: only the SHA-256 of each secret is stored.

use pipelet_api::clock::Clock;
use sqlx::postgres::PgPool;

use super::rows::text;

use crate::api_keys::{
    KEY_COLUMNS, KeyRecord, KeyUpdate, LAST_USED_RESOLUTION_MS, NewKey, generate_secret,
    hash_secret, key_for_secret, key_from_row, limit_to_sql, name_taken, secret_prefix,
};
use crate::{Result, StoreError};

pub(super) async fn create(
    pool: &PgPool,
    clock: &dyn Clock,
    key: NewKey,
) -> Result<(KeyRecord, String)> {
    let secret = generate_secret();
    let row = sqlx::query(&format!(
        "INSERT INTO api_keys (id, name, role, secret_sha256, max_priority, created_at, \
         secret_prefix, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {KEY_COLUMNS}"
    ))
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(text(&key.name))
    .bind(key.role.as_str())
    .bind(hash_secret(&secret))
    .bind(key.max_priority)
    .bind(clock.now_ms())
    .bind(secret_prefix(&secret))
    .bind(key.expires_at_ms)
    .fetch_one(pool)
    .await
    .map_err(|e| name_taken(e, &key.name))?;
    Ok((key_from_row(&row)?, secret))
}

/// The live, unexpired key with this secret, as read (before `last_used_at` is touched).
pub(super) async fn find_by_secret(
    pool: &PgPool,
    clock: &dyn Clock,
    secret: &str,
) -> Result<Option<(KeyRecord, bool)>> {
    let now = clock.now_ms();
    let row = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys \
         WHERE secret_sha256 = $1 AND revoked_at IS NULL"
    ))
    .bind(hash_secret(secret))
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => key_for_secret(&row, secret, now),
        None => Ok(None),
    }
}

/// Records a use of key `id` now, unless one was recorded within the last minute.
pub(super) async fn touch(pool: &PgPool, clock: &dyn Clock, id: &str) -> Result<()> {
    let now = clock.now_ms();
    sqlx::query(
        "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
         AND (last_used_at IS NULL OR last_used_at <= $3)",
    )
    .bind(now)
    .bind(id)
    .bind(now.saturating_sub(LAST_USED_RESOLUTION_MS))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn count(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn list(pool: &PgPool) -> Result<Vec<KeyRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(key_from_row).collect()
}

pub(super) async fn revoke(pool: &PgPool, clock: &dyn Clock, name: &str) -> Result<KeyRecord> {
    let row = sqlx::query(&format!(
        "UPDATE api_keys SET revoked_at = $1, version = version + 1 \
         WHERE name = $2 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
    ))
    .bind(clock.now_ms())
    .bind(text(name))
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or_else(|| StoreError::KeyNotFound(name.to_string()))?;
    key_from_row(&row)
}

pub(super) async fn rotate(pool: &PgPool, name: &str) -> Result<(KeyRecord, String)> {
    let secret = generate_secret();
    let row = sqlx::query(&format!(
        "UPDATE api_keys SET secret_sha256 = $1, secret_prefix = $2, version = version + 1 \
         WHERE name = $3 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
    ))
    .bind(hash_secret(&secret))
    .bind(secret_prefix(&secret))
    .bind(text(name))
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or_else(|| StoreError::KeyNotFound(name.to_string()))?;
    Ok((key_from_row(&row)?, secret))
}

pub(super) async fn update(pool: &PgPool, name: &str, update: KeyUpdate) -> Result<KeyRecord> {
    let row = sqlx::query(&format!(
        "UPDATE api_keys SET max_priority = coalesce($1::bigint, max_priority), \
         expires_at = CASE WHEN $2::boolean THEN $3::bigint ELSE expires_at END, \
         max_queued = CASE WHEN $5::boolean THEN $6::bigint ELSE max_queued END, \
         max_running = CASE WHEN $7::boolean THEN $8::bigint ELSE max_running END, \
         creates_per_minute = CASE WHEN $9::boolean THEN $10::bigint \
           ELSE creates_per_minute END, \
         weight = coalesce($11::bigint, weight), \
         version = version + 1 \
         WHERE name = $4 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
    ))
    .bind(update.max_priority)
    .bind(update.expires_at_ms.is_some())
    .bind(update.expires_at_ms.flatten())
    .bind(text(name))
    .bind(update.max_queued.is_some())
    .bind(limit_to_sql(update.max_queued.flatten()))
    .bind(update.max_running.is_some())
    .bind(limit_to_sql(update.max_running.flatten()))
    .bind(update.creates_per_minute.is_some())
    .bind(limit_to_sql(update.creates_per_minute.flatten()))
    .bind(update.weight)
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or_else(|| StoreError::KeyNotFound(name.to_string()))?;
    key_from_row(&row)
}

/// The sum of every key's version: it changes whenever a key is revoked, rotated or
/// updated, so servers compare it to drop cached keys.
pub(super) async fn generation(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(sum(version), 0)::bigint FROM api_keys")
            .fetch_one(pool)
            .await?,
    )
}

/// The shared secret `name`, created (random) by the first caller: concurrent first
/// calls (several servers starting at once) agree, since only one insert wins and
/// everyone reads the winner.
pub(super) async fn server_secret(pool: &PgPool, clock: &dyn Clock, name: &str) -> Result<String> {
    sqlx::query(
        "INSERT INTO server_secrets (name, secret, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(text(name))
    .bind(generate_secret())
    .bind(clock.now_ms())
    .execute(pool)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT secret FROM server_secrets WHERE name = $1")
            .bind(text(name))
            .fetch_one(pool)
            .await?,
    )
}
