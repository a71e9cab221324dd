//! Bearer-key authentication. `Authorization: Bearer <key>` (and fal's `Key <key>`) is
//! resolved to a [`Principal`]; verified keys are cached briefly so a status poll does
//! not cost a key lookup, and a cheap poll of the store's key generation (at most every
//! [`GENERATION_POLL`]) drops the cache when any key was revoked, rotated or updated, so
//! a revocation — through any server or the CLI — takes effect within a second.
//! Failed authentications (a well-formed key that matches none) are counted per client
//! address ([`FailedAuth`]): past [`MAX_FAILURES`] in [`FAILURE_WINDOW`] every attempt
//! from it gets 429. Secrets are never logged.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use pipelet_api::ErrorCode;
use pipelet_store::{KeyRecord, Role, Store, now_ms};

use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified key is trusted without asking the store again (the generation
/// poll still drops it at once when keys change).
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// Cache entries kept at most; the cache is cleared when full (keys are few).
const KEY_CACHE_MAX: usize = 10_000;
/// How often the store's key generation is read (only while requests come in): a revoke
/// elsewhere is seen within this plus one query.
pub const GENERATION_POLL: Duration = Duration::from_millis(500);

/// Failed authentications one address may make in [`FAILURE_WINDOW`] before it is
/// refused with 429.
pub const MAX_FAILURES: u32 = 20;
/// The window failed authentications are counted in, from an address's first failure.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it, expired windows and then the oldest are dropped.
const FAILURE_ADDRESSES_MAX: usize = 10_000;

/// The caller of a request, from its API key; handlers take it as an extractor.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key as stored: id, name, role and priority cap (never its secret).
    pub key: KeyRecord,
}

impl Principal {
    /// Whether this caller may read a job created by `owner_key_id`: its owner or an admin.
    pub fn can_see(&self, owner_key_id: &str) -> bool {
        self.key.role == Role::Admin || self.key.id == owner_key_id
    }

    /// Client endpoints: clients and admins.
    pub fn require_client(&self) -> Result<(), ApiError> {
        match self.key.role {
            Role::Client | Role::Admin => Ok(()),
            Role::Worker => Err(ApiError::Forbidden(
                "worker keys can only use the worker API; use a client key for requests".into(),
            )),
        }
    }

    /// Who did something, as recorded in job history.
    pub fn label(&self) -> String {
        format!("key '{}' ({})", self.key.name, self.key.role)
    }
}

/// Verified keys by secret, trusted for up to 30 s unless the key generation changes.
#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (KeyRecord, Instant)>>,
    /// When the key generation was last read, and what it was.
    generation: Mutex<Option<(Instant, i64)>>,
    /// Bumped by every [`KeyCache::clear`], so a lookup that began before a clear does
    /// not cache what it read (possibly a key revoked meanwhile).
    epoch: AtomicU64,
    /// Failed authentications per client address.
    pub failures: FailedAuth,
}

