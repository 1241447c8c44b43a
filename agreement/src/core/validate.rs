//! Checks of nested proofs in view changes and new views (PBFT §4.4), and
//! the computation of a new view's O set, shared by the new primary (to
//! build it) and the backups (to verify it).

use super::quorum::distinct;
use super::Core;
use zz_wire::{
    verify_all, Digest, LogCheckpoint, NewView, PrePrepareHeader, PreparedProof, Proposal, Seq, Signed, View,
    ViewChange,
};

/// Why an input was refused.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    #[error("message for another app")]
    WrongApp,
    #[error("author is not the expected node")]
    WrongAuthor,
    #[error("digest does not match the content")]
    BadDigest,
    #[error("nested signature does not verify")]
    BadSignature,
    #[error("client batch already committed or pending")]
    Duplicate,
    #[error("timestamp out of bounds")]
    Timestamp,
    #[error("checkpoint proof invalid")]
    BadCheckpointProof,
    #[error("prepared certificate invalid")]
    BadPreparedProof,
    #[error("too few distinct view changes")]
    TooFewViewChanges,
    #[error("pre-prepares differ from the O set the view changes imply")]
    WrongNewViewSet,
}

/// The new view's start: the stable checkpoint to adopt and, for each seq
/// above it, the prepared certificate to re-issue (or `None`: a null request).
pub(super) struct Plan {
    pub min_s: Seq,
    pub stable_digest: Digest,
    pub stable_proof: Vec<Signed<LogCheckpoint>>,
    pub entries: Vec<(Seq, Option<PreparedProof>)>,
}

impl Plan {
    /// PBFT §4.4: min-s is the latest stable checkpoint in the view changes;
    /// for each n above it, the certificate of the highest view, else null.
    pub fn compute(vcs: &[&ViewChange]) -> Plan {
        let best = vcs.iter().max_by_key(|v| v.stable_seq);
        let (min_s, stable_digest, stable_proof) = best.map_or((0, Digest::ZERO, Vec::new()), |v| {
            (v.stable_seq, v.stable_digest, v.checkpoint_proof.clone())
        });
        let mut chosen: std::collections::BTreeMap<Seq, &PreparedProof> = Default::default();
        for vc in vcs {
            for p in &vc.prepared {
                let b = &p.pre_prepare.body;
                if b.seq <= min_s {
                    continue;
                }
                let e = chosen.entry(b.seq).or_insert(p);
                if b.view > e.pre_prepare.body.view {
                    *e = p;
                }
            }
        }
        let max_s = chosen.keys().next_back().copied().unwrap_or(min_s);
        let entries = (min_s + 1..=max_s)
            .map(|n| (n, chosen.get(&n).map(|p| (*p).clone())))
            .collect();
        Plan {
            min_s,
            stable_digest,
            stable_proof,
            entries,
        }
    }

    pub fn max_s(&self) -> Seq {
        self.entries.last().map_or(self.min_s, |(s, _)| *s)
    }
}

impl Core {
    /// A view change carries a valid stable-checkpoint proof (exactly 2f+1
    /// distinct signers) and valid prepared certificates (pre-prepare by that
    /// view's primary plus exactly 2f matching prepares from distinct backups)
    /// above it. Cheap checks come first, signatures last.
    pub(super) fn check_view_change(&self, vc: &ViewChange) -> Result<(), Reject> {
        if vc.app != self.cfg.app {
            return Err(Reject::WrongApp);
        }
        if !self.th.is_node(vc.node) {
            return Err(Reject::WrongAuthor);
        }
        self.check_checkpoint_proof(vc.stable_seq, &vc.stable_digest, &vc.checkpoint_proof)?;
        let window = self.cfg.timing.log_window;
        let mut last = vc.stable_seq;
        let mut pps = Vec::with_capacity(vc.prepared.len());
        let mut votes = Vec::new();
        for p in &vc.prepared {
            let b = &p.pre_prepare.body;
            let ok = b.app == self.cfg.app
                && b.node == self.primary_of(b.view)
                && b.view < vc.new_view
                && b.seq > last
                && b.seq <= vc.stable_seq + window;
            if !ok {
                return Err(Reject::BadPreparedProof);
            }
            last = b.seq;
            for v in &p.prepares {
                let x = v.body.0;
                if x.app != b.app || x.view != b.view || x.seq != b.seq || x.digest != b.digest {
                    return Err(Reject::BadPreparedProof);
                }
                if !self.th.is_node(x.node) || x.node == b.node {
                    return Err(Reject::BadPreparedProof);
                }
            }
            // Exactly 2f distinct: padding would only cost the checker time.
            let n = p.prepares.len();
            if n != self.th.prepares() || distinct(p.prepares.iter().map(|v| v.body.0.node)) != n {
                return Err(Reject::BadPreparedProof);
            }
            pps.push(&p.pre_prepare);
            votes.extend(p.prepares.iter());
        }
        verify_all(pps, &self.cfg.keys).map_err(|_| Reject::BadSignature)?;
        verify_all(votes, &self.cfg.keys).map_err(|_| Reject::BadSignature)?;
        Ok(())
    }

