//! Fair sharing between keys at equal priority: start-time fair queuing (SFQ).
//!
//! Every job gets a virtual start tag when it is queued, so the dispatch order within a
//! (pipeline, priority) — by (start tag, seq) — is fixed at enqueue and a queue
//! position stays one exact count. Tags are in thousandths of a job: a job of a key
//! with weight `w` costs `1000 / w`. A new job of key `k` starts at
//! `max(V, last_k + cost_k)`, where `V` is the smallest tag queued at that priority
//! (0 when none is) and `last_k` the greatest tag `k` has queued there (no bound when
//! it has none). So a key that queued 1,000 jobs holds tags up to 999,000, and another
//! key's single job starts at `V`: right behind the head, not behind the 1,000.
//!
//! A job queued again after a lost attempt takes `min(its tag, V)`, so it goes back to
//! the front as it did before fair sharing (one key's jobs keep their FIFO order).

/// The smallest weight a key may have.
pub const MIN_WEIGHT: i64 = 1;
/// The greatest weight a key may have.
pub const MAX_WEIGHT: i64 = 100;
/// A key's weight unless it was given one.
pub const DEFAULT_WEIGHT: i64 = 1;
/// What a job of weight 1 adds to its key's tag.
const UNIT: i64 = 1000;

/// What one job of a key with `weight` adds to its key's tag (weights outside
/// [`MIN_WEIGHT`]..=[`MAX_WEIGHT`] are clamped).
pub fn cost(weight: i64) -> i64 {
    UNIT / weight.clamp(MIN_WEIGHT, MAX_WEIGHT)
}

/// The start tag of a new job: `head` is the smallest tag queued at its priority,
/// `last` the greatest its key has queued there.
pub fn start_tag(head: Option<i64>, last: Option<i64>, weight: i64) -> i64 {
    let v = head.unwrap_or(0);
    match last {
        Some(last) => v.max(last + cost(weight)),
        None => v,
    }
}

/// The tag of a job queued again: its own, or the queue's head tag if that is smaller.
pub fn requeue_tag(own: i64, head: Option<i64>) -> i64 {
    head.map_or(own, |v| own.min(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_does_not_hold_back_another_key() {
        // Key A queued three jobs: tags 0, 1000, 2000. B's first job starts at the head.
        assert_eq!(start_tag(None, None, 1), 0);
        assert_eq!(start_tag(Some(0), Some(0), 1), 1000);
        assert_eq!(start_tag(Some(0), Some(1000), 1), 2000);
        assert_eq!(start_tag(Some(0), None, 1), 0);
        // Weight 2 advances half as fast; weights are clamped.
        assert_eq!(start_tag(Some(0), Some(0), 2), 500);
        assert_eq!(cost(0), 1000);
        assert_eq!(cost(1000), 10);
        // A key whose last tag is behind the head starts at the head.
        assert_eq!(start_tag(Some(5000), Some(1000), 1), 5000);
        assert_eq!(requeue_tag(3000, Some(1000)), 1000);
        assert_eq!(requeue_tag(3000, None), 3000);
        assert_eq!(requeue_tag(0, Some(1000)), 0);
    }
}
