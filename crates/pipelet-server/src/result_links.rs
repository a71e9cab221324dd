//! Signed, expiring links to a result's raw MP4 (`video.url`): an HMAC-SHA256 over the
//! request id and the expiry, keyed by a secret kept in the store so that every server
//! of a fleet accepts every link. With `--presign` (S3 blobs) the link is an S3
//! presigned URL instead, and downloads bypass pipelet.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use pipelet_store::{JobRecord, JobResult};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use crate::urls::BaseUrl;

/// The store's name for the link-signing secret (`server_secrets.name`).
pub const SECRET_NAME: &str = "result_links";

/// Longest `sig` accepted: base64url of a SHA-256 MAC is 43 characters.
const MAX_SIG_CHARS: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks result links.
pub struct LinkSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(..)")
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LinkSigner {
    /// Keys the MAC with `secret`, the store's [`SECRET_NAME`] secret shared by the
    /// fleet; links signed by any server with the same secret verify here.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
        }
    }

    fn mac(&self, id: Uuid, expires: u64) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        // A separator no id contains keeps (id, expires) pairs unambiguous.
        mac.update(format!("{id}\n{expires}").as_bytes());
        mac
    }

    /// The `sig` of a link to `id` that works until `expires` (Unix seconds).
    pub fn sign(&self, id: Uuid, expires: u64) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(id, expires).finalize().into_bytes())
    }

    /// The path and query of a link (append it to a base URL).
    pub fn path(&self, id: Uuid, expires: u64) -> String {
        format!(
            "/files/{id}.mp4?expires={expires}&sig={}",
            self.sign(id, expires)
        )
    }

    /// Checks a link's signature (in constant time) and then its expiry: 403 with what
    /// is wrong otherwise.
    pub fn verify(
        &self,
        id: Uuid,
        expires: Option<&str>,
        sig: Option<&str>,
        now: u64,
    ) -> Result<(), ApiError> {
        let (Some(expires), Some(sig)) = (expires, sig) else {
            return Err(ApiError::Forbidden(
                "this link is incomplete: it needs both `expires` and `sig`; copy the whole \
                 `video.url` of the result"
                    .into(),
            ));
        };
        let invalid = || {
            ApiError::Forbidden(
                "this link's signature is invalid (it was changed or cut short); fetch the \
                 result again for a fresh `video.url`"
                    .into(),
            )
        };
        let expires: u64 = expires.parse().map_err(|_| invalid())?;
        if sig.len() > MAX_SIG_CHARS {
            return Err(invalid());
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| invalid())?;
        self.mac(id, expires)
            .verify_slice(&sig)
            .map_err(|_| invalid())?;
        if now >= expires {
            return Err(ApiError::Forbidden(format!(
                "this link expired {} seconds ago (links work for --result-url-ttl); fetch \
                 the result again for a fresh `video.url`",
                now - expires
            )));
        }
        Ok(())
    }
}

/// The `video.url` of a completed job: an S3 presigned URL with `--presign`, else a link
/// signed by this server under `base`.
pub async fn video_url(
    state: &AppState,
    base: &BaseUrl,
    job: &JobRecord,
    result: &JobResult,
) -> Result<String, ApiError> {
    let ttl = state.config.result_url_ttl;
    if state.config.presign {
        match state.blobs.presigned_get(&result.blob, ttl).await {
            Ok(Some(url)) => return Ok(url),
            Ok(None) => {}
            Err(e) => {
                return Err(ApiError::Internal(format!(
                    "cannot presign the result of {}: {e}",
                    job.id
                )));
            }
        }
    }
    let expires = now_secs().saturating_add(ttl.as_secs().max(1));
    Ok(format!("{}{}", base.0, state.links.path(job.id, expires)))
}

/// A signed link to `id` that works until `expires` (Unix seconds) whatever
/// `--result-url-ttl` says: lets tests craft an already-expired link.
#[doc(hidden)]
pub fn link_expiring(state: &AppState, base: &str, id: Uuid, expires: u64) -> String {
    format!("{base}{}", state.links.path(id, expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_id_expiry_and_secret() {
        let signer = LinkSigner::new(b"secret");
        let id = Uuid::new_v4();
        let sig = signer.sign(id, 2000);
        assert!(signer.verify(id, Some("2000"), Some(&sig), 1000).is_ok());
        let expired = signer
            .verify(id, Some("2000"), Some(&sig), 2000)
            .expect_err("expired");
        assert!(expired.to_string().contains("expired"), "{expired}");
        for (id, expires, sig, secret) in [
            (Uuid::new_v4(), "2000", sig.as_str(), &b"secret"[..]),
            (id, "2001", sig.as_str(), b"secret"),
            (id, "2000", "AAAA", b"secret"),
            (id, "2000", sig.as_str(), b"other"),
            (id, "soon", sig.as_str(), b"secret"),
        ] {
            let err = LinkSigner::new(secret)
                .verify(id, Some(expires), Some(sig), 1000)
                .expect_err("tampered");
            assert!(err.to_string().contains("signature is invalid"), "{err}");
        }
        assert!(signer.verify(id, None, Some(&sig), 1000).is_err());
    }
}
