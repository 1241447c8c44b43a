//! Budgets for the state messages a node relays between replicas (replicas
//! cannot be dialled into, so their state fetch goes through the nodes). A
//! Byzantine replica must not turn a correct node into an amplifier of its
//! flood: each sender gets a token bucket, and a message addressed across
//! apps is not relayed at all.

use std::collections::BTreeMap;
use zz_wire::ReplicaId;

/// Messages a replica may have relayed per second, and in one burst: a
/// woken replica's fetch keeps one request in flight, so this is far above
/// what catching up needs.
pub const RATE_PER_S: u64 = 500;
pub const BURST: u64 = 1000;

#[derive(Default)]
pub struct RelayBudget {
    /// Per sender: tokens left (in thousandths) and when they were counted.
    buckets: BTreeMap<ReplicaId, (u64, u64)>,
}

impl RelayBudget {
    /// Whether `from` may have one more message relayed to `to` at `now_ms`.
    pub fn allow(&mut self, from: ReplicaId, to: ReplicaId, now_ms: u64) -> bool {
        if from.app != to.app || from == to {
            return false;
        }
        let full = BURST * 1000;
        let (tokens, at) = self.buckets.entry(from).or_insert((full, now_ms));
        let refill = now_ms.saturating_sub(*at).saturating_mul(RATE_PER_S);
        *tokens = tokens.saturating_add(refill).min(full);
        *at = now_ms;
        if *tokens < 1000 {
            return false;
        }
        *tokens -= 1000;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zz_wire::AppId;

    fn rep(app: u16, index: u16) -> ReplicaId {
        ReplicaId { app: AppId(app), index }
    }

    #[test]
    fn a_burst_past_the_budget_is_refused_then_refills() {
        let mut b = RelayBudget::default();
        let allowed = (0..BURST * 3).filter(|_| b.allow(rep(0, 1), rep(0, 0), 1000)).count();
        assert_eq!(allowed as u64, BURST);
        assert!(b.allow(rep(0, 2), rep(0, 0), 1000), "other senders keep theirs");
        assert!(b.allow(rep(0, 1), rep(0, 0), 1010), "10 ms refill 5 messages");
    }

    #[test]
    fn messages_across_apps_or_to_oneself_are_not_relayed() {
        let mut b = RelayBudget::default();
        assert!(!b.allow(rep(0, 1), rep(1, 0), 0));
        assert!(!b.allow(rep(0, 1), rep(0, 1), 0));
    }
}
