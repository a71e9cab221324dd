//! Model-based property test of the job state machine and queue positions.
//!
//! A random sequence of store operations (creates, claims, heartbeats, completions,
//! failures, cancels, reaps, lease releases and reopens) runs against a real store and
//! against a small in-memory model of the rules in DESIGN.md ("Queue rules",
//! "Reliability rules"). After every operation the store must agree with the model: the
//! operation's answer, every job's state, attempt, lease and error, exact queue
//! positions, `queued_total`, the per-state counts, and terminal jobs never change again.
//!
//! The driver, [`check_against_model`], takes any `Arc<dyn Store>` plus a way to reopen
//! it, so another implementation only needs its own `#[test]` at the bottom of this file.
//!
//! Jobs belong to one of [`KEY_WEIGHTS`]' keys, so the model also predicts fair sharing
//! between keys at equal priority: each job's start tag, hence the dispatch order and
//! every position.
//!
//! Timing is kept deterministic: leases are either already expired (`lease_ms = -1`) or
//! long (60 s), and the loaded-pipeline rule's switch bound is either a day (never
//! switch) or -1 (every job of another pipeline has waited too long).

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use pipelet_api::Pipeline;
use pipelet_store::postgres::PgStore;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::*;
use proptest::prelude::*;
use proptest::sample::Index;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

/// Lease holders. Two look like in-process workers of two server runs, the others like
/// remote workers; `worker_x/1` checks that `_` in a prefix is no wildcard.
const WORKERS: [&str; 4] = ["local:aaa/0", "local:bbb/1", "worker:k/gpu-1", "worker_x/1"];
/// Prefixes given to `release_leases_of`: an exact, case-sensitive prefix match, so
/// `LOCAL:` releases nothing and `%` and `_` are plain characters.
const PREFIXES: [&str; 8] = [
    "local:",
    "LOCAL:",
    "local:aaa",
    "worker:",
    "worker_",
    "local:aaa/0",
    "%",
    "",
];
const LONG_LEASE_MS: i64 = 60_000;
/// The weights of the keys jobs are created for (the store reads them from the keys).
const KEY_WEIGHTS: [i64; 3] = [1, 2, 3];
/// A switch bound no test job reaches: the loaded pipeline always wins.
const NEVER_SWITCH_MS: i64 = 24 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLen {
    /// 60 s: not reaped during the test.
    Long,
    /// `-1` ms: expired the moment it is granted, so the next reap takes it back.
    Expired,
}

impl LeaseLen {
    fn ms(self) -> i64 {
        match self {
            LeaseLen::Long => LONG_LEASE_MS,
            LeaseLen::Expired => -1,
        }
    }
}

/// Which lease a lease-holder call carries.
#[derive(Debug, Clone)]
pub enum LeaseSel {
    /// One the model thinks still valid (any lease when none is).
    Live(Index),
    /// Any lease handed out so far, stale ones included.
    Any(Index),
    /// A live lease whose job has a forced cancel pending (any live lease when none
    /// has), to reach acknowledged cancels and failures that end CANCELLED.
    Cancelling(Index),
    /// A token one past the job's current one (never handed out): refused.
    Future(Index),
    /// A job id that does not exist.
    Unknown,
}

/// Which job a cancel names.
#[derive(Debug, Clone)]
pub enum JobSel {
    Any(Index),
    /// A running job (any job when none is), to reach forced cancels.
    Running(Index),
    /// A job id that does not exist.
    Unknown,
}

#[derive(Clone)]
pub enum Op {
    Create {
        pipeline: Pipeline,
        priority: i64,
        max_attempts: u32,
        /// Which of [`KEY_WEIGHTS`]' keys owns it.
        key: usize,
    },
    Claim {
        worker: usize,
        pipelines: Vec<Pipeline>,
        loaded: Option<Pipeline>,
        lease: LeaseLen,
        /// `true`: switch bound -1 (every other pipeline's head is starving).
        eager_switch: bool,
    },
    Heartbeat {
        lease: LeaseSel,
        extend: LeaseLen,
        progress: Option<u32>,
    },
    Complete {
        lease: LeaseSel,
    },
    Fail {
        lease: LeaseSel,
        retryable: bool,
    },
    AckCancelled {
        lease: LeaseSel,
    },
    Cancel {
        job: JobSel,
        force: bool,
    },
    Reap,
    Release {
        prefix: usize,
    },
    Reopen,
}

