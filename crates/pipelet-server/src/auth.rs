//! Bearer-key authentication. `Authorization: Bearer <key>` (and fal's `Key <key>`) is
//! resolved to a [`Principal`]; verified keys are cached briefly so a status poll does
//! not cost a key lookup.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use pipelet_store::{KeyRecord, Role, Store};

use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified key is trusted without asking the store again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// Cache entries kept at most; the cache is cleared when full (keys are few).
const KEY_CACHE_MAX: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Principal {
    pub key: KeyRecord,
}

impl Principal {
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

#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (KeyRecord, Instant)>>,
}

impl KeyCache {
    pub async fn resolve(
        &self,
        store: &dyn Store,
        secret: &str,
    ) -> Result<Option<KeyRecord>, ApiError> {
        let now = Instant::now();
        if let Some((key, at)) = self.read().get(secret)
            && now.duration_since(*at) < KEY_CACHE_TTL
        {
            return Ok(Some(key.clone()));
        }
        let found = store.find_key_by_secret(secret).await?;
        if let Some(key) = &found {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
            entries.insert(secret.to_string(), (key.clone(), now));
        }
        Ok(found)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, (KeyRecord, Instant)>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
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

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = secret_from(parts)?;
        match state.keys.resolve(state.store.as_ref(), secret).await? {
            Some(key) => Ok(Principal { key }),
            None => Err(ApiError::Unauthorized(
                "invalid API key: it does not exist or was revoked".into(),
            )),
        }
    }
}
