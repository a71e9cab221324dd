//! The one table of error codes: every error body the server sends carries one of these
//! as its `code`, beside the `detail` written for a person.
//!
//! A code is a stable, machine-readable snake_case string that clients (and
//! `pipelet worker`) act on; the `detail` may be reworded at any time, a code may not.
//! The table below is the only place codes are listed: the HTTP status of each, the
//! `docs/errors.md` table and the OpenAPI `ErrorCode` enum are all generated from it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines [`ErrorCode`] and its lookups from one list of
/// `Variant = ("code", status, "meaning")`.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal, $meaning:literal),)*) => {
        /// A stable, machine-readable error code (the `code` of every error body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($(#[$doc])* #[doc = $meaning] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as sent on the wire, e.g. `"request_not_found"`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status an error with this code is sent with.
            pub const fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// One line saying what the code means, for the docs.
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    BadRequest = ("bad_request", 400,
        "The request is malformed: an unreadable or non-JSON body, a bad header or query."),
    Unauthorized = ("unauthorized", 401,
        "The API key is missing, malformed, unknown, revoked or expired."),
    Forbidden = ("forbidden", 403,
        "The key lacks the role for this call (a worker key on the queue API, a client key on \
         the worker API), or a result link is invalid or expired."),
    RequestNotFound = ("request_not_found", 404,
        "No request with this id under this model that this key may see."),
    UnknownModel = ("unknown_model", 404,
        "No model with this id; `detail` lists the available ones."),
    NotFound = ("not_found", 404,
        "No such endpoint, job (worker API), file or link target."),
    KeyNotFound = ("key_not_found", 404,
        "Admin API: no live (not revoked) key has this name."),
    MethodNotAllowed = ("method_not_allowed", 405,
        "The path exists but not with this HTTP method."),
    KeyNameTaken = ("key_name_taken", 409,
        "Admin API: a live key already has this name; revoke it or choose another."),
    NotCompleted = ("not_completed", 409,
        "The result was asked for before the request completed; the body has its `status`."),
    NotCancellable = ("not_cancellable", 409,
        "The request has already started (cancel it with `?force=true`) or finished; \
         `status` says which."),
    LeaseLost = ("lease_lost", 409,
        "Worker API: the lease token is stale (the job was re-queued, given to another \
         worker, cancelled or finished); drop the job."),
    CancelNotRequested = ("cancel_not_requested", 409,
        "Worker API: `cancelled` was reported but no cancel was requested; the lease is \
         still held, so finish or fail the job."),
    ResultNotUploaded = ("result_not_uploaded", 409,
        "Worker API: `complete` was called before the MP4 was uploaded for this lease."),
    IdempotentRequestDeleted = ("idempotent_request_deleted", 409,
        "The request an `Idempotency-Key` was first used for has been deleted; send a new key."),
    ResultExpired = ("result_expired", 410,
        "The request completed, but retention has deleted its result (`--result-ttl`)."),
    PayloadTooLarge = ("payload_too_large", 413,
        "The body (or a worker's result upload) is larger than the server's limit."),
    RangeNotSatisfiable = ("range_not_satisfiable", 416,
        "The `Range` starts past the end of the video; `Content-Range` gives its size."),
    InvalidInput = ("invalid_input", 422,
        "The input is invalid; `detail` says how (the generic validation code)."),
    MissingField = ("missing_field", 422,
        "A required field is missing (`field` names it)."),
    WrongType = ("wrong_type", 422,
        "A field has the wrong JSON type, e.g. a string where a number is expected."),
    InvalidField = ("invalid_field", 422,
        "A field's value is out of its allowed range or set (`field` names it)."),
    PromptTooLong = ("prompt_too_long", 422,
        "`prompt` or `negative_prompt` is longer than the server's limit."),
    InvalidResolution = ("invalid_resolution", 422,
        "`width`, `height` or `min_height` is not a supported output size."),
    DurationTooLong = ("duration_too_long", 422,
        "`duration` is longer than the output size allows."),
    ImageNotAccepted = ("image_not_accepted", 422,
        "An input image was sent to a text-to-video model, which would ignore it."),
    RemoteImageUrl = ("remote_image_url", 422,
        "The image is a URL; pipelet does not fetch remote images: send it as base64."),
    InvalidImage = ("invalid_image", 422,
        "The input image is not valid base64, or is truncated or corrupt."),
    UnsupportedImageFormat = ("unsupported_image_format", 422,
        "The input image is not a PNG, JPEG or WebP file."),
    ImageTooLarge = ("image_too_large", 422,
        "The input image has too many bytes, pixels or too long a side."),
    InvalidAspectRatio = ("invalid_aspect_ratio", 422,
        "The input image is too elongated (long side / short side over the limit)."),
    InvalidIdempotencyKey = ("invalid_idempotency_key", 422,
        "The `Idempotency-Key` header is empty or too long."),
    IdempotencyKeyReused = ("idempotency_key_reused", 422,
        "The `Idempotency-Key` was already used for a different request (body, model or \
         webhook)."),
    RateLimited = ("rate_limited", 429,
        "Too many of these calls at once (e.g. live status streams), or too many failed \
         authentications from this address in the last minute; retry after `Retry-After` \
         seconds."),
    QueueFull = ("queue_full", 429,
        "The queue is full; retry after `Retry-After` seconds."),
    KeyQueueFull = ("key_queue_full", 429,
        "This key has as many queued requests as its quota allows (`--max-queued-per-key` \
         or the key's own limit); retry after `Retry-After` seconds, once some have \
         started."),
    KeyRateLimited = ("key_rate_limited", 429,
        "This key made more creates than its rate allows (`--creates-per-minute` or the \
         key's own rate); retry after `Retry-After` seconds. `RateLimit-Limit`, \
         `RateLimit-Remaining` and `RateLimit-Reset` say where the key stands."),
    Internal = ("internal", 500,
        "A server fault; the operator's log has the cause."),
    Unavailable = ("unavailable", 503,
        "The database is unreachable or the server is shutting down; retry shortly."),
    DiskFull = ("disk_full", 507,
        "The server's disk is full: nothing was stored; retry once space is freed."),
}

