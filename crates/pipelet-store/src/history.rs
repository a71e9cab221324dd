//! Job history: one page of jobs, newest first, with keyset pagination.
//!
//! Pages are ordered by `(created_at, seq)` descending and continue strictly after the
//! last row of the previous page, so jobs created while a caller pages (which are newer
//! than every row already seen) never shift later pages: no duplicates, no skips. The
//! cursor a caller holds is [`JobCursor::encode`]d: opaque base64url text.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{JobRecord, JobState};

/// The most jobs one page may hold, whatever a caller asks for.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// Which jobs a history page lists. Every filter given must match (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobListQuery {
    /// Only jobs created by this key id.
    pub owner_key_id: Option<String>,
    /// Only jobs created by a key with this name (any of them, revoked ones included).
    pub owner_key_name: Option<String>,
    /// Only jobs created under this model id.
    pub model_id: Option<String>,
    /// Only jobs in this state now.
    pub state: Option<JobState>,
    /// Jobs per page, clamped to `1..=MAX_PAGE_LIMIT`.
    pub limit: u32,
    /// Continue strictly after this position (the previous page's `next`).
    pub after: Option<JobCursor>,
}

impl JobListQuery {
    /// The page size actually used.
    pub fn page_size(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE_LIMIT)
    }
}

/// A position in the history order: the last job of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    /// The job's creation time, ms since the epoch: the main sort key.
    pub created_at_ms: i64,
    /// The job's insertion order: the tie-break between jobs created in the same ms.
    pub seq: i64,
}

/// Tags the cursor text so that a future format can be told apart.
const CURSOR_VERSION: &str = "v1";
/// Longer text is not a cursor of ours (two i64s and a tag fit in far less).
const MAX_CURSOR_LEN: usize = 128;

impl JobCursor {
    /// The position just after `job`, where the page that ends with it continues.
    pub fn of(job: &JobRecord) -> Self {
        Self {
            created_at_ms: job.created_at_ms,
            seq: job.seq,
        }
    }

    /// The opaque text handed to callers.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{CURSOR_VERSION}:{}:{}",
            self.created_at_ms, self.seq
        ))
    }

    /// Reads [`JobCursor::encode`]'s text back; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        if text.is_empty() || text.len() > MAX_CURSOR_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let mut parts = text.split(':');
        if parts.next()? != CURSOR_VERSION {
            return None;
        }
        let created_at_ms = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self { created_at_ms, seq })
    }
}

/// One page of history and where the next one starts (`None` on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// At most the query's page size, newest first.
    pub jobs: Vec<JobRecord>,
    /// Pass as the next query's `after`; `None` when no older job matches.
    pub next: Option<JobCursor>,
}

impl JobPage {
    /// Builds a page from up to `size + 1` rows in history order: the extra row only
    /// says that another page exists.
    pub(crate) fn from_rows(mut jobs: Vec<JobRecord>, size: u32) -> Self {
        let size = size as usize;
        let more = jobs.len() > size;
        jobs.truncate(size);
        let next = if more {
            jobs.last().map(JobCursor::of)
        } else {
            None
        };
        Self { jobs, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let c = JobCursor {
            created_at_ms: 1_700_000_000_123,
            seq: 42,
        };
        assert_eq!(JobCursor::decode(&c.encode()), Some(c));
        let negative = JobCursor {
            created_at_ms: -5,
            seq: i64::MAX,
        };
        assert_eq!(JobCursor::decode(&negative.encode()), Some(negative));
        for bad in [
            "",
            "!!!",
            "abc",
            &URL_SAFE_NO_PAD.encode("v2:1:2"),
            &URL_SAFE_NO_PAD.encode("v1:1"),
            &URL_SAFE_NO_PAD.encode("v1:1:2:3"),
            &URL_SAFE_NO_PAD.encode("v1:x:2"),
            &"A".repeat(MAX_CURSOR_LEN + 1),
        ] {
            assert_eq!(JobCursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn page_size_is_bounded() {
        let q = |limit| JobListQuery {
            limit,
            ..Default::default()
        };
        assert_eq!(q(0).page_size(), 1);
        assert_eq!(q(20).page_size(), 20);
        assert_eq!(q(u32::MAX).page_size(), MAX_PAGE_LIMIT);
    }
}
