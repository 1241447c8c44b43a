//! Collects ORDERs until a sequence number may run: f+1 distinct agreement
//! nodes sent the same (seq, digest), and some node sent a body with that
//! digest. Any f+1 nodes include a correct one, so such a body is committed.

use std::collections::BTreeMap;
use zz_wire::{Digest, NodeId, Order, Proposal, Seq};

/// Orders further than this above the next seq are not held (bounded memory);
/// a replica that far behind fetches them again after catching up.
pub const WINDOW: u64 = 8192;

#[derive(Default, Debug)]
struct Slot {
    /// The first digest each node named; a node changing its mind is ignored.
    votes: BTreeMap<NodeId, Digest>,
    bodies: BTreeMap<Digest, Proposal>,
}

#[derive(Debug)]
pub struct OrderBook {
    quorum: usize,
    slots: BTreeMap<Seq, Slot>,
    highest_seen: Seq,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    Held,
    /// Already executed, too far ahead, or a body that does not match its digest.
    Dropped,
}

impl OrderBook {
    pub fn new(f: usize) -> Self {
        OrderBook {
            quorum: f + 1,
            slots: BTreeMap::new(),
            highest_seen: 0,
        }
    }

    /// Holds a verified order; `next` is the lowest seq not yet executed.
    pub fn add(&mut self, o: Order, next: Seq) -> Added {
        self.highest_seen = self.highest_seen.max(o.seq);
        if o.seq < next || o.seq >= next.saturating_add(WINDOW) {
            return Added::Dropped;
        }
        let slot = self.slots.entry(o.seq).or_default();
        slot.votes.entry(o.node).or_insert(o.digest);
        if let Some(p) = o.proposal {
            if p.digest() != o.digest {
                return Added::Dropped;
            }
            slot.bodies.entry(o.digest).or_insert(p);
        }
        Added::Held
    }

    /// The committed proposal at `seq`, if f+1 votes and a body are in.
    pub fn ready(&self, seq: Seq) -> Option<&Proposal> {
        let slot = self.slots.get(&seq)?;
        let mut counts: BTreeMap<Digest, usize> = BTreeMap::new();
        for d in slot.votes.values() {
            *counts.entry(*d).or_default() += 1;
        }
        counts
            .into_iter()
            .filter(|(_, c)| *c >= self.quorum)
            .find_map(|(d, _)| slot.bodies.get(&d))
    }

    pub fn take(&mut self, seq: Seq) -> Option<Proposal> {
        let d = self.ready(seq)?.digest();
        let mut slot = self.slots.remove(&seq)?;
        slot.bodies.remove(&d)
    }

    /// Forgets everything below `seq`.
    pub fn prune_below(&mut self, seq: Seq) {
        self.slots = self.slots.split_off(&seq);
    }

    /// The highest seq any node has named (held or not).
    pub fn highest_seen(&self) -> Seq {
        self.highest_seen
    }

    pub fn held(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zz_wire::{AppId, NonDet};

    fn order(node: u16, seq: Seq, p: &Proposal, body: bool) -> Order {
        Order {
            node: NodeId(node),
            app: AppId(0),
            seq,
            digest: p.digest(),
            proposal: body.then(|| p.clone()),
        }
    }

    #[test]
    fn needs_f_plus_one_votes_and_a_body() {
        let p = Proposal {
            requests: vec![],
            nondet: NonDet {
                timestamp_ms: 5,
                seed: 7,
            },
        };
        let mut b = OrderBook::new(1);
        b.add(order(0, 1, &p, false), 1);
        b.add(order(0, 1, &p, true), 1); // the same node twice counts once
        assert!(b.ready(1).is_none());
        b.add(order(1, 1, &p, false), 1);
        assert_eq!(b.take(1), Some(p));
    }

    #[test]
    fn a_body_that_does_not_match_its_digest_is_dropped() {
        let p = Proposal::default();
        let mut o = order(0, 1, &p, true);
        o.proposal = Some(Proposal {
            requests: vec![],
            nondet: NonDet {
                timestamp_ms: 1,
                seed: 1,
            },
        });
        let mut b = OrderBook::new(1);
        assert_eq!(b.add(o, 1), Added::Dropped);
        b.add(order(1, 1, &p, false), 1);
        b.add(order(2, 1, &p, false), 1);
        assert!(b.ready(1).is_none());
    }
}