impl KeyCache {
    /// The key with this secret, from the cache or else the store; `None` if unknown,
    /// revoked or expired. Unknown secrets are not cached, so each costs a store lookup.
    pub async fn resolve(
        &self,
        store: &dyn Store,
        secret: &str,
    ) -> Result<Option<KeyRecord>, ApiError> {
        self.follow_generation(store).await;
        let now = Instant::now();
        if let Some((key, at)) = self.read().get(secret)
            && now.duration_since(*at) < KEY_CACHE_TTL
            && !key.is_expired(now_ms())
        {
            return Ok(Some(key.clone()));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let found = store.find_key_by_secret(secret).await?;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match &found {
            Some(_) if self.epoch.load(Ordering::Acquire) != epoch => {}
            Some(key) => {
                if entries.len() >= KEY_CACHE_MAX {
                    entries.clear();
                }
                entries.insert(secret.to_string(), (key.clone(), now));
            }
            None => {
                entries.remove(secret);
            }
        }
        Ok(found)
    }

    /// Drops every cached key: after a revoke, rotate or update through this server.
    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Reads the store's key generation if the last read is [`GENERATION_POLL`] old, and
    /// drops the cache when it changed (or cannot be read: then lookups decide).
    async fn follow_generation(&self, store: &dyn Store) {
        let now = Instant::now();
        let last = {
            let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
            match *generation {
                Some((at, _)) if now.duration_since(at) < GENERATION_POLL => return,
                Some((_, value)) => {
                    // Claim this poll so concurrent requests do not all query.
                    *generation = Some((now, value));
                    Some(value)
                }
                None => None,
            }
        };
        let current = store.key_generation().await;
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        match current {
            Ok(value) => {
                if last.is_some_and(|last| last != value) {
                    self.clear();
                }
                *generation = Some((now, value));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the key generation; dropping cached keys");
                self.clear();
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, (KeyRecord, Instant)>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Failed authentications per client address, in a bounded map: past [`MAX_FAILURES`]
/// within [`FAILURE_WINDOW`] of its first failure, an address is refused (429) even with
/// a valid key, so keys cannot be guessed quickly.
#[derive(Default)]
pub struct FailedAuth {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAuth {
    /// `Err(429)` if `addr` is over its limit now, with the seconds until its window ends.
    pub fn check(&self, addr: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(&addr) {
            Some((start, failures)) if *failures >= MAX_FAILURES => {
                let left = FAILURE_WINDOW.saturating_sub(now.duration_since(*start));
                if left.is_zero() {
                    return Ok(());
                }
                Err(ApiError::TooManyRequests {
                    code: ErrorCode::RateLimited,
                    detail: format!(
                        "too many failed authentications from this address (more than \
                         {MAX_FAILURES} in {} s); retry later",
                        FAILURE_WINDOW.as_secs()
                    ),
                    retry_after_secs: left.as_secs().max(1),
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication from `addr`.
    pub fn record(&self, addr: IpAddr) {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !windows.contains_key(&addr) && windows.len() >= FAILURE_ADDRESSES_MAX {
            windows.retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
            if windows.len() >= FAILURE_ADDRESSES_MAX
                && let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(addr, _)| *addr)
            {
                windows.remove(&oldest);
            }
        }
        let window = windows.entry(addr).or_insert((now, 0));
        if now.duration_since(window.0) >= FAILURE_WINDOW {
            *window = (now, 0);
        }
        window.1 = window.1.saturating_add(1);
    }

    /// How many addresses are tracked (for tests of the bound).
    pub fn len(&self) -> usize {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn secret_from(parts: &Parts) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::Unauthorized(
            "missing API key: send the header 'Authorization: Bearer <key>'".into(),
        )
    };
    let value = parts.headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid text".into()))?;
    let (scheme, secret) = value.trim().split_once(' ').ok_or_else(|| {
        ApiError::Unauthorized(
            "malformed Authorization header: expected 'Bearer <key>' (or 'Key <key>')".into(),
        )
    })?;
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("key")) {
        return Err(ApiError::Unauthorized(format!(
            "unsupported authorization scheme '{scheme}': use 'Bearer <key>'"
        )));
    }
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(missing());
    }
    Ok(secret)
}

/// The client's address, when the server was started with connect info (always, outside
/// tests that serve the router bare).
fn client_addr(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let addr = client_addr(parts);
        if let Some(addr) = addr {
            state.keys.failures.check(addr)?;
        }
        let failed = |e: ApiError| {
            if let Some(addr) = addr {
                state.keys.failures.record(addr);
            }
            e
        };
        // Only a well-formed key that matches none is a guess; a missing or malformed
        // header could never have authenticated, so it is not counted.
        let secret = secret_from(parts)?;
        match state.keys.resolve(state.store.as_ref(), secret).await? {
            Some(key) => Ok(Principal { key }),
            None => Err(failed(ApiError::Unauthorized(
                "invalid API key: it does not exist, was revoked or has expired".into(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_passes() {
        let limits = FailedAuth::default();
        let addr: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..MAX_FAILURES {
            assert!(limits.check(addr).is_ok());
            limits.record(addr);
        }
        let refused = limits.check(addr).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::RateLimited);
        assert!(
            limits.check([10, 0, 0, 2].into()).is_ok(),
            "other addresses are not"
        );
        // An expired window starts over.
        limits
            .windows
            .lock()
            .unwrap()
            .insert(addr, (Instant::now() - FAILURE_WINDOW, MAX_FAILURES));
        assert!(limits.check(addr).is_ok());
        limits.record(addr);
        assert_eq!(limits.windows.lock().unwrap()[&addr].1, 1);
    }

    #[test]
    fn the_address_map_is_bounded() {
        let limits = FailedAuth::default();
        for i in 0..(FAILURE_ADDRESSES_MAX as u32 + 50) {
            limits.record(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(limits.len(), FAILURE_ADDRESSES_MAX);
    }
}
