//! Collects ORDERs until a sequence number may run: f+1 distinct agreement
//! nodes sent the same (seq, digest), and some node sent a body with that
//! digest. Any f+1 nodes include a correct one, so such a body is committed.

use std::collections::{BTreeMap, BTreeSet};
use zz_wire::{Digest, NodeId, Order, Proposal, Seq};

/// Orders further than this above the next seq are not held (bounded memory);
/// a replica that far behind fetches them again after catching up.
pub const WINDOW: u64 = 8192;

/// Bytes of bodies one node may have held here (those this replica has not
/// run yet). A correct node sends one body per seq, and the replica runs
/// them in order; a Byzantine one could otherwise park a frame per seq of
/// the window. Past it the node's highest-seq bodies give way to lower
/// ones (they come again through `FETCH_ORDERS`).
pub const BODY_BYTES_PER_NODE: usize = 64 << 20;

#[derive(Default, Debug)]
struct Slot {
    /// The first digest each node named; a node changing its mind is ignored.
    votes: BTreeMap<NodeId, Digest>,
    /// Bodies by digest, each with the node it is charged to (the first to
    /// send it). A node's body is kept only for the digest it voted for, so
    /// a seq holds at most one body per node.
    bodies: BTreeMap<Digest, (NodeId, Proposal)>,
}