impl ErrorCode {
    /// The code with this wire string.
    pub fn from_code(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// The Markdown text of `docs/errors.md`, generated from the table.
    pub fn markdown() -> String {
        let mut out = String::from(
            "# Error codes\n\n\
             <!-- Generated from crates/pipelet-api/src/error_codes.rs; do not edit. \
             Regenerate with `PIPELET_BLESS=1 cargo test -p pipelet-api --test it error_docs`. -->\n\n\
             Every error response is JSON with a `detail` written for a person and a stable \
             `code` for programs: `{\"detail\": \"...\", \"code\": \"request_not_found\"}`. \
             Some carry more fields: `field` (the body field at fault, on 422), `status` (the \
             request's status, on 409), `lease_lost` (on the worker API's 409). Act on \
             `code`, never on the wording of `detail`.\n\n\
             | code | HTTP status | meaning |\n\
             | --- | --- | --- |\n",
        );
        for code in ErrorCode::ALL {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                code.as_str(),
                code.status(),
                code.description()
            ));
        }
        out
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ErrorCode::from_code(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {s:?}")))
    }
}

/// A string enum of every code, its description listing each code's status and meaning.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let mut description = String::from(
            "A stable, machine-readable error code; act on it, not on `detail`'s wording.\n",
        );
        for code in ErrorCode::ALL {
            description.push_str(&format!(
                "\n- `{}` ({}): {}",
                code.as_str(),
                code.status(),
                code.description()
            ));
        }
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(description))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} is listed twice");
            assert!(
                !s.is_empty()
                    && s.starts_with(|c: char| c.is_ascii_lowercase())
                    && !s.ends_with('_')
                    && !s.contains("__")
                    && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{s} is not snake_case"
            );
            assert!(
                (400..600).contains(&code.status()),
                "{s}: {}",
                code.status()
            );
            assert!(!code.description().is_empty());
            assert_eq!(ErrorCode::from_code(s), Some(*code));
        }
    }

    #[test]
    fn serializes_as_its_string() {
        let v = serde_json::to_value(ErrorCode::LeaseLost).unwrap();
        assert_eq!(v, serde_json::json!("lease_lost"));
        let back: ErrorCode = serde_json::from_value(v).unwrap();
        assert_eq!(back, ErrorCode::LeaseLost);
        assert!(serde_json::from_value::<ErrorCode>(serde_json::json!("nope")).is_err());
    }

    /// The codes other parts (the worker client) are written against keep their meaning.
    #[test]
    fn agreed_codes_keep_their_status() {
        for (s, status) in [
            ("unauthorized", 401),
            ("forbidden", 403),
            ("request_not_found", 404),
            ("unknown_model", 404),
            ("not_found", 404),
            ("bad_request", 400),
            ("payload_too_large", 413),
            ("invalid_input", 422),
            ("invalid_resolution", 422),
            ("duration_too_long", 422),
            ("invalid_image", 422),
            ("invalid_field", 422),
            ("idempotency_key_reused", 422),
            ("not_completed", 409),
            ("not_cancellable", 409),
            ("lease_lost", 409),
            ("result_expired", 410),
            ("rate_limited", 429),
            ("queue_full", 429),
            ("unavailable", 503),
            ("disk_full", 507),
            ("internal", 500),
        ] {
            let code = ErrorCode::from_code(s).unwrap_or_else(|| panic!("{s} is missing"));
            assert_eq!(code.status(), status, "{s}");
        }
    }
}
