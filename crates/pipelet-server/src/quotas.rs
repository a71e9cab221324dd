//! Per-key quotas at create: the creates-per-minute token bucket (kept in this server's
//! memory, so with several servers a key gets up to that many times the rate unless the
//! load balancer pins keys to servers), and the 429s of every per-key quota with
//! `Retry-After` and the IETF `RateLimit-*` headers. The queued-jobs quota is counted by
//! the store in the create's transaction and the running-jobs quota at claim (see
//! `pipelet_store::QuotaDefaults`); only their answers are made here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use pipelet_api::ErrorCode;
use pipelet_store::KeyRecord;

use crate::error::ApiError;

/// How many keys' buckets are kept at most; past it, full buckets (which a fresh one
/// equals) are dropped first, so memory stays bounded whatever the number of keys.
const MAX_BUCKETS: usize = 100_000;

/// `Retry-After` of a create refused by the queued-jobs quota: the key's queue drains
/// only as its jobs start, which the server cannot predict.
const QUEUE_FULL_RETRY_SECS: u64 = 10;

/// Where a key stands against a limit, as the IETF `RateLimit-*` headers say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// `RateLimit-Limit`: the quota (the bucket's size for the create rate).
    pub limit: u64,
    /// `RateLimit-Remaining`: what is left of it now.
    pub remaining: u64,
    /// `RateLimit-Reset`: seconds until the quota is whole again.
    pub reset_secs: u64,
}

impl RateLimit {
    /// Adds the `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("ratelimit-limit", self.limit),
            ("ratelimit-remaining", self.remaining),
            ("ratelimit-reset", self.reset_secs),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

/// The 429 of a create refused by the store: the key already has `limit` queued jobs.
pub fn queue_full(limit: u64, own: bool) -> ApiError {
    let which = if own {
        "its own max-queued limit, set with `pipelet keys update --max-queued`"
    } else {
        "its --max-queued-per-key limit"
    };
    ApiError::RateLimited {
        code: ErrorCode::KeyQueueFull,
        detail: format!(
            "this key already has {} ({which}); retry once some have started",
            pipelet_api::plural(limit, "queued job", "queued jobs")
        ),
        retry_after_secs: QUEUE_FULL_RETRY_SECS,
        limit: RateLimit {
            limit,
            remaining: 0,
            reset_secs: QUEUE_FULL_RETRY_SECS,
        },
    }
}

/// One key's token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The creates-per-minute token buckets of this server, one per key.
#[derive(Debug)]
pub struct CreateLimiter {
    /// `--creates-per-minute` (0: no limit).
    per_minute: u64,
    /// `--create-burst`: the bucket's size; `None` is the per-minute rate.
    burst: Option<u64>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl CreateLimiter {
    /// Buckets refilling at `per_minute` (a key's own rate overrides it; 0 is no limit)
    /// and holding `burst` creates (default: the rate).
    pub fn new(per_minute: u64, burst: Option<u64>) -> Self {
        Self {
            per_minute,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one create from `key`'s bucket: `Ok(None)` when no rate applies to the key,
    /// `Ok(Some(_))` with where it stands after this create (for the headers of the
    /// answer), or the 429 naming the limit when its bucket is empty.
    pub fn take(&self, key: &KeyRecord) -> Result<Option<RateLimit>, ApiError> {
        self.take_for(&key.id, key.creates_per_minute)
    }

    /// [`CreateLimiter::take`] for the key with this id and own rate.
    fn take_for(&self, key_id: &str, own: Option<u64>) -> Result<Option<RateLimit>, ApiError> {
        let rate = own.unwrap_or(self.per_minute);
        if rate == 0 {
            return Ok(None);
        }
        let size = self.burst.unwrap_or(rate).max(1);
        let per_sec = rate as f64 / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key_id) {
            let full = size as f64;
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < full);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key_id.to_string()).or_insert(Bucket {
            tokens: size as f64,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(size as f64);
        bucket.at = now;
        let whole_in = |tokens: f64| ((size as f64 - tokens) / per_sec).ceil().max(0.0) as u64;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(Some(RateLimit {
                limit: size,
                remaining: bucket.tokens.floor() as u64,
                reset_secs: whole_in(bucket.tokens),
            }));
        }
        let retry_after_secs = ((1.0 - bucket.tokens) / per_sec).ceil().max(1.0) as u64;
        let which = if own.is_some() {
            "its own creates-per-minute rate, set with `pipelet keys update --creates-per-minute`"
        } else {
            "the server's --creates-per-minute rate"
        };
        Err(ApiError::RateLimited {
            code: ErrorCode::KeyRateLimited,
            detail: format!(
                "this key made more than {} a minute ({which}, in bursts of up to {size}); \
                 retry in {}",
                pipelet_api::plural(rate, "create", "creates"),
                pipelet_api::plural(retry_after_secs, "second", "seconds"),
            ),
            retry_after_secs,
            limit: RateLimit {
                limit: size,
                remaining: 0,
                reset_secs: whole_in(bucket.tokens),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_up_to_the_bucket_then_refuses() {
        let limiter = CreateLimiter::new(60, Some(2));
        let first = limiter.take_for("k", None).ok().flatten();
        assert_eq!(first.map(|l| (l.limit, l.remaining)), Some((2, 1)));
        assert!(limiter.take_for("k", None).is_ok());
        match limiter.take_for("k", None) {
            Err(ApiError::RateLimited {
                retry_after_secs,
                limit,
                ..
            }) => {
                assert_eq!(retry_after_secs, 1);
                assert_eq!(limit.remaining, 0);
            }
            other => panic!("expected a 429, got {other:?}"),
        }
        assert_eq!(
            CreateLimiter::new(0, None).take_for("k", None).ok(),
            Some(None)
        );
        assert_eq!(
            CreateLimiter::new(60, None).take_for("k", Some(0)).ok(),
            Some(None)
        );
    }
}
