//! Quorum counting (PBFT §4.1–4.3): votes are counted from distinct nodes
//! only, one vote per node per slot, so a faulty node repeating itself or
//! equivocating never adds weight.

use zz_wire::{Digest, NodeId};

/// Thresholds for n = 3f+1 nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub f: usize,
    pub n: usize,
}

impl Thresholds {
    pub fn new(f: usize) -> Self {
        Thresholds { f, n: 3 * f + 1 }
    }

    /// 2f+1: commit certificates, stable checkpoints, new-view proofs.
    pub fn quorum(&self) -> usize {
        2 * self.f + 1
    }

    /// f+1: at least one correct node among them.
    pub fn weak(&self) -> usize {
        self.f + 1
    }

    /// 2f prepares from distinct backups make a pre-prepare prepared.
    pub fn prepares(&self) -> usize {
        2 * self.f
    }

    pub fn is_node(&self, n: NodeId) -> bool {
        usize::from(n.0) < self.n
    }
}

/// What happened to a vote offered to a [`Votes`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    New,
    /// The node already voted for this digest.
    Duplicate,
    /// The node already voted for another digest; the first vote stands.
    Conflict,
}

/// Votes for one slot, at most one per node. n is small (3f+1), so a
/// vector scan beats a map.
#[derive(Clone, Debug)]
pub struct Votes<T> {
    entries: Vec<(NodeId, Digest, T)>,
}

impl<T> Default for Votes<T> {
    fn default() -> Self {
        Votes { entries: Vec::new() }
    }
}

impl<T> Votes<T> {
    pub fn insert(&mut self, node: NodeId, digest: Digest, vote: T) -> Insert {
        match self.entries.iter().find(|(n, _, _)| *n == node) {
            Some((_, d, _)) if *d == digest => Insert::Duplicate,
            Some(_) => Insert::Conflict,
            None => {
                self.entries.push((node, digest, vote));
                Insert::New
            }
        }
    }

    /// Distinct nodes that voted for `digest`.
    pub fn count(&self, digest: &Digest) -> usize {
        self.entries.iter().filter(|(_, d, _)| d == digest).count()
    }

    pub fn matching<'a>(&'a self, digest: &'a Digest) -> impl Iterator<Item = &'a T> + 'a {
        self.entries
            .iter()
            .filter(move |(_, d, _)| d == digest)
            .map(|(_, _, v)| v)
    }

    pub fn voted(&self, node: NodeId) -> bool {
        self.entries.iter().any(|(n, _, _)| *n == node)
    }

    /// A digest with at least `need` votes, if any.
    pub fn winner(&self, need: usize) -> Option<Digest> {
        self.entries.iter().map(|(_, d, _)| *d).find(|d| self.count(d) >= need)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Number of distinct nodes in `nodes`.
pub fn distinct(nodes: impl IntoIterator<Item = NodeId>) -> usize {
    nodes.into_iter().collect::<std::collections::BTreeSet<_>>().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: u8) -> Digest {
        Digest([b; 32])
    }

    #[test]
    fn a_node_counts_once_per_slot() {
        let mut v = Votes::default();
        assert_eq!(v.insert(NodeId(1), d(1), ()), Insert::New);
        assert_eq!(v.insert(NodeId(1), d(1), ()), Insert::Duplicate);
        assert_eq!(v.count(&d(1)), 1);
    }

    #[test]
    fn an_equivocating_node_keeps_its_first_vote() {
        let mut v = Votes::default();
        v.insert(NodeId(1), d(1), ());
        assert_eq!(v.insert(NodeId(1), d(2), ()), Insert::Conflict);
        assert_eq!(v.count(&d(2)), 0);
        assert_eq!(v.count(&d(1)), 1);
    }

    #[test]
    fn winner_needs_matching_digests() {
        let mut v = Votes::default();
        v.insert(NodeId(0), d(1), ());
        v.insert(NodeId(1), d(2), ());
        v.insert(NodeId(2), d(1), ());
        assert_eq!(v.winner(3), None);
        v.insert(NodeId(3), d(1), ());
        assert_eq!(v.winner(3), Some(d(1)));
    }

    #[test]
    fn thresholds_follow_three_f_plus_one() {
        let t = Thresholds::new(2);
        assert_eq!((t.n, t.quorum(), t.weak(), t.prepares()), (7, 5, 3, 4));
        assert!(t.is_node(NodeId(6)) && !t.is_node(NodeId(7)));
        assert_eq!(distinct([NodeId(1), NodeId(1), NodeId(2)]), 2);
    }
}
