//! Lock-free id allocators (T2.3) and the logical clock.
//!
//! Page ids and delta ids are 64-bit, start at 1 and are never reused within
//! one state's lifetime (until `reset`). Allocation is a single atomic
//! `fetch_add`; callers that must not consume an id on failure use
//! [`IdAlloc::peek`] first and [`IdAlloc::commit`] once the operation can no
//! longer fail.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing id source starting at 1.
#[derive(Debug)]
pub struct IdAlloc(AtomicU64);

impl Default for IdAlloc {
    fn default() -> Self {
        IdAlloc::new()
    }
}

impl IdAlloc {
    pub const fn new() -> Self {
        IdAlloc(AtomicU64::new(1))
    }

    /// Allocates the next id.
    #[inline]
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// Allocates `n` consecutive ids; returns the first.
    #[inline]
    pub fn take(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::Relaxed)
    }

    /// The id the next call to [`IdAlloc::next`] would return.
    #[inline]
    pub fn peek(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Marks `id` (obtained from `peek`) as consumed.
    #[inline]
    pub fn commit(&self, id: u64) {
        self.0.fetch_max(id.saturating_add(1), Ordering::Relaxed);
    }

    /// Sets the next id (restore, replay).
    pub fn set(&self, next: u64) {
        self.0.store(next.max(1), Ordering::Relaxed);
    }

    /// Ensures the next id is larger than `seen` (replay of a logged id).
    pub fn observe(&self, seen: u64) {
        self.0.fetch_max(seen.saturating_add(1), Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.set(1);
    }
}

/// A logical clock: every stamp and every write ticks it once. Never
/// wall-clock time, so timestamps are deterministic across replays.
#[derive(Debug, Default)]
pub struct LogicalClock(AtomicU64);

impl LogicalClock {
    pub const fn new() -> Self {
        LogicalClock(AtomicU64::new(0))
    }

    /// Advances the clock and returns the new time (first tick is 1).
    #[inline]
    pub fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Advances the clock by `n` ticks; returns the first new time.
    #[inline]
    pub fn tick_n(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::Relaxed) + 1
    }

    /// The current time (the last value handed out, 0 if none).
    #[inline]
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the clock forward to at least `t` (replay of a logged stamp).
    pub fn observe(&self, t: u64) {
        self.0.fetch_max(t, Ordering::Relaxed);
    }

    pub fn set(&self, t: u64) {
        self.0.store(t, Ordering::Relaxed);
    }
}

/// The allocators of one state.
#[derive(Debug, Default)]
pub struct Ids {
    pub page: IdAlloc,
    pub delta: IdAlloc,
    pub clock: LogicalClock,
}

impl Ids {
    pub fn reset(&self) {
        self.page.reset();
        self.delta.reset();
        self.clock.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn starts_at_one_and_is_unique_across_threads() {
        let a = Arc::new(IdAlloc::new());
        assert_eq!(a.peek(), 1);
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || (0..1000).map(|_| a.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in hs {
            for id in h.join().unwrap() {
                assert!(all.insert(id));
            }
        }
        assert_eq!(all.len(), 4000);
        assert_eq!(*all.iter().min().unwrap(), 1);
        assert_eq!(a.peek(), 4001);
    }

    #[test]
    fn peek_commit_observe() {
        let a = IdAlloc::new();
        let id = a.peek();
        assert_eq!(a.peek(), id);
        a.commit(id);
        assert_eq!(a.peek(), 2);
        a.observe(10);
        assert_eq!(a.next(), 11);
        a.reset();
        assert_eq!(a.next(), 1);
        let c = LogicalClock::new();
        assert_eq!(c.tick(), 1);
        c.observe(7);
        assert_eq!(c.tick(), 8);
    }
}
