//! The test playing a worker through the store, for states no HTTP call can reach on
//! demand: running with a known progress, failed with a known reason.

use pipelet_api::Pipeline;
use pipelet_store::{ClaimRequest, Lease, ProgressUpdate};

use super::TestApp;

impl TestApp {
    /// Plays a worker: leases the next queued job of `pipeline` (it becomes IN_PROGRESS).
    pub async fn claim(&self, pipeline: Pipeline) -> Lease {
        let request = ClaimRequest {
            worker_id: "worker:api-test".into(),
            pipelines: vec![pipeline],
            loaded: None,
            lease_ms: 600_000,
            max_wait_for_switch_ms: 60_000,
        };
        self.state
            .store
            .claim(&request)
            .await
            .expect("claim")
            .expect("a queued job to claim")
    }

    /// Reports progress on a leased job, as a worker's heartbeat does.
    pub async fn report_progress(&self, lease: &Lease, done: u32, total: u32) {
        self.state
            .store
            .heartbeat(&lease.lease, Some(ProgressUpdate { done, total }), 600_000)
            .await
            .expect("heartbeat");
    }

    /// Ends a leased job FAILED for good with `reason`.
    pub async fn fail(&self, lease: &Lease, reason: &str) {
        self.state
            .store
            .fail(&lease.lease, &pipelet_store::Failure::plain(reason), false)
            .await
            .expect("fail the job");
    }
}
