//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the headers
//! `webhook-id`, `webhook-timestamp` and `webhook-signature`, the last being
//! space-separated `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per
//! secret that is valid now (the current one, and the previous one for 24 h after a
//! rotation, so receivers can switch secrets without dropping events).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of every secret; the rest is the base64 of the key.
pub const SECRET_PREFIX: &str = "whsec_";

/// The signing key of a `whsec_…` secret: the base64-decoded part after the prefix.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .map_err(|e| format!("the webhook secret is not whsec_ + base64: {e}"))
}

/// One `v1,<base64>` signature of `body` sent as message `id` at `timestamp`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
/// Secrets that do not decode are skipped (the store only writes valid ones); `Err` when
/// none is left.
pub fn signature_header(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, String> {
    let mut out = Vec::with_capacity(secrets.len());
    let mut last_error = None;
    for secret in secrets {
        match secret_key(secret) {
            Ok(key) => out.push(sign(&key, id, timestamp, body)),
            Err(e) => last_error = Some(e),
        }
    }
    if out.is_empty() {
        return Err(last_error.unwrap_or_else(|| "no webhook secret to sign with".into()));
    }
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries (and svix's docs).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_reference_vector() {
        let key = secret_key(SECRET).expect("valid secret");
        assert_eq!(sign(&key, ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn header_signs_with_every_secret() {
        let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let header =
            signature_header(&[SECRET, other], ID, TIMESTAMP, BODY.as_bytes()).expect("signs");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert_eq!(parts[0], SIGNATURE);
        assert_ne!(parts[1], SIGNATURE);
        assert!(parts[1].starts_with("v1,"));
    }

    #[test]
    fn any_change_changes_the_signature() {
        let key = secret_key(SECRET).expect("valid secret");
        assert_ne!(sign(&key, ID, TIMESTAMP + 1, BODY.as_bytes()), SIGNATURE);
        assert_ne!(
            sign(&key, "msg_other", TIMESTAMP, BODY.as_bytes()),
            SIGNATURE
        );
        assert_ne!(sign(&key, ID, TIMESTAMP, b"{\"test\": 1}"), SIGNATURE);
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(secret_key("whsec_not base64!").is_err());
        assert!(signature_header(&["whsec_!!"], ID, TIMESTAMP, b"{}").is_err());
        assert!(signature_header(&[], ID, TIMESTAMP, b"{}").is_err());
    }
}
