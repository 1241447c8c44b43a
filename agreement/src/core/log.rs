//! One slot of the agreement log: the pre-prepare, prepares and commits for
//! one sequence number in the slot's current view (PBFT §4.2), plus what
//! survives a view change (the last prepared certificate, PBFT §4.4's P set).

use super::quorum::Votes;
use std::collections::BTreeMap;
use zz_wire::{
    Commit, Digest, Hasher, PrePrepare, PrePrepareHeader, Prepare, PreparedProof, Proposal, Seq, Signed, View,
};

/// A prepared certificate as this node keeps it: with the proposal, so
/// that it can deliver and serve the body. Its serialised form is what the
/// wire's `PreparedProof` was before it lost the body (old write-ahead logs
/// still decode); `to_wire` gives the header-only form for view changes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Certificate {
    pub pre_prepare: Signed<PrePrepare>,
    pub prepares: Vec<Signed<Prepare>>,
}

impl Certificate {
    pub fn to_wire(&self) -> PreparedProof {
        PreparedProof {
            pre_prepare: self.pre_prepare.signed_header(),
            prepares: self.prepares.clone(),
        }
    }
}

#[derive(Debug)]
pub struct Slot {
    /// The view `pp` and the vote sets belong to.
    pub view: View,
    pub pp: Option<Signed<PrePrepare>>,
    /// A new view's pre-prepare for this slot whose body this node lacks
    /// (`BodyFetch`); it becomes `pp` when the body comes. No vote before.
    pub pending: Option<Signed<PrePrepareHeader>>,
    /// A pre-prepare of an earlier view that did not prepare here, kept as a
    /// source of its body for a new view that re-issues it.
    pub spare: Option<Signed<PrePrepare>>,
    pub prepares: Votes<Signed<Prepare>>,
    pub commits: Votes<Commit>,
    /// `pp` has 2f matching prepares in `view`.
    pub prepared: bool,
    pub sent_prepare: bool,
    pub sent_commit: bool,
    /// Committed with this digest (locally, or vouched for by f+1 peers).
    pub committed: Option<Digest>,
    /// The committed proposal when it came from `LogEntries` or outlived its pre-prepare.
    pub body: Option<Proposal>,
    /// Prepared certificate from an earlier view.
    pub old_proof: Option<Certificate>,
    /// When this slot last started a view, for retransmission.
    pub since_ms: u64,
}

impl Slot {
    pub fn new(view: View, now_ms: u64) -> Self {
        Slot {
            view,
            pp: None,
            pending: None,
            spare: None,
            prepares: Votes::default(),
            commits: Votes::default(),
            prepared: false,
            sent_prepare: false,
            sent_commit: false,
            committed: None,
            body: None,
            old_proof: None,
            since_ms: now_ms,
        }
    }

    pub fn digest(&self) -> Option<Digest> {
        self.pp.as_ref().map(|p| p.body.digest)
    }

    /// Moves the slot to a later view: a prepared certificate is kept as the
    /// slot's P-set entry, votes of the old view are dropped.
    pub fn enter_view(&mut self, view: View, now_ms: u64) {
        if view <= self.view {
            return;
        }
        if self.prepared {
            if let Some(pp) = self.pp.take() {
                let d = pp.body.digest;
                let prepares = self.prepares.matching(&d).cloned().collect();
                self.old_proof = Some(Certificate {
                    pre_prepare: pp,
                    prepares,
                });
            }
        } else if let (Some(c), Some(pp)) = (self.committed, self.pp.take()) {
            // Committed through LogEntries but never prepared here: keep the body.
            if pp.body.digest == c && self.body.is_none() {
                self.body = Some(pp.body.proposal);
            }
        } else if let Some(pp) = self.pp.take() {
            self.spare = Some(pp);
        }
        self.view = view;
        self.pp = None;
        self.pending = None;
        self.prepares.clear();
        self.commits.clear();
        self.prepared = false;
        self.sent_prepare = false;
        self.sent_commit = false;
        self.since_ms = now_ms;
    }

