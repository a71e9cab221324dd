//! Mapping between PostgreSQL rows and the store's types, and the one text rule
//! PostgreSQL adds: `TEXT` cannot hold a NUL character, so free text from callers
//! (errors, names, URLs) has NULs replaced before it is bound.

use std::borrow::Cow;

pub(crate) use crate::rows::{job_from_row, result_json};

/// Every job column, in the shape [`job_from_row`] reads (the UUID as text, so the
/// crate needs no sqlx `uuid` feature; the flag as an integer, as SQLite stores it).
pub(crate) const JOB_COLUMNS: &str = "seq, id::text AS id, model_id, pipeline, owner_key_id, \
     priority, state, spec, input_blob, created_at, started_at, finished_at, attempt, \
     max_attempts, lease_token, lease_owner, lease_expires_at, \
     cancel_requested::int::int8 AS cancel_requested, \
     progress_done, progress_total, error, error_detail, result, cancelled_by, webhook_url, \
     result_expired_at";

/// `s` with every NUL replaced by U+FFFD, borrowed when there is none (the usual case).
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(crate) fn opt_text(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_and_clean_text_borrowed() {
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        assert_eq!(text("a\0b"), "a\u{fffd}b");
        assert_eq!(opt_text(None), None);
    }
}