/// One line per op, so a shrunk failing case reads as a script.
impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Create {
                pipeline,
                priority,
                max_attempts,
                key,
            } => write!(
                f,
                "Create({pipeline}, priority {priority}, max_attempts {max_attempts}, key {key})"
            ),
            Op::Claim {
                worker,
                pipelines,
                loaded,
                lease,
                eager_switch,
            } => write!(
                f,
                "Claim({}, {pipelines:?}, loaded {loaded:?}, lease {lease:?}, switch {})",
                WORKERS[*worker],
                if *eager_switch { "eager" } else { "never" }
            ),
            Op::Heartbeat {
                lease,
                extend,
                progress,
            } => write!(
                f,
                "Heartbeat({lease:?}, extend {extend:?}, progress {progress:?})"
            ),
            Op::Complete { lease } => write!(f, "Complete({lease:?})"),
            Op::Fail { lease, retryable } => write!(f, "Fail({lease:?}, retryable {retryable})"),
            Op::AckCancelled { lease } => write!(f, "AckCancelled({lease:?})"),
            Op::Cancel { job, force } => write!(f, "Cancel({job:?}, force {force})"),
            Op::Reap => write!(f, "Reap"),
            Op::Release { prefix } => write!(f, "Release({:?})", PREFIXES[*prefix]),
            Op::Reopen => write!(f, "Reopen"),
        }
    }
}

fn pipeline() -> impl Strategy<Value = Pipeline> {
    prop_oneof![Just(Pipeline::T2v), Just(Pipeline::I2v)]
}

fn lease_len() -> impl Strategy<Value = LeaseLen> {
    prop_oneof![3 => Just(LeaseLen::Long), 2 => Just(LeaseLen::Expired)]
}

fn lease_sel() -> impl Strategy<Value = LeaseSel> {
    prop_oneof![
        6 => any::<Index>().prop_map(LeaseSel::Live),
        2 => any::<Index>().prop_map(LeaseSel::Cancelling),
        3 => any::<Index>().prop_map(LeaseSel::Any),
        1 => any::<Index>().prop_map(LeaseSel::Future),
        1 => Just(LeaseSel::Unknown),
    ]
}