    /// The committed proposal, wherever it is kept.
    pub fn committed_proposal(&self) -> Option<(Digest, &Proposal)> {
        let c = self.committed?;
        if let Some(b) = &self.body {
            return Some((c, b));
        }
        if let Some(pp) = self.pp.as_ref().filter(|p| p.body.digest == c) {
            return Some((c, &pp.body.proposal));
        }
        self.old_proof
            .as_ref()
            .filter(|p| p.pre_prepare.body.digest == c)
            .map(|p| (c, &p.pre_prepare.body.proposal))
    }

    /// Takes the committed proposal out of the slot (at truncation).
    pub fn into_committed(self) -> Option<(Digest, Proposal)> {
        let c = self.committed?;
        if let Some(b) = self.body {
            return Some((c, b));
        }
        if let Some(pp) = self.pp.filter(|p| p.body.digest == c) {
            return Some((c, pp.body.proposal));
        }
        self.old_proof
            .filter(|p| p.pre_prepare.body.digest == c)
            .map(|p| (c, p.pre_prepare.body.proposal))
    }

    /// This slot's P-set entry for a view change: the certificate of the
    /// latest view in which it prepared, with exactly `need` (2f) prepares.
    pub fn proof(&self, need: usize) -> Option<Certificate> {
        let mut proof = if self.prepared {
            let pp = self.pp.as_ref()?;
            let d = pp.body.digest;
            Certificate {
                pre_prepare: pp.clone(),
                prepares: self.prepares.matching(&d).cloned().collect(),
            }
        } else {
            self.old_proof.clone()?
        };
        proof.prepares.truncate(need);
        Some(proof)
    }

    /// A proposal with digest `d` known in this slot, in whatever role.
    pub fn body_for(&self, d: &Digest) -> Option<&Proposal> {
        let pps = [
            self.pp.as_ref(),
            self.old_proof.as_ref().map(|c| &c.pre_prepare),
            self.spare.as_ref(),
        ];
        if let Some(pp) = pps.into_iter().flatten().find(|p| p.body.digest == *d) {
            return Some(&pp.body.proposal);
        }
        self.body.as_ref().filter(|_| self.committed == Some(*d))
    }

    /// Timestamp of the proposal known here, unless it is the null request.
    pub fn timestamp(&self) -> Option<u64> {
        let p = match (&self.pp, &self.body) {
            (Some(pp), _) => &pp.body.proposal,
            (None, Some(b)) => b,
            (None, None) => return None,
        };
        (!p.requests.is_empty()).then_some(p.nondet.timestamp_ms)
    }
}

/// Chains committed proposal digests: the `log_digest` of checkpoints.
pub fn chain(prev: &Digest, seq: Seq, digest: &Digest) -> Digest {
    Hasher::new("zz/log-chain/v1")
        .digest(prev)
        .u64(seq)
        .digest(digest)
        .finish()
}

/// Committed proposals below the stable checkpoint, kept to serve lagging
/// peers: at most `max_seqs` of them and, whatever their count, at most
/// `max_bytes` of request bodies (a proposal can carry thousands of
/// requests, so a bound in seqs alone does not bound memory).
#[derive(Debug)]
pub struct Archive {
    entries: BTreeMap<Seq, (Digest, Proposal)>,
    bytes: usize,
    max_seqs: usize,
    max_bytes: usize,
}

impl Archive {
    pub fn new(max_seqs: u64, max_bytes: usize) -> Self {
        Archive {
            entries: BTreeMap::new(),
            bytes: 0,
            max_seqs: usize::try_from(max_seqs).unwrap_or(usize::MAX),
            max_bytes,
        }
    }

    /// Keeps `entry` for `seq`, then drops the oldest entries past either bound.
    pub fn insert(&mut self, seq: Seq, entry: (Digest, Proposal)) {
        self.bytes += entry.1.approx_bytes();
        if let Some((_, old)) = self.entries.insert(seq, entry) {
            self.bytes -= old.approx_bytes();
        }
        while self.entries.len() > self.max_seqs || self.bytes > self.max_bytes {
            let Some((_, (_, p))) = self.entries.pop_first() else {
                break;
            };
            self.bytes -= p.approx_bytes();
        }
    }

    pub fn get(&self, seq: Seq) -> Option<&(Digest, Proposal)> {
        self.entries.get(&seq)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Roughly the request bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
