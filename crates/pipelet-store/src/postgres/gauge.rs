//! The cached count behind `queued_total()` (a sync call made on every create for the
//! 429 check, so it cannot ask the database).
//!
//! The value moves with this process's own committed writes (+n on create, -1 on claim
//! or cancel, +1 on requeue) and is replaced every poll interval by a `count(*)` of the
//! queued jobs, which brings in other servers' writes. It is therefore exact for a lone
//! server and approximate (at most one interval behind) across several.
//!
//! A refresh must not undo a local write: a count read while one of this process's
//! writes was in flight may or may not include it, so such a count is thrown away
//! (unless refreshes keep losing that race, when the count is taken anyway and the
//! error is bounded by the writes in flight).

use std::sync::{Mutex, MutexGuard};

/// Refreshes skipped in a row before one is applied regardless.
const MAX_SKIPPED_REFRESHES: u32 = 5;

#[derive(Debug, Default)]
pub(crate) struct QueuedGauge {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    value: i64,
    in_flight: u64,
    generation: u64,
    skipped: u32,
}

/// A write in progress; [`WriteGuard::commit`] applies its delta, dropping it without
/// committing only ends it (the transaction rolled back or its outcome is unknown).
pub(crate) struct WriteGuard<'a> {
    gauge: &'a QueuedGauge,
    done: bool,
}

/// Taken before a refresh's count query, handed back with its result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshTicket {
    generation: u64,
    clean: bool,
}

impl QueuedGauge {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few plain assignments, so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self) -> u64 {
        u64::try_from(self.lock().value).unwrap_or(0)
    }

    /// Marks a write that may change the queued count as started.
    pub(crate) fn write(&self) -> WriteGuard<'_> {
        self.lock().in_flight += 1;
        WriteGuard {
            gauge: self,
            done: false,
        }
    }

    pub(crate) fn begin_refresh(&self) -> RefreshTicket {
        let state = self.lock();
        RefreshTicket {
            generation: state.generation,
            clean: state.in_flight == 0,
        }
    }

    /// Stores `count` unless a local write overlapped the query; returns whether it did.
    pub(crate) fn finish_refresh(&self, ticket: RefreshTicket, count: i64) -> bool {
        let mut state = self.lock();
        let clean = ticket.clean && state.in_flight == 0 && state.generation == ticket.generation;
        if clean || state.skipped >= MAX_SKIPPED_REFRESHES {
            state.value = count;
            state.skipped = 0;
            true
        } else {
            state.skipped += 1;
            false
        }
    }
}

impl WriteGuard<'_> {
    /// The write committed and changed the queued count by `delta`.
    pub(crate) fn commit(mut self, delta: i64) {
        let mut state = self.gauge.lock();
        state.value = state.value.saturating_add(delta);
        state.in_flight -= 1;
        state.generation += 1;
        self.done = true;
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.gauge.lock();
            state.in_flight -= 1;
            state.generation += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_writes_count_and_racing_refreshes_are_dropped() {
        let g = QueuedGauge::default();
        g.write().commit(3);
        assert_eq!(g.get(), 3);
        // A refresh with no write in flight is applied (another server added two).
        let t = g.begin_refresh();
        assert!(g.finish_refresh(t, 5));
        assert_eq!(g.get(), 5);
        // A write that commits during the count: the count is stale, keep ours.
        let t = g.begin_refresh();
        g.write().commit(-1);
        assert!(!g.finish_refresh(t, 5));
        assert_eq!(g.get(), 4);
        // A write in flight when the count starts: skipped too, even if it rolls back.
        let w = g.write();
        let t = g.begin_refresh();
        drop(w);
        assert!(!g.finish_refresh(t, 9));
        // Refreshes that keep losing the race are applied in the end.
        let _w = g.write();
        let applied = (0..=MAX_SKIPPED_REFRESHES)
            .map(|_| g.finish_refresh(g.begin_refresh(), 7))
            .filter(|&a| a)
            .count();
        assert_eq!(applied, 1);
        assert_eq!(g.get(), 7);
    }
}
