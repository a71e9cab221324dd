//! [`KeyStore`]: API keys and shared server secrets.

use async_trait::async_trait;

use crate::{KeyRecord, KeyUpdate, NewKey, QuotaDefaults, Result};

/// API keys and the secrets every server on one store shares.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Creates a key with a fresh secret; returns it with the secret, which is shown
    /// only now (the store keeps only its hash). [`StoreError::KeyNameTaken`] if a live
    /// key has its name.
    ///
    /// [`StoreError::KeyNameTaken`]: crate::StoreError::KeyNameTaken
    async fn create_key(&self, key: NewKey) -> Result<(KeyRecord, String)>;

    /// The key whose secret this is (`plt_…`); `None` if none is, or it was revoked or
    /// has expired. Records the use in `last_used_at` at most about once a minute per
    /// key; the record returned is as read before that.
    async fn find_key_by_secret(&self, secret: &str) -> Result<Option<KeyRecord>>;

    /// Every key, revoked ones too, oldest first (never their secrets).
    async fn list_keys(&self) -> Result<Vec<KeyRecord>>;

    /// Revokes the live key named `name`: its secret stops working at once.
    /// [`StoreError::KeyNotFound`] if no live key has that name.
    ///
    /// [`StoreError::KeyNotFound`]: crate::StoreError::KeyNotFound
    async fn revoke_key(&self, name: &str) -> Result<KeyRecord>;

    /// Gives the live key named `name` a new secret (same id, name and role) and returns
    /// it; the old secret stops working at once.
    async fn rotate_key(&self, name: &str) -> Result<(KeyRecord, String)>;

    /// Changes the priority cap, expiry, quotas (or fair-sharing weight) of the live key
    /// named `name`.
    async fn update_key(&self, name: &str, update: KeyUpdate) -> Result<KeyRecord>;

    /// A number that changes whenever any key is revoked, rotated or updated: servers
    /// poll it (cheaply, about once a second) to drop the keys they have cached.
    async fn key_generation(&self) -> Result<i64>;

    /// How many keys are not revoked: a start creates an admin key only when none is.
    async fn count_keys(&self) -> Result<u64>;

    /// A random secret shared by every server on this store, created by the first call
    /// for `name` (e.g. the key that signs result links, so any server accepts them).
    async fn server_secret(&self, name: &str) -> Result<String>;

    /// Sets the quotas this store enforces for keys that have none of their own: the
    /// queued-jobs quota at create ([`StoreError::KeyQueueFull`]) and the running-jobs
    /// quota at claim (a key at it is skipped). Both unlimited until set.
    ///
    /// [`StoreError::KeyQueueFull`]: crate::StoreError::KeyQueueFull
    fn set_quota_defaults(&self, defaults: QuotaDefaults);
}
