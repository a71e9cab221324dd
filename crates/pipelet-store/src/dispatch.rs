//! Store-independent dispatch rules, shared by the SQLite and PostgreSQL stores so both
//! make the same decisions: which queued head a worker gets ([`pick_head`]), where a
//! job goes when an attempt ends without a result ([`next_state`]), and how a lost
//! attempt is explained ([`stranded_error`]).

use pipelet_api::Pipeline;

use crate::{ClaimRequest, JobRecord, JobState};

/// The first queued job of one pipeline, in dispatch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub pipeline: Pipeline,
    pub seq: i64,
    pub priority: i64,
    pub created_at: i64,
}

/// Which pipeline's head to dispatch: the loaded pipeline's, unless a job of another
/// pipeline has waited longer than the switch bound; otherwise priority, then age.
pub(crate) fn pick_head(heads: Vec<Head>, req: &ClaimRequest, now: i64) -> Option<Head> {
    let starving = heads
        .iter()
        .filter(|h| Some(h.pipeline) != req.loaded)
        .filter(|h| now - h.created_at > req.max_wait_for_switch_ms)
        .min_by_key(|h| h.created_at)
        .map(|h| h.pipeline);
    let preferred = starving.or(req.loaded);
    let mut heads = heads;
    if let Some(p) = preferred
        && let Some(at) = heads.iter().position(|h| h.pipeline == p)
    {
        return Some(heads.swap_remove(at));
    }
    heads
        .into_iter()
        .min_by_key(|h| (std::cmp::Reverse(h.priority), h.created_at, h.seq))
}

/// The state a running job moves to when an attempt ends without a result: cancelled
/// when a stop was asked for, queued again while retryable attempts remain, else failed.
pub(crate) fn next_state(job: &JobRecord, retryable: bool) -> JobState {
    if job.cancel_requested {
        JobState::Cancelled
    } else if retryable && job.attempt < job.max_attempts {
        JobState::Queued
    } else {
        JobState::Failed
    }
}

/// The error recorded on a job whose holder vanished (expired lease, restarted server),
/// saying what became of it: re-queued, given up after the last attempt, or cancelled
/// because a forced cancel was pending (the stop that was asked for, not a failure).
/// Matches [`next_state`] with `retryable`, which is how stranded attempts end.
pub(crate) fn stranded_error(job: &JobRecord, reason: &str) -> String {
    let holder = job.lease_owner.as_deref().unwrap_or("unknown worker");
    match next_state(job, true) {
        JobState::Cancelled => format!(
            "cancelled: {reason} after the cancel request (holder {holder}, attempt {} of {})",
            job.attempt, job.max_attempts
        ),
        JobState::Queued => format!(
            "{reason} (holder {holder}, attempt {} of {}); re-queued",
            job.attempt, job.max_attempts
        ),
        _ => format!(
            "gave up after {} attempts: {reason} (holder {holder})",
            job.attempt
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pipeline: Pipeline, seq: i64, priority: i64, created_at: i64) -> Head {
        Head {
            pipeline,
            seq,
            priority,
            created_at,
        }
    }

    fn req(loaded: Option<Pipeline>, max_wait: i64) -> ClaimRequest {
        ClaimRequest {
            worker_id: "w".into(),
            pipelines: vec![Pipeline::T2v, Pipeline::I2v],
            loaded,
            lease_ms: 1,
            max_wait_for_switch_ms: max_wait,
        }
    }

    #[test]
    fn loaded_pipeline_wins_until_another_starves() {
        let t2v = head(Pipeline::T2v, 2, 0, 1_000);
        let i2v = head(Pipeline::I2v, 1, 5, 500);
        let now = 2_000;
        let picked = pick_head(vec![t2v, i2v], &req(Some(Pipeline::T2v), 10_000), now);
        assert_eq!(picked, Some(t2v), "loaded beats a higher priority");
        let picked = pick_head(vec![t2v, i2v], &req(Some(Pipeline::T2v), 1_000), now);
        assert_eq!(picked, Some(i2v), "waited 1.5 s > 1 s bound");
        let picked = pick_head(vec![t2v, i2v], &req(None, 10_000), now);
        assert_eq!(picked, Some(i2v), "otherwise priority first");
        let picked = pick_head(vec![t2v], &req(Some(Pipeline::I2v), 10_000), now);
        assert_eq!(picked, Some(t2v), "loaded pipeline has nothing queued");
        assert_eq!(pick_head(Vec::new(), &req(None, 0), now), None);
    }

    fn running(attempt: u32, cancel_requested: bool) -> JobRecord {
        JobRecord {
            id: uuid::Uuid::nil(),
            seq: 1,
            model_id: "m".into(),
            pipeline: Pipeline::T2v,
            owner_key_id: "o".into(),
            priority: 0,
            state: JobState::Running,
            spec: serde_json::json!({}),
            input_blob: None,
            created_at_ms: 0,
            started_at_ms: Some(0),
            finished_at_ms: None,
            attempt,
            max_attempts: 2,
            lease_token: 1,
            lease_owner: Some("worker:a".into()),
            lease_expires_at_ms: Some(0),
            cancel_requested,
            progress: None,
            error: None,
            result: None,
            cancelled_by: None,
            webhook_url: None,
        }
    }

    #[test]
    fn stranded_errors_say_what_happened() {
        let reason = "lease expired";
        let requeued = stranded_error(&running(1, false), reason);
        assert_eq!(
            requeued,
            "lease expired (holder worker:a, attempt 1 of 2); re-queued"
        );
        let gave_up = stranded_error(&running(2, false), reason);
        assert_eq!(
            gave_up,
            "gave up after 2 attempts: lease expired (holder worker:a)"
        );
        for attempt in [1, 2] {
            let cancelled = stranded_error(&running(attempt, true), reason);
            assert!(
                cancelled.starts_with("cancelled: lease expired"),
                "{cancelled}"
            );
            assert!(!cancelled.contains("re-queued"), "{cancelled}");
            assert!(!cancelled.contains("gave up"), "{cancelled}");
        }
    }
}
