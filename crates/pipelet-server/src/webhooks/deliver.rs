//! One delivery attempt of one event: resolve the receiver's host and check every
//! address (a DNS answer that points inside is refused, and the connection goes to the
//! checked address, so a rebinding between the check and the connect cannot slip
//! through), POST the signed body with a 10 s timeout, never follow a redirect, read at
//! most 64 KiB of the answer, and turn the outcome into a [`WebhookAttempt`].

use std::time::Duration;

use pipelet_store::{WebhookAttempt, WebhookEvent};
use rand::Rng;

use super::ssrf;

/// The whole attempt, connect to last byte read.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a receiver's answer that is read (only a snippet is kept, for errors).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Each wait is this many times the previous one: with the default 5 s first wait and
/// 10 attempts, the attempts span about three and a half hours.
const BACKOFF_FACTOR: u32 = 3;
/// How much of the receiver's answer goes into `last_error`.
const MAX_ERROR_SNIPPET: usize = 200;

/// What a delivery needs besides the event.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Deliver to loopback and private addresses too (`--webhook-allow-private`).
    pub allow_private: bool,
    /// The attempt that fails past this many gives up (`--webhook-max-attempts`, ≥ 1).
    pub max_attempts: u32,
    /// The wait before the first retry; later ones grow by [`BACKOFF_FACTOR`].
    pub retry_base: Duration,
}

/// The wait before retry number `retry` (1 for the first), without jitter.
pub fn backoff(base: Duration, retry: u32) -> Duration {
    let factor = BACKOFF_FACTOR.saturating_pow(retry.saturating_sub(1).min(30));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// [`backoff`] with ±20 % jitter, so receivers that come back are not hit by every
/// server's retries at once.
pub fn backoff_jittered(base: Duration, retry: u32) -> Duration {
    let jitter = rand::rng().random_range(0.8..=1.2);
    backoff(base, retry).mul_f64(jitter)
}

/// Ms from now to the next attempt after `attempts` failed ones.
fn next_at(now_ms: i64, settings: &Settings, attempts: u32) -> i64 {
    let wait = backoff_jittered(settings.retry_base, attempts);
    now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}

/// The result of one HTTP exchange, before the retry policy.
#[derive(Debug)]
pub enum Exchange {
    /// The receiver answered.
    Status {
        /// The HTTP status code.
        status: u16,
        /// Up to 200 characters of the body, control characters removed, for `last_error`.
        snippet: String,
    },
    /// No answer (invalid or refused URL, DNS, connect, timeout): why, in words.
    Error(String),
}

/// The attempt to record for `exchange`, the `attempts`-th (1 for the first).
pub fn classify(
    exchange: Exchange,
    attempts: u32,
    settings: &Settings,
    now_ms: i64,
) -> WebhookAttempt {
    let (status, error) = match exchange {
        Exchange::Status { status, .. } if (200..300).contains(&status) => {
            return WebhookAttempt::Delivered { status };
        }
        Exchange::Status { status: 410, .. } => {
            return WebhookAttempt::GaveUp {
                status: Some(410),
                error: "the receiver answered 410 Gone: no more deliveries".into(),
            };
        }
        Exchange::Status { status, snippet } => {
            let what = if (300..400).contains(&status) {
                "a redirect, which is not followed"
            } else {
                "not a 2xx"
            };
            let mut error = format!("the receiver answered {status} ({what})");
            if !snippet.is_empty() {
                error.push_str(": ");
                error.push_str(&snippet);
            }
            (Some(status), error)
        }
        Exchange::Error(e) => (None, e),
    };
    if attempts >= settings.max_attempts {
        return WebhookAttempt::GaveUp {
            status,
            error: format!("{error} (gave up after {attempts} attempts)"),
        };
    }
    WebhookAttempt::Retry {
        status,
        error,
        next_at_ms: next_at(now_ms, settings, attempts),
    }
}

/// Sends `body` to `event.url` with the signature headers; never follows redirects.
pub async fn post(
    event: &WebhookEvent,
    body: Vec<u8>,
    timestamp: i64,
    signature: &str,
    allow_private: bool,
) -> Exchange {
    let url = match reqwest::Url::parse(&event.url) {
        Ok(url) => url,
        Err(e) => return Exchange::Error(format!("the webhook URL is invalid: {e}")),
    };
    let addrs = match ssrf::resolve_checked(&url, allow_private).await {
        Ok(addrs) => addrs,
        Err(e) => return Exchange::Error(e),
    };
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("pipelet/", env!("CARGO_PKG_VERSION")));
    // Pin the host to the checked addresses: reqwest resolves nothing itself.
    if let Some(host) = url.host_str() {
        builder = builder.resolve_to_addrs(host, &addrs);
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => return Exchange::Error(format!("cannot build the HTTP client: {e}")),
    };
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return Exchange::Error(describe(&e)),
    };
    let status = response.status().as_u16();
    let mut read = Vec::new();
    // Bounded read: a receiver cannot make us buffer more than MAX_RESPONSE_BYTES.
    while read.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES - read.len();
                read.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let snippet: String = String::from_utf8_lossy(&read)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_SNIPPET)
        .collect();
    Exchange::Status { status, snippet }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {}s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        format!("the request failed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            allow_private: true,
            max_attempts: 10,
            retry_base: Duration::from_secs(5),
        }
    }

    #[test]
    fn backoff_starts_at_the_base_and_grows_to_the_cap() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 2), Duration::from_secs(15));
        assert_eq!(backoff(base, 9), MAX_BACKOFF);
        assert_eq!(backoff(base, u32::MAX), MAX_BACKOFF);
        let total: Duration = (1..10).map(|n| backoff(base, n)).sum();
        assert!(total > Duration::from_secs(2 * 3600), "{total:?}");
        for _ in 0..100 {
            let d = backoff_jittered(base, 1);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
    }

    #[test]
    fn outcomes() {
        let s = settings();
        let ok = classify(
            Exchange::Status {
                status: 204,
                snippet: String::new(),
            },
            1,
            &s,
            0,
        );
        assert!(matches!(ok, WebhookAttempt::Delivered { status: 204 }));
        let gone = classify(
            Exchange::Status {
                status: 410,
                snippet: String::new(),
            },
            1,
            &s,
            0,
        );
        assert!(matches!(
            gone,
            WebhookAttempt::GaveUp {
                status: Some(410),
                ..
            }
        ));
        let redirect = classify(
            Exchange::Status {
                status: 302,
                snippet: String::new(),
            },
            1,
            &s,
            0,
        );
        match redirect {
            WebhookAttempt::Retry {
                status: Some(302),
                next_at_ms,
                error,
            } => {
                assert!((4000..=6000).contains(&next_at_ms), "{next_at_ms}");
                assert!(error.contains("redirect"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        let down = classify(Exchange::Error("cannot connect".into()), 2, &s, 0);
        assert!(matches!(down, WebhookAttempt::Retry { status: None, .. }));
        let last = classify(
            Exchange::Status {
                status: 500,
                snippet: "boom".into(),
            },
            10,
            &s,
            0,
        );
        match last {
            WebhookAttempt::GaveUp {
                status: Some(500),
                error,
            } => {
                assert!(
                    error.contains("boom") && error.contains("10 attempts"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
