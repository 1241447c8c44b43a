//! Proposal bodies for a new view. View changes and new views carry
//! pre-prepare headers only (PBFT §4.4 with digests in the proofs, as in
//! Castro's thesis §5.2), so their size does not grow with request sizes. A
//! node installing a new view takes each re-issued proposal from its own
//! log, or fetches it by (seq, digest) from peers; it votes on and delivers
//! that seq only once the body is here.

use super::{Core, Status};
use std::collections::BTreeMap;
use zz_wire::{Bodies, BodyFetch, Digest, Msg, NodeId, PrePrepare, Proposal, Seq, Signed};

/// Most (seq, digest) pairs one fetch or answer names (a log window is far less).
const MAX_WANTS: usize = 256;
/// Request bytes past which an answer takes no further body. A proposal is
/// at most about a quarter frame, so an answer stays inside the frame limit.
const MAX_BODY_BYTES: usize = zz_wire::frame::MAX_FRAME / 2;

impl Core {
    /// A proposal with digest `d` for `seq` that this node holds anywhere:
    /// its log (current, old or spare pre-prepare, committed body), the
    /// archive, or fetched entries; the null request it can always make.
    pub(super) fn known_body(&self, seq: Seq, d: &Digest) -> Option<Proposal> {
        let null = Proposal::default();
        if null.digest() == *d {
            return Some(null);
        }
        if let Some(p) = self.log.get(&seq).and_then(|s| s.body_for(d)) {
            return Some(p.clone());
        }
        if let Some((_, p)) = self.archive.get(seq).filter(|(x, _)| x == d) {
            return Some(p.clone());
        }
        self.fetch.bodies.get(&(seq, *d)).map(|(_, p)| p.clone())
    }

    /// Some slot of this view still waits for its body: until it comes,
    /// this node neither proposes nor accepts new pre-prepares, whose
    /// duplicate checks need the new view's batches.
    pub(super) fn missing_body(&self) -> bool {
        // A seq delivered meanwhile (its body came through `LogEntries`) waits no more.
        self.log
            .range(self.last_committed + 1..)
            .any(|(_, s)| s.pending.is_some())
    }

    /// The (seq, digest) of every slot of this view still waiting for its body.
    fn missing_bodies(&self) -> Vec<(Seq, Digest)> {
        self.log
            .range(self.last_committed + 1..)
            .filter_map(|(seq, s)| s.pending.as_ref().map(|h| (*seq, h.body.digest)))
            .take(MAX_WANTS)
            .collect()
    }

    /// Asks for the missing bodies: each from one node whose view change
    /// named it (`namers`), or, on a retry, from every node.
    pub(super) fn fetch_bodies(&mut self, namers: Option<&BTreeMap<(Seq, Digest), NodeId>>) {
        let missing = self.missing_bodies();
        if missing.is_empty() {
            return;
        }
        let Some(namers) = namers else {
            let m = self.sign_fetch(missing);
            return self.broadcast(Msg::BodyFetch(m));
        };
        let mut by_node: BTreeMap<NodeId, Vec<(Seq, Digest)>> = BTreeMap::new();
        let mut anyone = Vec::new();
        for w in missing {
            match namers.get(&w) {
                Some(n) => by_node.entry(*n).or_default().push(w),
                None => anyone.push(w),
            }
        }
        for (n, wants) in by_node {
            let m = self.sign_fetch(wants);
            self.send(n, Msg::BodyFetch(m));
        }
        if !anyone.is_empty() {
            let m = self.sign_fetch(anyone);
            self.broadcast(Msg::BodyFetch(m));
        }
    }

    fn sign_fetch(&self, wants: Vec<(Seq, Digest)>) -> Signed<BodyFetch> {
        self.sign(BodyFetch {
            node: self.cfg.me,
            app: self.cfg.app,
            wants,
        })
    }

    /// The periodic retry while bodies are still missing.
    pub(super) fn retry_bodies(&mut self) {
        if self.status == Status::Normal {
            self.fetch_bodies(None);
        }
    }

    /// A peer asks for bodies: answer with what this node holds, bounded in
    /// count and bytes, at most twice per retransmit period per peer (an
    /// answer can be megabytes).
    pub(super) fn on_body_fetch(&mut self, m: Signed<BodyFetch>) {
        let node = m.body.node;
        if m.body.wants.len() > MAX_WANTS {
            self.stats.dropped_invalid += 1;
            return;
        }
        let gap = self.retransmit_ms() / 2;
        if self.bodies_served.get(&node).is_some_and(|t| self.now < t + gap) {
            self.stats.dropped_overload += 1;
            return;
        }
        let mut proposals = Vec::new();
        let mut bytes = 0usize;
        for (seq, d) in &m.body.wants {
            let Some(p) = self.known_body(*seq, d) else {
                continue;
            };
            let size = p.approx_bytes();
            if bytes > 0 && bytes + size > MAX_BODY_BYTES {
                break;
            }
            bytes += size;
            proposals.push((*seq, p));
        }
        if proposals.is_empty() {
            return;
        }
        self.bodies_served.insert(node, self.now);
        let reply = self.sign(Bodies {
            node: self.cfg.me,
            app: self.cfg.app,
            proposals,
        });
        self.send(node, Msg::Bodies(reply));
    }

    /// Bodies from a peer: each one counts only for a slot waiting for
    /// exactly that digest, so a wrong answer costs nothing but its checks.
    pub(super) fn on_bodies(&mut self, m: Signed<Bodies>) {
        if m.body.proposals.len() > MAX_WANTS {
            self.stats.dropped_invalid += 1;
            return;
        }
        for (seq, p) in m.body.proposals {
            let Some(h) = self.log.get(&seq).and_then(|s| s.pending.clone()) else {
                self.stats.dropped_old += 1;
                continue;
            };
            match h.with_body(p) {
                Some(pp) => {
                    self.stats.bodies_fetched += 1;
                    self.fill_body(pp);
                }
                None => self.stats.dropped_invalid += 1,
            }
        }
    }

    /// The body of a slot's pending pre-prepare arrived (`pp` re-formed from
    /// the header's signature): the slot takes part in this view from now on.
    pub(super) fn fill_body(&mut self, pp: Signed<PrePrepare>) {
        let (view, seq, digest) = (pp.body.view, pp.body.seq, pp.body.digest);
        if self.status != Status::Normal || view != self.view || seq <= self.last_committed {
            return;
        }
        let Some(slot) = self.log.get_mut(&seq).filter(|s| s.view == view) else {
            return;
        };
        if slot.pending.as_ref().is_none_or(|h| h.body.digest != digest) {
            return;
        }
        let p = &pp.body.proposal;
        if !p.requests.is_empty() {
            self.last_proposed_ts = self.last_proposed_ts.max(p.nondet.timestamp_ms);
        }
        for r in &p.requests {
            self.in_log.insert((r.body.client, r.body.first_id), seq);
        }
        slot.pending = None;
        slot.pp = Some(pp);
        if !self.is_primary() {
            self.send_prepare(seq, digest);
        }
        self.check_prepared(seq);
        self.try_propose();
    }
}
