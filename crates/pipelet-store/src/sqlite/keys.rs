//! API keys in SQLite: only the SHA-256 of each secret is stored.

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use crate::keys::{KeyRecord, NewKey, Role, generate_secret, hash_secret};
use crate::{Result, StoreError, now_ms};

fn key_from_row(row: &SqliteRow) -> Result<KeyRecord> {
    let role: String = row.try_get("role")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        max_priority: row.try_get("max_priority")?,
        created_at_ms: row.try_get("created_at")?,
    })
}

pub(super) async fn create(
    conn: &mut SqliteConnection,
    key: NewKey,
) -> Result<(KeyRecord, String)> {
    let secret = generate_secret();
    let row = sqlx::query(
        "INSERT INTO api_keys (id, name, role, secret_sha256, max_priority, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id, name, role, max_priority, created_at",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(&key.name)
    .bind(key.role.as_str())
    .bind(hash_secret(&secret))
    .bind(key.max_priority)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await?;
    Ok((key_from_row(&row)?, secret))
}

pub(super) async fn find_by_secret(
    conn: &mut SqliteConnection,
    secret: &str,
) -> Result<Option<KeyRecord>> {
    let row = sqlx::query(
        "SELECT id, name, role, max_priority, created_at FROM api_keys \
         WHERE secret_sha256 = ? AND revoked_at IS NULL",
    )
    .bind(hash_secret(secret))
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn count(conn: &mut SqliteConnection) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        .fetch_one(&mut *conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The shared secret `name`, created (random) by the first caller: concurrent first
/// calls agree, since only one insert wins and everyone reads the winner.
pub(super) async fn server_secret(conn: &mut SqliteConnection, name: &str) -> Result<String> {
    sqlx::query(
        "INSERT INTO server_secrets (name, secret, created_at) VALUES (?, ?, ?) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(generate_secret())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT secret FROM server_secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?,
    )
}