    pub(super) fn check_checkpoint_proof(
        &self,
        seq: Seq,
        digest: &Digest,
        proof: &[Signed<LogCheckpoint>],
    ) -> Result<(), Reject> {
        if seq == 0 {
            return if *digest == Digest::ZERO {
                Ok(())
            } else {
                Err(Reject::BadCheckpointProof)
            };
        }
        let ok = seq.is_multiple_of(self.cfg.checkpoint_interval.max(1))
            && proof.iter().all(|c| {
                let b = &c.body;
                b.app == self.cfg.app && b.seq == seq && b.log_digest == *digest && self.th.is_node(b.node)
            })
            && proof.len() == self.th.quorum()
            && distinct(proof.iter().map(|c| c.body.node)) == proof.len();
        if !ok {
            return Err(Reject::BadCheckpointProof);
        }
        verify_all(proof, &self.cfg.keys).map_err(|_| Reject::BadSignature)
    }

    /// PBFT §4.4: a new view is signed by its primary, carries 2f+1 valid view
    /// changes for it from distinct nodes, and re-issues exactly the O set
    /// they imply, each pre-prepare signed by the new primary.
    pub(super) fn check_new_view(&self, nv: &NewView) -> Result<Plan, Reject> {
        if nv.app != self.cfg.app {
            return Err(Reject::WrongApp);
        }
        if nv.node != self.primary_of(nv.view) {
            return Err(Reject::WrongAuthor);
        }
        let vcs: Vec<&ViewChange> = nv.view_changes.iter().map(|s| &s.body).collect();
        let authors = distinct(vcs.iter().map(|v| v.node));
        if authors != vcs.len() || authors != self.th.quorum() {
            return Err(Reject::TooFewViewChanges);
        }
        if vcs.iter().any(|v| v.new_view != nv.view) {
            return Err(Reject::TooFewViewChanges);
        }
        verify_all(&nv.view_changes, &self.cfg.keys).map_err(|_| Reject::BadSignature)?;
        for vc in &vcs {
            self.check_view_change(vc)?;
        }
        let plan = Plan::compute(&vcs);
        self.check_o_set(nv.view, nv.node, &plan, &nv.pre_prepares)?;
        verify_all(&nv.pre_prepares, &self.cfg.keys).map_err(|_| Reject::BadSignature)?;
        Ok(plan)
    }

    fn check_o_set(
        &self,
        view: View,
        primary: zz_wire::NodeId,
        plan: &Plan,
        pps: &[Signed<PrePrepareHeader>],
    ) -> Result<(), Reject> {
        if pps.len() != plan.entries.len() {
            return Err(Reject::WrongNewViewSet);
        }
        let null_digest = Proposal::default().digest();
        for (pp, (seq, choice)) in pps.iter().zip(&plan.entries) {
            let b = &pp.body;
            let digest = choice.as_ref().map_or(null_digest, |p| p.pre_prepare.body.digest);
            let ok =
                b.node == primary && b.app == self.cfg.app && b.view == view && b.seq == *seq && b.digest == digest;
            if !ok {
                return Err(Reject::WrongNewViewSet);
            }
        }
        Ok(())
    }
}