fn job_sel() -> impl Strategy<Value = JobSel> {
    prop_oneof![
        3 => any::<Index>().prop_map(JobSel::Any),
        3 => any::<Index>().prop_map(JobSel::Running),
        1 => Just(JobSel::Unknown),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let create = (
        pipeline(),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(2), Just(-2)],
        prop_oneof![2 => Just(3u32), 2 => Just(2), 1 => Just(1)],
        0..KEY_WEIGHTS.len(),
    )
        .prop_map(|(pipeline, priority, max_attempts, key)| Op::Create {
            pipeline,
            priority,
            max_attempts,
            key,
        });
    let pipelines = prop_oneof![
        Just(vec![Pipeline::T2v, Pipeline::I2v]),
        Just(vec![Pipeline::I2v, Pipeline::T2v]),
        Just(vec![Pipeline::T2v]),
        Just(vec![Pipeline::I2v]),
        Just(vec![]),
    ];
    let claim = (
        0..WORKERS.len(),
        pipelines,
        proptest::option::of(pipeline()),
        lease_len(),
        prop_oneof![3 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |(worker, pipelines, loaded, lease, eager_switch)| Op::Claim {
                worker,
                pipelines,
                loaded,
                lease,
                eager_switch,
            },
        );
    let heartbeat = (lease_sel(), lease_len(), proptest::option::of(0u32..=10)).prop_map(
        |(lease, extend, progress)| Op::Heartbeat {
            lease,
            extend,
            progress,
        },
    );
    // Shrinking turns an op into an earlier alternative, so the first one is the most
    // harmless: ops a failure does not need end up as no-op reaps in the minimal case.
    prop_oneof![
        2 => Just(Op::Reap),
        6 => create,
        5 => claim,
        2 => heartbeat,
        2 => lease_sel().prop_map(|lease| Op::Complete { lease }),
        3 => (lease_sel(), prop_oneof![3 => Just(true), 1 => Just(false)])
            .prop_map(|(lease, retryable)| Op::Fail { lease, retryable }),
        1 => lease_sel().prop_map(|lease| Op::AckCancelled { lease }),
        3 => (job_sel(), any::<bool>())
            .prop_map(|(job, force)| Op::Cancel { job, force }),
        1 => (0..PREFIXES.len()).prop_map(|prefix| Op::Release { prefix }),
        1 => Just(Op::Reopen),
    ]
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// What a job's `error` (and its admin-only `error_detail`) must say.
#[derive(Debug, Clone)]
enum ErrorModel {
    /// Exactly the worker's message (and, in the detail, that message with its holder).
    Exact(String),
    /// The store's own message for a stranded attempt: the detail names the reason and
    /// says what became of the job; the client's error says it without the holder.
    Stranded {
        reason: &'static str,
        outcome: ReapOutcome,
    },
}

const REAP_REASON: &str = "lease expired";
const RELEASE_REASON: &str = "server restarted";

#[derive(Debug, Clone)]
struct ModelJob {
    id: Uuid,
    seq: i64,
    created_at_ms: i64,
    model_id: String,
    pipeline: Pipeline,
    priority: i64,
    /// The owning key, an index into [`KEY_WEIGHTS`], and its id (the job's owner).
    key: usize,
    key_id: String,
    /// The fair-queuing start tag: dispatch order within a priority is (vstart, seq).
    vstart: i64,
    state: JobState,
    attempt: u32,
    max_attempts: u32,
    token: i64,
    owner: Option<String>,
    /// Whether the current lease (while running) has already expired.
    expired: bool,
    cancel_requested: bool,
    progress: Option<ProgressUpdate>,
    error: Option<ErrorModel>,
    result: Option<JobResult>,
    cancelled_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    LeaseLost,
    NotFound,
    /// The lease is valid but the call does not fit the job's state.
    InvalidState(JobState),
}

#[derive(Debug, Default)]
struct Model {
    /// In creation (seq) order.
    jobs: Vec<ModelJob>,
    /// Every lease a claim returned, in order; stale ones stay.
    leases: Vec<LeaseRef>,
}

/// An id no job has.
const UNKNOWN_JOB: Uuid = Uuid::from_u128(0x0bad_0bad_0bad_0bad_0bad_0bad_0bad_0bad);

impl Model {
    fn find(&self, id: Uuid) -> Option<usize> {
        self.jobs.iter().position(|j| j.id == id)
    }

    fn is_live(&self, lease: &LeaseRef) -> bool {
        self.find(lease.job_id).is_some_and(|i| {
            let job = &self.jobs[i];
            job.state == JobState::Running && job.token == lease.token
        })
    }

    fn resolve_lease(&self, sel: &LeaseSel) -> LeaseRef {
        let unknown = LeaseRef {
            job_id: UNKNOWN_JOB,
            token: 1,
        };
        match sel {
            LeaseSel::Live(i) => {
                let live: Vec<&LeaseRef> = self.leases.iter().filter(|l| self.is_live(l)).collect();
                if live.is_empty() {
                    self.resolve_lease(&LeaseSel::Any(*i))
                } else {
                    *live[i.index(live.len())]
                }
            }
            LeaseSel::Cancelling(i) => {
                let cancelling: Vec<&LeaseRef> = self
                    .leases
                    .iter()
                    .filter(|l| self.is_live(l))
                    .filter(|l| {
                        self.find(l.job_id)
                            .is_some_and(|j| self.jobs[j].cancel_requested)
                    })
                    .collect();
                if cancelling.is_empty() {
                    self.resolve_lease(&LeaseSel::Live(*i))
                } else {
                    *cancelling[i.index(cancelling.len())]
                }
            }
            LeaseSel::Any(i) if !self.leases.is_empty() => self.leases[i.index(self.leases.len())],
            LeaseSel::Future(i) if !self.jobs.is_empty() => {
                let job = &self.jobs[i.index(self.jobs.len())];
                LeaseRef {
                    job_id: job.id,
                    token: job.token + 1,
                }
            }
            _ => unknown,
        }
    }

    fn resolve_job(&self, sel: &JobSel) -> Uuid {
        match sel {
            JobSel::Running(i) => {
                let running: Vec<&ModelJob> = self
                    .jobs
                    .iter()
                    .filter(|j| j.state == JobState::Running)
                    .collect();
                if running.is_empty() {
                    self.resolve_job(&JobSel::Any(*i))
                } else {
                    running[i.index(running.len())].id
                }
            }
            JobSel::Any(i) if !self.jobs.is_empty() => self.jobs[i.index(self.jobs.len())].id,
            _ => UNKNOWN_JOB,
        }
    }

    /// The job a lease-holder call acts on, or why it is refused.
    fn leased(&self, lease: &LeaseRef) -> Result<usize, Refusal> {
        match self.find(lease.job_id) {
            None => Err(Refusal::NotFound),
            Some(i) if self.is_live(lease) => Ok(i),
            Some(_) => Err(Refusal::LeaseLost),
        }
    }

    /// The head of a pipeline: the queued job dispatched first (priority desc, then
    /// start tag, then seq).
    fn head_of(&self, pipeline: Pipeline) -> Option<usize> {
        (0..self.jobs.len())
            .filter(|&i| {
                self.jobs[i].state == JobState::Queued && self.jobs[i].pipeline == pipeline
            })
            .min_by_key(|&i| self.order_key(i))
    }

    /// Where job `i` sorts among its pipeline's queued jobs.
    fn order_key(&self, i: usize) -> (std::cmp::Reverse<i64>, i64, i64) {
        let j = &self.jobs[i];
        (std::cmp::Reverse(j.priority), j.vstart, j.seq)
    }

    /// The queued jobs of (pipeline, priority), other than `except`.
    fn queued_at(
        &self,
        pipeline: Pipeline,
        priority: i64,
        except: Option<usize>,
    ) -> impl Iterator<Item = &ModelJob> {
        self.jobs.iter().enumerate().filter_map(move |(i, j)| {
            (j.state == JobState::Queued
                && j.pipeline == pipeline
                && j.priority == priority
                && Some(i) != except)
                .then_some(j)
        })
    }

    /// Start-time fair queuing: a new job of `key` starts at the queue's smallest tag
    /// (0 when empty), or one job of its key's weight after its key's last queued tag if
    /// that is later.
    fn start_tag(&self, pipeline: Pipeline, priority: i64, key: usize) -> i64 {
        let head = self
            .queued_at(pipeline, priority, None)
            .map(|j| j.vstart)
            .min()
            .unwrap_or(0);
        let last = self
            .queued_at(pipeline, priority, None)
            .filter(|j| j.key == key)
            .map(|j| j.vstart)
            .max();
        match last {
            Some(last) => head.max(last + 1000 / KEY_WEIGHTS[key]),
            None => head,
        }
    }

    /// Which job a claim takes: the loaded pipeline's head unless another pipeline's head
    /// is starving (with the eager switch bound, all of them are; the oldest wins), else
    /// the best head by priority, then age.
    fn pick(
        &self,
        pipelines: &[Pipeline],
        loaded: Option<Pipeline>,
        eager_switch: bool,
    ) -> Option<usize> {
        let heads: Vec<(Pipeline, usize)> = pipelines
            .iter()
            .filter_map(|&p| self.head_of(p).map(|i| (p, i)))
            .collect();
        let starving = heads
            .iter()
            .filter(|(p, _)| eager_switch && Some(*p) != loaded)
            .min_by_key(|(_, i)| self.jobs[*i].created_at_ms)
            .map(|(p, _)| *p);
        if let Some(preferred) = starving.or(loaded)
            && let Some(&(_, i)) = heads.iter().find(|(p, _)| *p == preferred)
        {
            return Some(i);
        }
        heads.into_iter().map(|(_, i)| i).min_by_key(|&i| {
            let j = &self.jobs[i];
            (std::cmp::Reverse(j.priority), j.created_at_ms, j.seq)
        })
    }

    /// Ends a running attempt without a result; mirrors the store's rule that a cancel
    /// request wins over a retry.
    fn end_attempt(&mut self, i: usize, error: ErrorModel, retryable: bool) -> JobState {
        let job = &mut self.jobs[i];
        let next = if job.cancel_requested {
            JobState::Cancelled
        } else if retryable && job.attempt < job.max_attempts {
            JobState::Queued
        } else {
            JobState::Failed
        };
        job.state = next;
        job.error = Some(error);
        job.owner = None;
        job.progress = None;
        if next == JobState::Queued {
            // Back to the front: its own tag, or the queue's smallest if that is smaller.
            let (pipeline, priority) = (self.jobs[i].pipeline, self.jobs[i].priority);
            let head = self
                .queued_at(pipeline, priority, Some(i))
                .map(|j| j.vstart)
                .min();
            if let Some(head) = head {
                self.jobs[i].vstart = self.jobs[i].vstart.min(head);
            }
        }
        next
    }

    /// Ends every running attempt `matches` selects, as the reaper and lease release do.
    fn end_stranded(
        &mut self,
        reason: &'static str,
        matches: impl Fn(&ModelJob) -> bool,
    ) -> Vec<ReapedJob> {
        let mut ended = Vec::new();
        for i in 0..self.jobs.len() {
            let job = &self.jobs[i];
            if job.state != JobState::Running || !matches(job) {
                continue;
            }
            // A pending forced cancel wins, then a retry while attempts remain.
            let outcome = if job.cancel_requested {
                ReapOutcome::Cancelled
            } else if job.attempt < job.max_attempts {
                ReapOutcome::Requeued
            } else {
                ReapOutcome::Failed
            };
            let next = self.end_attempt(i, ErrorModel::Stranded { reason, outcome }, true);
            let expected = match outcome {
                ReapOutcome::Requeued => JobState::Queued,
                ReapOutcome::Failed => JobState::Failed,
                ReapOutcome::Cancelled => JobState::Cancelled,
            };
            assert_eq!(next, expected, "model: stranded outcome");
            ended.push(ReapedJob {
                id: self.jobs[i].id,
                model_id: self.jobs[i].model_id.clone(),
                outcome,
            });
        }
        ended
    }

    /// Exactly the number of queued jobs of the same pipeline dispatched before job `i`.
    fn position(&self, i: usize) -> Option<u64> {
        let me = &self.jobs[i];
        (me.state == JobState::Queued).then(|| {
            self.jobs
                .iter()
                .filter(|j| j.state == JobState::Queued && j.pipeline == me.pipeline)
                .filter(|j| {
                    j.priority > me.priority
                        || (j.priority == me.priority && (j.vstart, j.seq) < (me.vstart, me.seq))
                })
                .count() as u64
        })
    }

    fn queued_total(&self) -> u64 {
        self.jobs
            .iter()
            .filter(|j| j.state == JobState::Queued)
            .count() as u64
    }

    fn counts(&self) -> Vec<JobCount> {
        let mut counts: HashMap<(String, JobState), u64> = HashMap::new();
        for job in &self.jobs {
            if matches!(job.state, JobState::Queued | JobState::Running) {
                *counts.entry((job.model_id.clone(), job.state)).or_default() += 1;
            }
        }
        let mut counts: Vec<JobCount> = counts
            .into_iter()
            .map(|((model_id, state), count)| JobCount {
                model_id,
                state,
                count,
            })
            .collect();
        sort_counts(&mut counts);
        counts
    }
}

fn sort_counts(counts: &mut [JobCount]) {
    counts.sort_by(|a, b| (&a.model_id, a.state.as_str()).cmp(&(&b.model_id, b.state.as_str())));
}

fn new_job(pipeline: Pipeline, priority: i64, max_attempts: u32, owner: &str) -> NewJob {
    NewJob {
        max_attempts,
        owner_key_id: owner.into(),
        ..crate::support::new_job(pipeline, priority)
    }
}

fn result_for(id: Uuid) -> JobResult {
    crate::support::result_at(&format!("results/{id}.mp4"))
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// Splits a store answer into success or the refusal the model can predict; any other
/// error fails the test.
fn refusal<T>(result: Result<T>, ctx: &str) -> Result<T, Refusal> {
    match result {
        Ok(v) => Ok(v),
        Err(StoreError::LeaseLost) => Err(Refusal::LeaseLost),
        Err(StoreError::NotFound) => Err(Refusal::NotFound),
        Err(StoreError::InvalidState(state)) => Err(Refusal::InvalidState(state)),
        Err(e) => panic!("{ctx}: unexpected store error: {e}"),
    }
}

/// One job's stored record against the model's.
fn check_record(rec: &JobRecord, m: &ModelJob, now: i64, ctx: &str) {
    let ctx = format!("{ctx}: job seq {}", m.seq);
    assert_eq!(rec.id, m.id, "{ctx}: id");
    assert_eq!(rec.seq, m.seq, "{ctx}: seq");
    assert_eq!(rec.created_at_ms, m.created_at_ms, "{ctx}: created_at");
    assert_eq!(rec.model_id, m.model_id, "{ctx}: model_id");
    assert_eq!(rec.pipeline, m.pipeline, "{ctx}: pipeline");
    assert_eq!(rec.priority, m.priority, "{ctx}: priority");
    assert_eq!(rec.owner_key_id, m.key_id, "{ctx}: owner_key_id");
    assert_eq!(rec.spec, pipelet_api::JobSpec::sample("p"), "{ctx}: spec");
    assert_eq!(rec.state, m.state, "{ctx}: state");
    assert_eq!(rec.attempt, m.attempt, "{ctx}: attempt");
    assert_eq!(rec.max_attempts, m.max_attempts, "{ctx}: max_attempts");
    assert_eq!(rec.lease_token, m.token, "{ctx}: lease_token");
    assert_eq!(rec.lease_owner, m.owner, "{ctx}: lease_owner");
    assert_eq!(
        rec.cancel_requested, m.cancel_requested,
        "{ctx}: cancel_requested"
    );
    assert_eq!(rec.progress, m.progress, "{ctx}: progress");
    assert_eq!(rec.result, m.result, "{ctx}: result");
    assert_eq!(rec.cancelled_by, m.cancelled_by, "{ctx}: cancelled_by");
    assert_eq!(
        rec.started_at_ms.is_some(),
        m.attempt > 0,
        "{ctx}: started_at {:?}",
        rec.started_at_ms
    );
    assert_eq!(
        rec.finished_at_ms.is_some(),
        m.state.is_terminal(),
        "{ctx}: finished_at {:?}",
        rec.finished_at_ms
    );
    match (m.state, rec.lease_expires_at_ms) {
        (JobState::Running, Some(at)) => assert_eq!(
            at < now,
            m.expired,
            "{ctx}: lease expires at {at}, now {now}, model says expired = {}",
            m.expired
        ),
        (JobState::Running, None) => panic!("{ctx}: running without a lease expiry"),
        (_, at) => assert_eq!(at, None, "{ctx}: lease expiry on a job that is not running"),
    }
    match (&m.error, &rec.error) {
        (None, got) => {
            assert_eq!(got, &None, "{ctx}: error");
            assert_eq!(rec.error_detail, None, "{ctx}: error detail");
        }
        (Some(ErrorModel::Exact(want)), got) => {
            assert_eq!(got.as_deref(), Some(want.as_str()), "{ctx}: error");
            let detail = rec.error_detail.as_deref().unwrap_or("");
            assert!(
                detail.starts_with(want.as_str()) && detail.contains("(holder "),
                "{ctx}: error detail {detail:?}"
            );
        }
        (Some(ErrorModel::Stranded { reason, outcome }), Some(got)) => {
            let detail = rec.error_detail.as_deref().unwrap_or("");
            assert!(
                detail.contains(reason) && detail.contains("(holder "),
                "{ctx}: error detail {detail:?} should say {reason:?} and the holder"
            );
            assert!(
                !got.contains("holder"),
                "{ctx}: error {got:?} names the holder"
            );
            // Both say what happened, and nothing else: re-queued, gave up, or
            // cancelled.
            let says = [
                (ReapOutcome::Requeued, detail.contains("re-queued")),
                (ReapOutcome::Failed, detail.contains("gave up")),
                (ReapOutcome::Cancelled, detail.starts_with("cancelled")),
            ];
            let client_says = [
                (ReapOutcome::Requeued, got.contains("(attempt ")),
                (
                    ReapOutcome::Failed,
                    !got.contains("(attempt ") && !got.starts_with("cancelled"),
                ),
                (ReapOutcome::Cancelled, got.starts_with("cancelled")),
            ];
            for ((which, said), (_, client_said)) in says.into_iter().zip(client_says) {
                assert_eq!(
                    (said, client_said),
                    (which == *outcome, which == *outcome),
                    "{ctx}: error {got:?} / {detail:?} for outcome {outcome:?}"
                );
            }
        }
        (Some(want), None) => panic!("{ctx}: no error, expected {want:?}"),
    }
}

/// Every invariant the store must keep after any operation.
async fn check_all(
    store: &dyn Store,
    model: &Model,
    frozen: &mut HashMap<Uuid, JobRecord>,
    ctx: &str,
) {
    let now = now_ms();
    for (i, m) in model.jobs.iter().enumerate() {
        let (rec, pos) = store
            .job_status(m.id)
            .await
            .unwrap_or_else(|e| panic!("{ctx}: job_status: {e}"))
            .unwrap_or_else(|| panic!("{ctx}: job seq {} is gone", m.seq));
        check_record(&rec, m, now, ctx);
        assert_eq!(
            pos,
            model.position(i),
            "{ctx}: queue position of job seq {}",
            m.seq
        );
        if rec.state.is_terminal() {
            // A finished job (completed, failed or cancelled) never changes again.
            match frozen.get(&rec.id) {
                Some(before) => {
                    assert_eq!(&rec, before, "{ctx}: terminal job seq {} changed", m.seq)
                }
                None => {
                    frozen.insert(rec.id, rec);
                }
            }
        }
    }
    assert_eq!(
        store.queued_total(),
        model.queued_total(),
        "{ctx}: queued_total"
    );
    let mut counts = store
        .job_counts()
        .await
        .unwrap_or_else(|e| panic!("{ctx}: job_counts: {e}"));
    sort_counts(&mut counts);
    assert_eq!(counts, model.counts(), "{ctx}: job_counts");
    let listed: Vec<Uuid> = store
        .list_jobs(None, 1000)
        .await
        .unwrap_or_else(|e| panic!("{ctx}: list_jobs: {e}"))
        .into_iter()
        .map(|j| j.id)
        .collect();
    let expected: Vec<Uuid> = model.jobs.iter().rev().map(|j| j.id).collect();
    assert_eq!(listed, expected, "{ctx}: list_jobs (newest first)");
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// Drops the store it is given and opens the same one again (same file or database).
pub type Reopen<'a> = &'a (dyn Fn() -> LocalBoxFuture<'static, Arc<dyn Store>> + Sync);

/// Runs `ops` against `store` and the model, checking every answer and every invariant
/// after each step. `reopen` serves [`Op::Reopen`]: the driver drops its handle first.
pub async fn check_against_model(mut store: Arc<dyn Store>, ops: Vec<Op>, reopen: Reopen<'_>) {
    let mut model = Model::default();
    let mut frozen = HashMap::new();
    // The keys jobs belong to, with their weights; they outlive reopens.
    let mut key_ids = Vec::with_capacity(KEY_WEIGHTS.len());
    for (i, &weight) in KEY_WEIGHTS.iter().enumerate() {
        let name = format!("model-key-{i}");
        let (key, _) = store
            .create_key(NewKey {
                name: name.clone(),
                role: Role::Client,
                max_priority: 0,
                expires_at_ms: None,
            })
            .await
            .unwrap_or_else(|e| panic!("create key {name}: {e}"));
        let update = KeyUpdate {
            weight: Some(weight),
            ..KeyUpdate::default()
        };
        store
            .update_key(&name, update)
            .await
            .unwrap_or_else(|e| panic!("weight of {name}: {e}"));
        key_ids.push(key.id);
    }
    check_all(store.as_ref(), &model, &mut frozen, "empty store").await;
    for (step, op) in ops.into_iter().enumerate() {
        let ctx = format!("step {step} {op:?}");
        let s = store.as_ref();
        match op {
            Op::Create {
                pipeline,
                priority,
                max_attempts,
                key,
            } => {
                let job = new_job(pipeline, priority, max_attempts, &key_ids[key]);
                let vstart = model.start_tag(pipeline, priority, key);
                let rec = s
                    .create_job(job.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                if let Some(last) = model.jobs.last() {
                    assert!(
                        rec.seq > last.seq,
                        "{ctx}: seq {} after {}",
                        rec.seq,
                        last.seq
                    );
                }
                let m = ModelJob {
                    id: job.id,
                    seq: rec.seq,
                    created_at_ms: rec.created_at_ms,
                    model_id: job.model_id,
                    pipeline,
                    priority,
                    key,
                    key_id: key_ids[key].clone(),
                    vstart,
                    state: JobState::Queued,
                    attempt: 0,
                    max_attempts,
                    token: 0,
                    owner: None,
                    expired: false,
                    cancel_requested: false,
                    progress: None,
                    error: None,
                    result: None,
                    cancelled_by: None,
                };
                check_record(&rec, &m, now_ms(), &ctx);
                model.jobs.push(m);
                let promised = model.position(model.jobs.len() - 1);
                assert_eq!(Some(rec.position), promised, "{ctx}: position at create");
            }
            Op::Claim {
                worker,
                pipelines,
                loaded,
                lease,
                eager_switch,
            } => {
                let req = ClaimRequest {
                    worker_id: WORKERS[worker].into(),
                    pipelines: pipelines.clone(),
                    loaded,
                    lease_ms: lease.ms(),
                    max_wait_for_switch_ms: if eager_switch { -1 } else { NEVER_SWITCH_MS },
                };
                let want = model.pick(&pipelines, loaded, eager_switch);
                let got = s.claim(&req).await.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                match (want, got) {
                    (None, None) => {}
                    (Some(i), Some(got)) => {
                        let m = &mut model.jobs[i];
                        assert_eq!(
                            got.job.id, m.id,
                            "{ctx}: claimed seq {}, model picks seq {}",
                            got.job.seq, m.seq
                        );
                        m.state = JobState::Running;
                        m.attempt += 1;
                        m.token += 1;
                        m.owner = Some(WORKERS[worker].into());
                        m.expired = lease == LeaseLen::Expired;
                        m.progress = None;
                        let expected = LeaseRef {
                            job_id: m.id,
                            token: m.token,
                        };
                        assert_eq!(got.lease, expected, "{ctx}: lease");
                        assert_eq!(
                            Some(got.expires_at_ms),
                            got.job.lease_expires_at_ms,
                            "{ctx}: lease expiry"
                        );
                        check_record(&got.job, m, now_ms(), &ctx);
                        model.leases.push(got.lease);
                    }
                    (want, got) => panic!(
                        "{ctx}: claimed {:?}, model picks {:?}",
                        got.map(|l| l.job.seq),
                        want.map(|i| model.jobs[i].seq)
                    ),
                }
            }
            Op::Heartbeat {
                lease,
                extend,
                progress,
            } => {
                let lease = model.resolve_lease(&lease);
                let progress = progress.map(|done| ProgressUpdate { done, total: 10 });
                let want = model.leased(&lease);
                let got = refusal(s.heartbeat(&lease, progress, extend.ms()).await, &ctx);
                assert_eq!(got.map(|_| ()), want.map(|_| ()), "{ctx}: {lease:?}");
                if let (Ok(i), Ok(reply)) = (want, got) {
                    let m = &mut model.jobs[i];
                    assert_eq!(
                        reply.cancel_requested, m.cancel_requested,
                        "{ctx}: cancel_requested"
                    );
                    m.expired = extend == LeaseLen::Expired;
                    if progress.is_some() {
                        m.progress = progress;
                    }
                    let rec = s.get_job(m.id).await.unwrap().unwrap();
                    assert_eq!(
                        rec.lease_expires_at_ms,
                        Some(reply.expires_at_ms),
                        "{ctx}: extended expiry"
                    );
                }
            }
            Op::Complete { lease } => {
                let lease = model.resolve_lease(&lease);
                let want = model.leased(&lease);
                let got = refusal(s.complete(&lease, &result_for(lease.job_id)).await, &ctx);
                assert_eq!(got, want.map(|_| ()), "{ctx}: {lease:?}");
                if let Ok(i) = want {
                    let m = &mut model.jobs[i];
                    m.state = JobState::Completed;
                    m.owner = None;
                    m.result = Some(result_for(m.id));
                    m.progress = m.progress.map(|p| ProgressUpdate {
                        done: p.total,
                        total: p.total,
                    });
                }
            }
            Op::Fail { lease, retryable } => {
                let lease = model.resolve_lease(&lease);
                let error = format!("runner failed at step {step}");
                let want = model.leased(&lease).map(|i| {
                    match model.end_attempt(i, ErrorModel::Exact(error.clone()), retryable) {
                        JobState::Queued => FailOutcome::Requeued,
                        // A pending forced cancel wins; the worker's error is kept.
                        JobState::Cancelled => FailOutcome::Cancelled,
                        _ => FailOutcome::Failed,
                    }
                });
                let failure = Failure::plain(error);
                let got = refusal(s.fail(&lease, &failure, retryable).await, &ctx);
                assert_eq!(got, want, "{ctx}: {lease:?}");
            }
            Op::AckCancelled { lease } => {
                // Only on a live lease whose job has a forced cancel pending; otherwise
                // refused, changing nothing (the worker keeps its lease).
                let lease = model.resolve_lease(&lease);
                let want = model.leased(&lease).and_then(|i| {
                    if model.jobs[i].cancel_requested {
                        Ok(i)
                    } else {
                        Err(Refusal::InvalidState(JobState::Running))
                    }
                });
                let got = refusal(s.ack_cancelled(&lease).await, &ctx);
                assert_eq!(got, want.map(|_| ()), "{ctx}: {lease:?}");
                if let Ok(i) = want {
                    let m = &mut model.jobs[i];
                    m.state = JobState::Cancelled;
                    let holder = m.owner.take().unwrap_or_else(|| "worker".into());
                    m.cancelled_by.get_or_insert(holder);
                }
            }
            Op::Cancel { job, force } => {
                let id = model.resolve_job(&job);
                let by = format!("client at step {step}");
                let want = match model.find(id) {
                    None => Err(Refusal::NotFound),
                    Some(i) => {
                        let m = &mut model.jobs[i];
                        Ok(match m.state {
                            JobState::Queued => {
                                m.state = JobState::Cancelled;
                                m.cancelled_by = Some(by.clone());
                                CancelOutcome::Cancelled
                            }
                            JobState::Cancelled => CancelOutcome::AlreadyCancelled,
                            JobState::Running if force => {
                                m.cancel_requested = true;
                                m.cancelled_by.get_or_insert(by.clone());
                                CancelOutcome::StopRequested
                            }
                            state => CancelOutcome::NotCancellable(state),
                        })
                    }
                };
                let got = refusal(s.cancel(id, force, &by).await, &ctx);
                assert_eq!(got, want, "{ctx}: job {id}");
            }
            Op::Reap => {
                let mut want = model.end_stranded(REAP_REASON, |j| j.expired);
                let mut got = s
                    .reap_expired(now_ms())
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                want.sort_by_key(|r| r.id);
                got.sort_by_key(|r| r.id);
                assert_eq!(got, want, "{ctx}: reaped");
            }
            Op::Release { prefix } => {
                let prefix = PREFIXES[prefix];
                let want = model.end_stranded(RELEASE_REASON, |j| {
                    j.owner.as_deref().is_some_and(|o| o.starts_with(prefix))
                });
                let got = s
                    .release_leases_of(prefix)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert_eq!(got, want.len() as u64, "{ctx}: released {prefix:?}");
            }
            Op::Reopen => {
                drop(store);
                store = reopen().await;
            }
        }
        check_all(store.as_ref(), &model, &mut frozen, &ctx).await;
    }
}

// ---------------------------------------------------------------------------------------
// Instantiations
// ---------------------------------------------------------------------------------------

/// `default_cases` unless `PROPTEST_CASES` says otherwise (e.g. 5000 for a longer soak).
fn config_with(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        // Each shrink step replays a whole sequence against a fresh database.
        max_shrink_iters: 2048,
        // `model.proptest-regressions` beside this file (the default would look for a
        // tree parallel to the one holding `main.rs`).
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

/// Runs one proptest case's async body on a runtime of its own.
fn block_on(case: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(case);
}

fn config() -> ProptestConfig {
    config_with(64)
}

/// Fewer by default: each case creates, migrates and drops a database.
fn postgres_config() -> ProptestConfig {
    config_with(24)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sqlite_store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pipelet.db");
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
            let reopen = move || -> LocalBoxFuture<'static, Arc<dyn Store>> {
                let path = path.clone();
                Box::pin(async move {
                    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
                    store
                })
            };
            check_against_model(store, ops, &reopen).await;
        });
    }
}

proptest! {
    #![proptest_config(postgres_config())]

    /// The same property on PostgreSQL, each case on a fresh database (see
    /// `support.rs`; skipped with `PIPELET_SKIP_POSTGRES=1`). Reopen connects a new
    /// `PgStore` to the same database, as a restarted server would.
    #[test]
    fn postgres_store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        block_on(async {
            let Some(db) = crate::support::pg_db() else {
                return;
            };
            let url = db.url.clone();
            let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
            let reopen = move || -> LocalBoxFuture<'static, Arc<dyn Store>> {
                let url = url.clone();
                Box::pin(async move {
                    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
                    store
                })
            };
            // Drop the database even when the case fails: shrinking replays many
            // failing cases, and the minimal one is printed anyway.
            let checked = std::panic::AssertUnwindSafe(check_against_model(store, ops, &reopen))
                .catch_unwind()
                .await;
            drop(db);
            if let Err(panic) = checked {
                std::panic::resume_unwind(panic);
            }
        });
    }
}