#[derive(Debug)]
pub struct OrderBook {
    quorum: usize,
    slots: BTreeMap<Seq, Slot>,
    highest_seen: Seq,
    /// Per node: the bodies charged to it, by (seq, digest), and their bytes.
    charged: BTreeMap<NodeId, (BTreeSet<(Seq, Digest)>, usize)>,
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
            charged: BTreeMap::new(),
        }
    }

    /// Holds a verified order; `next` is the lowest seq not yet executed.
    pub fn add(&mut self, o: Order, next: Seq) -> Added {
        self.highest_seen = self.highest_seen.max(o.seq);
        if o.seq < next || o.seq >= next.saturating_add(WINDOW) {
            return Added::Dropped;
        }
        let slot = self.slots.entry(o.seq).or_default();
        let vote = *slot.votes.entry(o.node).or_insert(o.digest);
        let Some(p) = o.proposal else {
            return Added::Held;
        };
        if vote != o.digest || p.digest() != o.digest {
            return Added::Dropped;
        }
        if slot.bodies.contains_key(&o.digest) {
            return Added::Held;
        }
        let size = p.approx_bytes();
        if !self.make_room(o.node, o.seq, size) {
            return Added::Dropped;
        }
        if let Some(slot) = self.slots.get_mut(&o.seq) {
            slot.bodies.insert(o.digest, (o.node, p));
            let (set, bytes) = self.charged.entry(o.node).or_default();
            set.insert((o.seq, o.digest));
            *bytes += size;
        }
        Added::Held
    }

    /// Frees `node`'s budget for a body of `size` at `seq` by dropping its
    /// highest-seq bodies above `seq`; false if that is not enough. The
    /// lowest seqs are what the replica runs next, so they are kept.
    fn make_room(&mut self, node: NodeId, seq: Seq, size: usize) -> bool {
        loop {
            let Some((set, bytes)) = self.charged.get(&node) else {
                return size <= BODY_BYTES_PER_NODE;
            };
            if *bytes + size <= BODY_BYTES_PER_NODE {
                return true;
            }
            let Some(&(top, d)) = set.last() else {
                return size <= BODY_BYTES_PER_NODE;
            };
            if top <= seq {
                return false;
            }
            self.uncharge(top, d);
            if let Some((set, _)) = self.charged.get_mut(&node) {
                set.remove(&(top, d));
            }
            if let Some(slot) = self.slots.get_mut(&top) {
                slot.bodies.remove(&d);
            }
        }
    }

    /// The body (seq, digest) leaves its node's budget.
    fn uncharge(&mut self, seq: Seq, d: Digest) {
        let Some((node, p)) = self.slots.get(&seq).and_then(|s| s.bodies.get(&d)) else {
            return;
        };
        let size = p.approx_bytes();
        if let Some((set, bytes)) = self.charged.get_mut(node) {
            set.remove(&(seq, d));
            *bytes = bytes.saturating_sub(size);
        }
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
            .find_map(|(d, _)| slot.bodies.get(&d).map(|(_, p)| p))
    }

    pub fn take(&mut self, seq: Seq) -> Option<Proposal> {
        let d = self.ready(seq)?.digest();
        self.forget(seq);
        let mut slot = self.slots.remove(&seq)?;
        slot.bodies.remove(&d).map(|(_, p)| p)
    }

    /// Forgets everything below `seq`.
    pub fn prune_below(&mut self, seq: Seq) {
        let below: Vec<Seq> = self.slots.range(..seq).map(|(s, _)| *s).collect();
        for s in below {
            self.forget(s);
        }
        self.slots = self.slots.split_off(&seq);
    }

    /// Every body of `seq` leaves its node's budget.
    fn forget(&mut self, seq: Seq) {
        let ds: Vec<Digest> = self
            .slots
            .get(&seq)
            .map(|s| s.bodies.keys().copied().collect())
            .unwrap_or_default();
        for d in ds {
            self.uncharge(seq, d);
        }
    }

    /// The highest seq any node has named (held or not).
    pub fn highest_seen(&self) -> Seq {
        self.highest_seen
    }

    pub fn held(&self) -> usize {
        self.slots.len()
    }

    /// Bytes of the bodies held.
    pub fn held_body_bytes(&self) -> usize {
        self.slots
            .values()
            .flat_map(|s| s.bodies.values())
            .map(|(_, p)| p.approx_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zz_wire::{AppId, AppRequest, ClientBatch, ClientId, Identity, NonDet, Principal, Signed};

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

    /// A proposal of one 256 KiB client batch, told apart by `seed`.
    fn big(seed: u64, batch: &Signed<ClientBatch>) -> Proposal {
        Proposal {
            requests: vec![batch.clone()],
            nondet: NonDet { timestamp_ms: 1, seed },
        }
    }

    fn big_batch() -> Signed<ClientBatch> {
        let ops = [AppRequest::new("PUT", "/kv/x", vec![5u8; 256 << 10])];
        let batch = ClientBatch::new(ClientId(0), AppId(0), 1, &ops).expect("packs");
        Identity::from_seed(Principal::Client(ClientId(0)), [3; 32]).sign(batch)
    }

    #[test]
    fn a_node_has_at_most_one_body_held_per_seq() {
        let batch = big_batch();
        let mut b = OrderBook::new(1);
        // A Byzantine node sends 64 different bodies for seq 1, each
        // matching the digest it names alongside.
        for seed in 0..64 {
            b.add(order(3, 1, &big(seed, &batch), true), 1);
        }
        let one = big(0, &batch).approx_bytes();
        assert!(
            b.held_body_bytes() <= one,
            "{} bytes held for one seq",
            b.held_body_bytes()
        );
        // The committed body still gets in from a correct node.
        let p = big(99, &batch);
        b.add(order(0, 1, &p, true), 1);
        b.add(order(1, 1, &p, false), 1);
        assert_eq!(b.take(1), Some(p));
    }

    #[test]
    fn bodies_held_per_node_are_bounded_in_bytes_keeping_the_lowest_seqs() {
        let batch = big_batch();
        let mut b = OrderBook::new(1);
        // One body per seq from one node, far past its budget.
        for seq in 1..=512 {
            b.add(order(3, seq, &big(seq, &batch), true), 1);
        }
        let one = big(0, &batch).approx_bytes();
        assert!(
            b.held_body_bytes() <= BODY_BYTES_PER_NODE + one,
            "one node's bodies hold {} bytes",
            b.held_body_bytes()
        );
        // The lowest seqs are the ones kept: seq 1 runs once voted.
        b.add(order(0, 1, &big(1, &batch), false), 1);
        assert!(b.ready(1).is_some());
        // Taking a body frees its bytes for the node's next one.
        b.take(1);
        b.add(order(3, 600, &big(600, &batch), true), 2);
        b.add(order(3, 2, &big(2, &batch), true), 2);
        b.add(order(0, 2, &big(2, &batch), false), 2);
        assert!(b.ready(2).is_some());
    }
}
