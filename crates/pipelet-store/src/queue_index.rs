//! An in-memory mirror of the queued jobs, ordered exactly as dispatch orders them
//! (priority descending, then fair-queuing start tag, then insertion order), so a queue
//! position costs O(priority levels + log n) instead of a scan per status poll, and a
//! new job's start tag ([`crate::fair`]) costs a few lookups.
//!
//! The store updates it in the same critical section as each committed write, and
//! rebuilds it from the database on open, so it is never the source of truth.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use pipelet_api::Pipeline;

/// The queued jobs of one (pipeline, priority).
#[derive(Debug, Default)]
struct Level {
    /// (start tag, seq) in dispatch order.
    order: VecDeque<(i64, i64)>,
    /// seq → (start tag, owner), to find a job's place and its owner's tags by seq.
    jobs: HashMap<i64, (i64, String)>,
    /// Per owner: its queued (start tag, seq), so its last tag is the greatest.
    owners: HashMap<String, BTreeSet<(i64, i64)>>,
}

/// The queued jobs of every pipeline by (priority, start tag, seq), mirrored from the
/// database.
#[derive(Debug, Default)]
pub struct QueueIndex {
    pipelines: HashMap<Pipeline, BTreeMap<i64, Level>>,
    total: u64,
}

impl QueueIndex {
    /// An empty index; the store fills it from the database on open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a job that became queued (created or re-queued) with its start tag `vstart`
    /// and owning key; adding one twice is a no-op.
    pub fn insert(
        &mut self,
        pipeline: Pipeline,
        priority: i64,
        seq: i64,
        vstart: i64,
        owner: &str,
    ) {
        let level = self
            .pipelines
            .entry(pipeline)
            .or_default()
            .entry(priority)
            .or_default();
        if level.jobs.contains_key(&seq) {
            return;
        }
        let key = (vstart, seq);
        // Most new jobs go last; a fair share or a re-queue puts one further ahead.
        match level.order.back() {
            Some(&last) if last > key => {
                let at = level.order.partition_point(|&k| k < key);
                level.order.insert(at, key);
            }
            _ => level.order.push_back(key),
        }
        level.jobs.insert(seq, (vstart, owner.to_string()));
        level
            .owners
            .entry(owner.to_string())
            .or_default()
            .insert(key);
        self.total += 1;
    }

    /// Drops a job that left the queue (claimed, cancelled); `false` if it was not in it.
    pub fn remove(&mut self, pipeline: Pipeline, priority: i64, seq: i64) -> bool {
        let Some(levels) = self.pipelines.get_mut(&pipeline) else {
            return false;
        };
        let Some(level) = levels.get_mut(&priority) else {
            return false;
        };
        let Some((vstart, owner)) = level.jobs.remove(&seq) else {
            return false;
        };
        let key = (vstart, seq);
        // Claims take the head, so check it before searching.
        if level.order.front() == Some(&key) {
            level.order.pop_front();
        } else if let Ok(at) = level.order.binary_search(&key) {
            level.order.remove(at);
        }
        if let Some(tags) = level.owners.get_mut(&owner) {
            tags.remove(&key);
            if tags.is_empty() {
                level.owners.remove(&owner);
            }
        }
        if level.jobs.is_empty() {
            levels.remove(&priority);
        }
        self.total -= 1;
        true
    }

    /// How many queued jobs of `pipeline` will be dispatched before this one, or `None`
    /// when the job is not queued.
    pub fn position(&self, pipeline: Pipeline, priority: i64, seq: i64) -> Option<u64> {
        let levels = self.pipelines.get(&pipeline)?;
        let level = levels.get(&priority)?;
        let (vstart, _) = level.jobs.get(&seq)?;
        let within = level.order.binary_search(&(*vstart, seq)).ok()?;
        let ahead: usize = levels
            .range((
                std::ops::Bound::Excluded(priority),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, l)| l.order.len())
            .sum();
        Some((ahead + within) as u64)
    }

    /// The start tag of the first queued job of (pipeline, priority): the queue's
    /// virtual time; `None` when nothing of that priority is queued.
    pub fn head_tag(&self, pipeline: Pipeline, priority: i64) -> Option<i64> {
        let level = self.pipelines.get(&pipeline)?.get(&priority)?;
        level.order.front().map(|&(vstart, _)| vstart)
    }

    /// The greatest start tag among `owner`'s queued jobs of (pipeline, priority).
    pub fn last_tag(&self, pipeline: Pipeline, priority: i64, owner: &str) -> Option<i64> {
        let level = self.pipelines.get(&pipeline)?.get(&priority)?;
        level.owners.get(owner)?.last().map(|&(vstart, _)| vstart)
    }

    /// Jobs queued across all pipelines: what `--max-queued` is checked against.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Jobs queued for `pipeline`.
    pub fn queued_in(&self, pipeline: Pipeline) -> u64 {
        self.pipelines
            .get(&pipeline)
            .map(|levels| levels.values().map(|l| l.order.len() as u64).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_priority_then_age() {
        let mut q = QueueIndex::new();
        q.insert(Pipeline::T2v, 0, 1, 0, "a");
        q.insert(Pipeline::T2v, 0, 2, 1000, "a");
        q.insert(Pipeline::T2v, 10, 3, 0, "a");
        q.insert(Pipeline::I2v, 0, 4, 0, "a");
        assert_eq!(q.position(Pipeline::T2v, 10, 3), Some(0));
        assert_eq!(q.position(Pipeline::T2v, 0, 1), Some(1));
        assert_eq!(q.position(Pipeline::T2v, 0, 2), Some(2));
        assert_eq!(q.position(Pipeline::I2v, 0, 4), Some(0));
        assert_eq!(q.total(), 4);
        assert!(q.remove(Pipeline::T2v, 0, 1));
        assert_eq!(q.position(Pipeline::T2v, 0, 2), Some(1));
        assert_eq!(q.position(Pipeline::T2v, 0, 1), None);
        // A re-queued older job goes back ahead of younger ones.
        q.insert(Pipeline::T2v, 0, 1, 0, "a");
        assert_eq!(q.position(Pipeline::T2v, 0, 1), Some(1));
        assert_eq!(q.position(Pipeline::T2v, 0, 2), Some(2));
        q.insert(Pipeline::T2v, 0, 1, 0, "a");
        assert_eq!(q.total(), 4, "inserting twice is idempotent");
        assert!(!q.remove(Pipeline::T2v, 5, 1));
    }

    #[test]
    fn a_smaller_tag_goes_ahead_of_older_jobs() {
        let mut q = QueueIndex::new();
        for seq in 1..=5 {
            q.insert(Pipeline::T2v, 0, seq, (seq - 1) * 1000, "a");
        }
        q.insert(Pipeline::T2v, 0, 6, 0, "b");
        assert_eq!(q.position(Pipeline::T2v, 0, 6), Some(1));
        assert_eq!(q.position(Pipeline::T2v, 0, 2), Some(2));
        assert_eq!(q.head_tag(Pipeline::T2v, 0), Some(0));
        assert_eq!(q.last_tag(Pipeline::T2v, 0, "a"), Some(4000));
        assert_eq!(q.last_tag(Pipeline::T2v, 0, "b"), Some(0));
        assert!(q.remove(Pipeline::T2v, 0, 6));
        assert_eq!(q.last_tag(Pipeline::T2v, 0, "b"), None);
        assert!(q.remove(Pipeline::T2v, 0, 1));
        assert_eq!(q.head_tag(Pipeline::T2v, 0), Some(1000));
    }
}
