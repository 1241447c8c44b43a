//! The committed log as execution replicas see it: ORDERs kept from
//! the latest stable execution checkpoint onward, served to replicas that
//! fell behind (`FETCH_ORDERS`).

use std::collections::BTreeMap;
use zz_wire::{AppId, CheckpointCert, Digest, NodeId, Order, Principal, Proposal, Seq};

/// Most orders in one `OrdersReply`; the replica asks again for more.
pub const MAX_ORDERS_PER_REPLY: usize = 512;
/// Most body bytes (roughly) in one reply, to stay far below the frame limit.
const MAX_REPLY_BYTES: usize = 8 << 20;

/// `FETCH_ORDERS` answered per second to one replica, and in one burst. An
/// answer is up to `MAX_REPLY_BYTES` of work for ~100 bytes asked; a correct
/// replica asks f+1 nodes at most every 300 ms, so below 4 per second here.
pub const FETCH_ORDERS_RATE_PER_S: u64 = 5;
pub const FETCH_ORDERS_BURST: u64 = 10;

/// Per principal asking, a token bucket for `FETCH_ORDERS` answers.
#[derive(Default)]
pub struct FetchBudget {
    /// Tokens left (in thousandths) and when they were counted.
    buckets: BTreeMap<Principal, (u64, u64)>,
}

impl FetchBudget {
    /// Whether `who` may have one more answer at `now_ms`.
    pub fn allow(&mut self, who: Principal, now_ms: u64) -> bool {
        let full = FETCH_ORDERS_BURST * 1000;
        let (tokens, at) = self.buckets.entry(who).or_insert((full, now_ms));
        let refill = now_ms.saturating_sub(*at).saturating_mul(FETCH_ORDERS_RATE_PER_S);
        *tokens = tokens.saturating_add(refill).min(full);
        *at = now_ms;
        if *tokens < 1000 {
            return false;
        }
        *tokens -= 1000;
        true
    }
}

pub struct OrderLog {
    app: AppId,
    me: NodeId,
    n: usize,
    f: usize,
    orders: BTreeMap<Seq, Order>,
    stable: Option<CheckpointCert>,
}

impl OrderLog {
    pub fn new(app: AppId, me: NodeId, n: usize, f: usize) -> Self {
        OrderLog {
            app,
            me,
            n,
            f,
            orders: BTreeMap::new(),
            stable: None,
        }
    }

    /// Keeps the order for `seq`; returns the version to push to replicas
    /// now: with the body if this node is one of the f+1 designated body
    /// senders for `seq`, digest only otherwise.
    pub fn commit(&mut self, seq: Seq, digest: Digest, proposal: Proposal) -> Order {
        let full = Order {
            node: self.me,
            app: self.app,
            seq,
            digest,
            proposal: Some(proposal),
        };
        let live = if self.designated(seq) {
            full.clone()
        } else {
            Order {
                proposal: None,
                ..full.clone()
            }
        };
        self.orders.insert(seq, full);
        live
    }

    fn designated(&self, seq: Seq) -> bool {
        let me = u64::from(self.me.0);
        let n = self.n as u64;
        (0..=self.f as u64).any(|k| (seq + k) % n == me)
    }

    /// The orders held in `from..=to`, bounded in count and bytes.
    pub fn range(&self, from: Seq, to: Seq) -> Vec<Order> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for o in self.orders.range(from..=to).map(|(_, o)| o) {
            let size = o.proposal.as_ref().map_or(0, Proposal::approx_bytes);
            if out.len() >= MAX_ORDERS_PER_REPLY || (bytes + size > MAX_REPLY_BYTES && !out.is_empty()) {
                break;
            }
            bytes += size;
            out.push(o.clone());
        }
        out
    }

    /// A new stable checkpoint: replicas replay from it, so older orders go.
    pub fn set_stable(&mut self, cert: CheckpointCert) {
        if self.stable.as_ref().is_some_and(|c| c.seq >= cert.seq) {
            return;
        }
        let keep = cert.seq + 1;
        self.orders = self.orders.split_off(&keep);
        self.stable = Some(cert);
    }

    pub fn stable(&self) -> Option<&CheckpointCert> {
        self.stable.as_ref()
    }

    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_come_from_f_plus_one_designated_nodes() {
        let mut with_body = [0u32; 9];
        for me in 0..4u8 {
            let mut log = OrderLog::new(AppId(0), NodeId(me.into()), 4, 1);
            for (seq, count) in with_body.iter_mut().enumerate().skip(1) {
                let o = log.commit(seq as u64, Digest::ZERO, Proposal::default());
                if o.proposal.is_some() {
                    *count += 1;
                }
            }
        }
        // Each seq's body is sent by exactly f+1 = 2 nodes.
        assert!(with_body[1..].iter().all(|c| *c == 2), "{with_body:?}");
    }

    #[test]
    fn stable_checkpoint_truncates_and_range_serves_the_rest() {
        let mut log = OrderLog::new(AppId(0), NodeId(0), 4, 1);
        for seq in 1..=10 {
            log.commit(seq, Digest::ZERO, Proposal::default());
        }
        log.set_stable(CheckpointCert {
            app: AppId(0),
            seq: 4,
            root: Digest::ZERO,
            sigs: vec![],
        });
        assert_eq!(log.len(), 6);
        let r = log.range(1, 7);
        assert_eq!(r.iter().map(|o| o.seq).collect::<Vec<_>>(), vec![5, 6, 7]);
        assert!(r.iter().all(|o| o.proposal.is_some()));
    }
}
