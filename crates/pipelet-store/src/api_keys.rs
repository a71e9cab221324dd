//! API keys: roles, how secrets are made, and how they are hashed for storage.
//!
//! Secrets are 32 random bytes, so a single SHA-256 is enough to store them safely (no
//! password-style stretching needed), and lookups stay one indexed query.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a key may do; fixed when the key is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Creates requests and reads or cancels its own.
    Client,
    /// Only the worker API.
    Worker,
    /// Everything, including every client's requests.
    Admin,
}

impl Role {
    /// The lowercase name: stored in `api_keys.role` and taken by `--role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    /// The role named by [`Role::as_str`]; `None` for any other text.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "client" => Some(Role::Client),
            "worker" => Some(Role::Worker),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key to create (`pipelet keys create`, `POST /admin/v1/keys`, or the first admin key).
#[derive(Debug, Clone)]
pub struct NewKey {
    /// A label for people (job history, its `key_name` filter), unique among the keys
    /// that are not revoked: management commands address a key by it.
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// The most request `priority` this key may add to its tier's priority.
    pub max_priority: i64,
    /// When the key stops working, ms since the epoch; `None` never.
    pub expires_at_ms: Option<i64>,
}

/// A change to a live key (`pipelet keys update`, `PATCH /admin/v1/keys/{name}`);
/// `None` fields are left as they are.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// A new priority cap.
    pub max_priority: Option<i64>,
    /// A new expiry: `Some(None)` removes it, `Some(Some(ms))` sets it.
    pub expires_at_ms: Option<Option<i64>>,
    /// A new queued-jobs quota: `Some(None)` goes back to the server's default,
    /// `Some(Some(0))` is no limit for this key.
    pub max_queued: Option<Option<u64>>,
    /// A new running-jobs quota, as [`KeyUpdate::max_queued`].
    pub max_running: Option<Option<u64>>,
    /// A new creates-per-minute rate, as [`KeyUpdate::max_queued`].
    pub creates_per_minute: Option<Option<u64>>,
    /// A new fair-sharing weight, [`crate::fair::MIN_WEIGHT`] to
    /// [`crate::fair::MAX_WEIGHT`] (callers check the range; the database refuses others).
    pub weight: Option<i64>,
}

/// A stored key, without its secret (only the secret's hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// A UUID: what jobs record as their owner.
    pub id: String,
    /// The label it was created with.
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// The most request `priority` this key may add to its tier's priority.
    pub max_priority: i64,
    /// When it was created, ms since the epoch.
    pub created_at_ms: i64,
    /// The first characters of the secret after [`SECRET_PREFIX`], to recognise a key by
    /// (not enough to use it); empty for keys made before prefixes were kept.
    pub prefix: String,
    /// When it stops working, ms since the epoch; `None` never.
    pub expires_at_ms: Option<i64>,
    /// When it was last used, ms since the epoch, to within about a minute
    /// ([`LAST_USED_RESOLUTION_MS`]); `None` if never.
    pub last_used_at_ms: Option<i64>,
    /// When it was revoked, ms since the epoch; `None` while live.
    pub revoked_at_ms: Option<i64>,
    /// The most jobs it may have queued at once; `None` takes the server's default
    /// (`--max-queued-per-key`), `Some(0)` is no limit.
    pub max_queued: Option<u64>,
    /// The most jobs of it that may run at once; `None` takes the server's default
    /// (`--max-running-per-key`), `Some(0)` is no limit.
    pub max_running: Option<u64>,
    /// The most creates a minute (a token bucket); `None` takes the server's default
    /// (`--creates-per-minute`), `Some(0)` is no limit.
    pub creates_per_minute: Option<u64>,
    /// Its share of the queue against other keys' jobs of the same priority (see
    /// [`crate::fair`]): a key of weight 2 gets twice the dispatches of a key of weight 1.
    pub weight: i64,
}

impl KeyRecord {
    /// Whether the key is past its expiry at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// The server-wide quota defaults the store enforces for keys without their own
/// ([`KeyRecord::max_queued`], [`KeyRecord::max_running`]); 0 is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaDefaults {
    /// `--max-queued-per-key`: a create beyond it fails with
    /// [`StoreError::KeyQueueFull`](crate::StoreError::KeyQueueFull).
    pub max_queued: u64,
    /// `--max-running-per-key`: a claim skips the queued jobs of a key at it.
    pub max_running: u64,
}

/// [`QuotaDefaults`] as the store holds them: set at start, read by every create and
/// claim without a lock.
#[derive(Debug, Default)]
pub(crate) struct QuotaCell {
    max_queued: std::sync::atomic::AtomicU64,
    max_running: std::sync::atomic::AtomicU64,
}

impl QuotaCell {
    /// Replaces the defaults.
    pub(crate) fn set(&self, defaults: QuotaDefaults) {
        use std::sync::atomic::Ordering::Relaxed;
        self.max_queued.store(defaults.max_queued, Relaxed);
        self.max_running.store(defaults.max_running, Relaxed);
    }

    /// The defaults now.
    pub(crate) fn get(&self) -> QuotaDefaults {
        use std::sync::atomic::Ordering::Relaxed;
        QuotaDefaults {
            max_queued: self.max_queued.load(Relaxed),
            max_running: self.max_running.load(Relaxed),
        }
    }
}

