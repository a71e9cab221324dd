//! Store-independent dispatch rules, shared by the SQLite and PostgreSQL stores so both
//! make the same decisions: which queued head a worker gets ([`pick_head`]), where a
//! job goes when an attempt ends without a result ([`next_state`]), and how a lost
//! attempt is explained ([`stranded_error`]): in plain words for the client, with the
//! worker and the mechanism in the admin-only detail.

use pipelet_api::Pipeline;

use crate::{ClaimRequest, Failure, JobRecord, JobState};

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

/// Why a running job lost its holder, in the two texts a [`Failure`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StrandedCause {
    /// For the client: what happened, in plain words.
    pub client: &'static str,
    /// For operators: the mechanism.
    pub internal: &'static str,
}

/// A lease ran out: its worker died, hung or lost its network.
pub(crate) const LEASE_EXPIRED: StrandedCause = StrandedCause {
    client: "the worker stopped responding",
    internal: "lease expired: the worker stopped heartbeating",
};

/// An in-process worker of a previous run of this server held the job.
pub(crate) const SERVER_RESTARTED: StrandedCause = StrandedCause {
    client: "the server restarted while the job was running",
    internal: "the server restarted while the job was running",
};

/// "retried 1 time", "retried 2 times"; nothing for an attempt that was the first.
fn retried(attempt: u32) -> Option<String> {
    match attempt.saturating_sub(1) {
        0 => None,
        1 => Some("retried 1 time".into()),
        n => Some(format!("retried {n} times")),
    }
}

/// The failure recorded on a job whose holder vanished (expired lease, restarted
/// server), saying what became of it: re-queued, given up after the last attempt, or
/// cancelled because a forced cancel was pending (the stop that was asked for, not a
/// failure). The client's reason names no worker; the holder is in the detail.
/// Matches [`next_state`] with `retryable`, which is how stranded attempts end.
pub(crate) fn stranded_error(job: &JobRecord, cause: StrandedCause) -> Failure {
    let holder = job.lease_owner.as_deref().unwrap_or("unknown worker");
    let (client, internal) = (cause.client, cause.internal);
    let (attempt, max) = (job.attempt, job.max_attempts);
    match next_state(job, true) {
        JobState::Cancelled => Failure::new(
            format!("cancelled: {client} after the cancel request"),
            format!(
                "cancelled: {internal} after the cancel request (holder {holder}, attempt \
                 {attempt} of {max})"
            ),
        ),
        JobState::Queued => Failure::new(
            format!("{client} (attempt {attempt} of {max})"),
            format!("{internal} (holder {holder}, attempt {attempt} of {max}); re-queued"),
        ),
        _ => Failure::new(
            match retried(attempt) {
                Some(retried) => format!("{client}; {retried}"),
                None => client.to_string(),
            },
            format!(
                "gave up after {attempt} attempt{}: {internal} (holder {holder})",
                if attempt == 1 { "" } else { "s" }
            ),
        ),
    }
}

/// Logs what operators need about an attempt whose holder vanished (the client's
/// status says less).
pub(crate) fn log_stranded(job: &JobRecord, failure: &Failure) {
    tracing::warn!(
        id = %job.id,
        model = %job.model_id,
        holder = job.lease_owner.as_deref().unwrap_or("unknown"),
        detail = failure.detail.as_deref().unwrap_or(&failure.reason),
        "a running job lost its worker"
    );
}

/// The admin-only detail stored for a failed attempt: the reporter's detail (or its
/// reason), with the lease holder and the attempt, which the store knows best.
pub(crate) fn recorded_detail(job: &JobRecord, failure: &Failure) -> String {
    let holder = job.lease_owner.as_deref().unwrap_or("unknown worker");
    let what = failure.detail.as_deref().unwrap_or(&failure.reason);
    format!(
        "{what} (holder {holder}, attempt {} of {})",
        job.attempt, job.max_attempts
    )
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
            spec: pipelet_api::JobSpec::sample(""),
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
            error_detail: None,
            result: None,
            cancelled_by: None,
            webhook_url: None,
            result_expired_at_ms: None,
        }
    }

    #[test]
    fn stranded_errors_say_what_happened() {
        let requeued = stranded_error(&running(1, false), LEASE_EXPIRED);
        assert_eq!(
            requeued.reason,
            "the worker stopped responding (attempt 1 of 2)"
        );
        assert_eq!(
            requeued.detail.as_deref(),
            Some(
                "lease expired: the worker stopped heartbeating (holder worker:a, attempt 1 \
                 of 2); re-queued"
            )
        );
        let gave_up = stranded_error(&running(2, false), LEASE_EXPIRED);
        assert_eq!(
            gave_up.reason,
            "the worker stopped responding; retried 1 time"
        );
        assert_eq!(
            gave_up.detail.as_deref(),
            Some(
                "gave up after 2 attempts: lease expired: the worker stopped heartbeating \
                 (holder worker:a)"
            )
        );
        let mut third = running(3, false);
        third.max_attempts = 3;
        assert_eq!(
            stranded_error(&third, LEASE_EXPIRED).reason,
            "the worker stopped responding; retried 2 times"
        );
        let mut only = running(1, false);
        only.max_attempts = 1;
        let only = stranded_error(&only, LEASE_EXPIRED);
        assert_eq!(only.reason, "the worker stopped responding");
        let detail = only.detail.unwrap_or_default();
        assert!(detail.starts_with("gave up after 1 attempt:"), "{detail}");
        for attempt in [1, 2] {
            let cancelled = stranded_error(&running(attempt, true), LEASE_EXPIRED);
            assert_eq!(
                cancelled.reason,
                "cancelled: the worker stopped responding after the cancel request"
            );
            let detail = cancelled.detail.unwrap_or_default();
            assert!(detail.starts_with("cancelled: lease expired"), "{detail}");
            assert!(!detail.contains("re-queued"), "{detail}");
            assert!(!detail.contains("gave up"), "{detail}");
        }
    }

    #[test]
    fn client_reasons_name_no_worker() {
        for (attempt, cancel) in [(1, false), (2, false), (1, true)] {
            for cause in [LEASE_EXPIRED, SERVER_RESTARTED] {
                let failure = stranded_error(&running(attempt, cancel), cause);
                assert!(!failure.reason.contains("worker:a"), "{failure:?}");
                assert!(!failure.reason.contains("holder"), "{failure:?}");
                assert!(
                    failure
                        .detail
                        .unwrap_or_default()
                        .contains("holder worker:a"),
                    "operators see the holder"
                );
            }
        }
    }

    #[test]
    fn recorded_detail_adds_holder_and_attempt() {
        let job = running(1, false);
        assert_eq!(
            recorded_detail(
                &job,
                &Failure::new("the video could not be encoded", "x: /tmp/a")
            ),
            "x: /tmp/a (holder worker:a, attempt 1 of 2)"
        );
        assert_eq!(
            recorded_detail(&job, &Failure::plain("bad image")),
            "bad image (holder worker:a, attempt 1 of 2)"
        );
    }
}
