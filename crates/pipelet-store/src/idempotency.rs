//! Idempotent creates: an `Idempotency-Key` sent with a create is recorded in the
//! `idempotency_keys` table in the same transaction as the job it made, so a repeat of
//! the create (a client retrying after a lost answer) finds the job instead of making
//! another. Keys are scoped per API key and live for [`IDEMPOTENCY_WINDOW_MS`].

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::JobRecord;

/// How long a key is remembered: a repeat after this makes a new job.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// The longest `Idempotency-Key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The idempotency part of a create: who asked, their key, and what they asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The API key id the key is scoped to.
    pub owner: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// [`request_hash`] of the create.
    pub request_hash: String,
    /// Entries created before this instant (ms since the epoch) are ignored and
    /// replaced: normally now minus [`IDEMPOTENCY_WINDOW_MS`].
    pub not_before_ms: i64,
}

/// A job just created, with its queue position as of its commit (read in the same call,
/// so the create's answer needs no second query).
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The job as committed (queued).
    pub job: JobRecord,
    /// Queued jobs of its pipeline dispatched before it (0: next).
    pub position: u64,
}

impl std::ops::Deref for Created {
    type Target = JobRecord;

    fn deref(&self) -> &JobRecord {
        &self.job
    }
}

/// What [`crate::JobStore::create_job_idempotent`] did.
// Answered once per create (never stored in bulk), so the unboxed record costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// A new job, committed together with its key.
    Created(Created),
    /// The key was already used for the same request: this is the job it made, and
    /// nothing was created.
    Replayed(Uuid),
    /// The key was already used for a different request (another body or model);
    /// nothing was created.
    Mismatch,
}

/// SHA-256 (hex) of the model id and the body as canonical JSON (object keys sorted at
/// every level, no whitespace), so the same request hashes the same however its JSON
/// was laid out.
pub fn request_hash(model_id: &str, body: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(model_id.as_bytes());
    // A separator no model id contains, so ("ab", "c…") and ("a", "bc…") differ.
    hasher.update(b"\n");
    let mut canonical = String::new();
    write_canonical(body, &mut canonical);
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            // serde_json may preserve insertion order (a feature another crate can turn
            // on), so sort explicitly.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_ignores_layout_but_not_content_or_model() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"prompt":"a cat","width":832,"o":{"x":1,"y":[1,2]}}"#)
                .unwrap();
        let b: serde_json::Value = serde_json::from_str(
            r#"{ "o": {"y": [1, 2], "x": 1}, "width": 832,
                 "prompt": "a cat" }"#,
        )
        .unwrap();
        assert_eq!(request_hash("m", &a), request_hash("m", &b));
        assert_ne!(request_hash("m", &a), request_hash("n", &a));
        let c = json!({"prompt": "a cat", "width": 833, "o": {"x": 1, "y": [1, 2]}});
        assert_ne!(request_hash("m", &a), request_hash("m", &c));
        let d = json!({"prompt": "a cat", "width": 832, "o": {"x": 1, "y": [2, 1]}});
        assert_ne!(request_hash("m", &a), request_hash("m", &d));
        assert_eq!(request_hash("m", &a).len(), 64);
    }
}