/// A quota as effective: the key's own, else the default; `None` when there is no limit.
pub fn effective_limit(own: Option<u64>, default: u64) -> Option<u64> {
    Some(own.unwrap_or(default)).filter(|&n| n > 0)
}

/// A quota as stored: the key's own limit, which SQL keeps as a signed integer.
pub(crate) fn limit_to_sql(limit: Option<u64>) -> Option<i64> {
    limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// `last_used_at` is written only when it is older than this, so a busy key costs one
/// write a minute, not one per request.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// How many characters of the secret (after [`SECRET_PREFIX`]) are kept as its prefix.
pub const PREFIX_CHARS: usize = 8;

/// The columns [`key_from_row`] reads, for both backends' `SELECT`s and `RETURNING`s.
pub(crate) const KEY_COLUMNS: &str = "id, name, role, max_priority, created_at, secret_prefix, \
    expires_at, last_used_at, revoked_at, max_queued, max_running, creates_per_minute, weight";

/// The shown prefix of `secret`: its first [`PREFIX_CHARS`] characters after
/// [`SECRET_PREFIX`].
pub(crate) fn secret_prefix(secret: &str) -> String {
    secret
        .strip_prefix(SECRET_PREFIX)
        .unwrap_or(secret)
        .chars()
        .take(PREFIX_CHARS)
        .collect()
}

/// Whether `stored` (a hash read from the database) is the hash of `secret`, compared in
/// constant time so the comparison's duration says nothing about the stored hash.
pub(crate) fn hash_matches(stored: &str, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    let computed = hash_secret(secret);
    bool::from(stored.as_bytes().ct_eq(computed.as_bytes()))
}

/// The most characters a key name may have.
pub const MAX_KEY_NAME_CHARS: usize = 100;

/// `name` trimmed, if it is a valid key name: 1 to [`MAX_KEY_NAME_CHARS`] characters, no
/// control characters (names are for people and appear in logs); else why not.
pub fn check_key_name(name: &str) -> std::result::Result<String, String> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_KEY_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(format!(
            "a key name must be 1 to {MAX_KEY_NAME_CHARS} printable characters"
        ));
    }
    Ok(name.to_string())
}

/// The expiry, ms since the epoch, of a key made at `now_ms` to last `secs` seconds.
pub fn expiry_after(now_ms: i64, secs: u64) -> i64 {
    let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    now_ms.saturating_add(ms)
}

/// Prefix of every secret, so leaked keys are recognisable by secret scanners.
pub const SECRET_PREFIX: &str = "plt_";

/// A new secret: [`SECRET_PREFIX`] and base64url of 32 random bytes.
pub(crate) fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What the store keeps of a secret: its SHA-256, as 64 hex digits.
pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A stored limit; a negative one (never written) reads as no limit.
fn limit_from_sql(v: Option<i64>) -> Option<u64> {
    v.map(|n| u64::try_from(n).unwrap_or(0))
}

/// Reads a key from either backend's row of [`KEY_COLUMNS`].
pub(crate) fn key_from_row<'r, R>(row: &'r R) -> crate::Result<KeyRecord>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let role: String = row.try_get("role")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role)
            .ok_or_else(|| crate::StoreError::Corrupt(format!("role {role:?}")))?,
        max_priority: row.try_get("max_priority")?,
        created_at_ms: row.try_get("created_at")?,
        prefix: row.try_get("secret_prefix")?,
        expires_at_ms: row.try_get("expires_at")?,
        last_used_at_ms: row.try_get("last_used_at")?,
        revoked_at_ms: row.try_get("revoked_at")?,
        max_queued: limit_from_sql(row.try_get("max_queued")?),
        max_running: limit_from_sql(row.try_get("max_running")?),
        creates_per_minute: limit_from_sql(row.try_get("creates_per_minute")?),
        weight: row.try_get("weight")?,
    })
}

/// The key in a row of [`KEY_COLUMNS`] and `secret_sha256`, found by the hash of
/// `secret`: `None` unless the hash matches and the key is unexpired at `now_ms`; with
/// it, whether its `last_used_at` is stale enough to be touched.
pub(crate) fn key_for_secret<'r, R>(
    row: &'r R,
    secret: &str,
    now_ms: i64,
) -> crate::Result<Option<(KeyRecord, bool)>>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let stored: String = row.try_get("secret_sha256")?;
    let key = key_from_row(row)?;
    if !hash_matches(&stored, secret) || key.is_expired(now_ms) {
        return Ok(None);
    }
    let stale = key
        .last_used_at_ms
        .is_none_or(|at| now_ms.saturating_sub(at) >= LAST_USED_RESOLUTION_MS);
    Ok(Some((key, stale)))
}

/// A unique violation on insert or update: the only unique column a caller controls is a
/// live key's name (a secret hash colliding is impossible).
pub(crate) fn name_taken(e: sqlx::Error, name: &str) -> crate::StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            crate::StoreError::KeyNameTaken(name.to_string())
        }
        _ => crate::StoreError::Database(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_hash_stably() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert_eq!(hash_secret(&a).len(), 64);
        assert!(hash_matches(&hash_secret(&a), &a));
        assert!(!hash_matches(&hash_secret(&a), &b));
        assert_eq!(secret_prefix(&a).len(), PREFIX_CHARS);
        assert!(a[SECRET_PREFIX.len()..].starts_with(&secret_prefix(&a)));
    }
}
