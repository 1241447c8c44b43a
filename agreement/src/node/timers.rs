//! Deadlines for the cores' and voters' timers; only the driver reads the clock.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use tokio::time::Instant;

pub struct Timers<K> {
    by_key: HashMap<K, Instant>,
    queue: BTreeSet<(Instant, K)>,
}

impl<K: Copy + Ord + Hash> Timers<K> {
    pub fn new() -> Self {
        Timers {
            by_key: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Arms `key` to fire at `at`, replacing an earlier arming.
    pub fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.queue.remove(&(old, key));
        }
        self.queue.insert((at, key));
    }

    pub fn cancel(&mut self, key: K) {
        if let Some(old) = self.by_key.remove(&key) {
            self.queue.remove(&(old, key));
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns every key due at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        while let Some(&(at, key)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            self.by_key.remove(&key);
            out.push(key);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rearming_replaces_and_due_pops_in_order() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.set(1u32, t0 + Duration::from_millis(10));
        t.set(2, t0 + Duration::from_millis(5));
        t.set(1, t0 + Duration::from_millis(20));
        t.set(3, t0 + Duration::from_millis(1));
        t.cancel(3);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(t.due(t0 + Duration::from_millis(15)), vec![2]);
        assert_eq!(t.due(t0 + Duration::from_millis(25)), vec![1]);
        assert_eq!(t.next_deadline(), None);
    }
}
