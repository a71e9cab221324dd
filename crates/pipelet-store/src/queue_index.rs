//! An in-memory mirror of the queued jobs, ordered exactly as dispatch orders them
//! (priority descending, then insertion order), so a queue position costs
//! O(priority levels + log n) instead of a scan per status poll.
//!
//! The store updates it in the same critical section as each committed write, and
//! rebuilds it from the database on open, so it is never the source of truth.

use std::collections::{BTreeMap, HashMap, VecDeque};

use pipelet_api::Pipeline;

/// The queued jobs of every pipeline by (priority, seq), mirrored from the database.
#[derive(Debug, Default)]
pub struct QueueIndex {
    /// Per pipeline, per priority: queued seqs in ascending order.
    pipelines: HashMap<Pipeline, BTreeMap<i64, VecDeque<i64>>>,
    total: u64,
}

impl QueueIndex {
    /// An empty index; the store fills it from the database on open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a job that became queued (created or re-queued); adding one twice is a no-op.
    pub fn insert(&mut self, pipeline: Pipeline, priority: i64, seq: i64) {
        let level = self
            .pipelines
            .entry(pipeline)
            .or_default()
            .entry(priority)
            .or_default();
        // New jobs have the highest seq, so this is a push_back; re-queued ones are not.
        match level.back() {
            Some(&last) if last > seq => {
                let at = level.partition_point(|&s| s < seq);
                if level.get(at) == Some(&seq) {
                    return;
                }
                level.insert(at, seq);
            }
            Some(&last) if last == seq => return,
            _ => level.push_back(seq),
        }
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
        // Claims take the head, so check it before searching.
        let removed = if level.front() == Some(&seq) {
            level.pop_front().is_some()
        } else {
            match level.binary_search(&seq) {
                Ok(at) => level.remove(at).is_some(),
                Err(_) => false,
            }
        };
        if level.is_empty() {
            levels.remove(&priority);
        }
        if removed {
            self.total -= 1;
        }
        removed
    }

    /// How many queued jobs of `pipeline` will be dispatched before this one, or `None`
    /// when the job is not queued.
    pub fn position(&self, pipeline: Pipeline, priority: i64, seq: i64) -> Option<u64> {
        let levels = self.pipelines.get(&pipeline)?;
        let level = levels.get(&priority)?;
        let within = level.binary_search(&seq).ok()?;
        let ahead: usize = levels
            .range((
                std::ops::Bound::Excluded(priority),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, l)| l.len())
            .sum();
        Some((ahead + within) as u64)
    }

    /// Jobs queued across all pipelines: what `--max-queued` is checked against.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Jobs queued for `pipeline`.
    pub fn queued_in(&self, pipeline: Pipeline) -> u64 {
        self.pipelines
            .get(&pipeline)
            .map(|levels| levels.values().map(|l| l.len() as u64).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_priority_then_age() {
        let mut q = QueueIndex::new();
        q.insert(Pipeline::T2v, 0, 1);
        q.insert(Pipeline::T2v, 0, 2);
        q.insert(Pipeline::T2v, 10, 3);
        q.insert(Pipeline::I2v, 0, 4);
        assert_eq!(q.position(Pipeline::T2v, 10, 3), Some(0));
        assert_eq!(q.position(Pipeline::T2v, 0, 1), Some(1));
        assert_eq!(q.position(Pipeline::T2v, 0, 2), Some(2));
        assert_eq!(q.position(Pipeline::I2v, 0, 4), Some(0));
        assert_eq!(q.total(), 4);
        assert!(q.remove(Pipeline::T2v, 0, 1));
        assert_eq!(q.position(Pipeline::T2v, 0, 2), Some(1));
        assert_eq!(q.position(Pipeline::T2v, 0, 1), None);
        // A re-queued older job goes back ahead of younger ones.
        q.insert(Pipeline::T2v, 0, 1);
        assert_eq!(q.position(Pipeline::T2v, 0, 1), Some(1));
        assert_eq!(q.position(Pipeline::T2v, 0, 2), Some(2));
        q.insert(Pipeline::T2v, 0, 1);
        assert_eq!(q.total(), 4, "inserting twice is idempotent");
        assert!(!q.remove(Pipeline::T2v, 5, 1));
    }
}
