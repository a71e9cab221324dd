//! API keys in PostgreSQL: only the SHA-256 of each secret is stored.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::rows::text;
use crate::keys::{KeyRecord, NewKey, Role, generate_secret, hash_secret};
use crate::{Result, StoreError, now_ms};

fn key_from_row(row: &PgRow) -> Result<KeyRecord> {
    let role: String = row.try_get("role")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        max_priority: row.try_get("max_priority")?,
        created_at_ms: row.try_get("created_at")?,
    })
}

pub(super) async fn create(pool: &PgPool, key: NewKey) -> Result<(KeyRecord, String)> {
    let secret = generate_secret();
    let row = sqlx::query(
        "INSERT INTO api_keys (id, name, role, secret_sha256, max_priority, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, name, role, max_priority, created_at",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(text(&key.name))
    .bind(key.role.as_str())
    .bind(hash_secret(&secret))
    .bind(key.max_priority)
    .bind(now_ms())
    .fetch_one(pool)
    .await?;
    Ok((key_from_row(&row)?, secret))
}

pub(super) async fn find_by_secret(pool: &PgPool, secret: &str) -> Result<Option<KeyRecord>> {
    let row = sqlx::query(
        "SELECT id, name, role, max_priority, created_at FROM api_keys \
         WHERE secret_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(hash_secret(secret))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn count(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The shared secret `name`, created (random) by the first caller: concurrent first
/// calls (several servers starting at once) agree, since only one insert wins and
/// everyone reads the winner.
pub(super) async fn server_secret(pool: &PgPool, name: &str) -> Result<String> {
    sqlx::query(
        "INSERT INTO server_secrets (name, secret, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(text(name))
    .bind(generate_secret())
    .bind(now_ms())
    .execute(pool)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT secret FROM server_secrets WHERE name = $1")
            .bind(text(name))
            .fetch_one(pool)
            .await?,
    )
}
