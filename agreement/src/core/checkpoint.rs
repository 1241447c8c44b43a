//! Checkpoints and garbage collection (PBFT §4.3), catch-up of a lagging
//! node through `LogFetch`/`LogEntries`, and retransmission.
//!
//! Retention: slots live above the stable checkpoint; committed proposals
//! are kept for `max(log_window, K)` more seqs below it and at most
//! `timing.archive_max_mb` of request bytes (`archive`), so a peer that fell
//! behind by less than that can fetch them, and memory stays bounded by the
//! log window above and the byte budget below. A node further behind cannot
//! catch up through the log alone (it would need a state jump, see the crate
//! notes).

use super::log::Slot;
use super::quorum::Insert;
use super::{Action, Core, Stable, Status, AHEAD_WINDOWS, FETCH_BYTES_PER_PEER};
use zz_wire::{LogCheckpoint, LogEntries, LogFetch, Msg, NodeFault, Proposal, Seq, Signed};

/// Most entries in one `LogEntries` answer.
const MAX_ENTRIES: usize = 64;
/// Rough byte budget of one `LogEntries` answer (frames stop at 16 MiB).
const MAX_ENTRY_BYTES: usize = 8 << 20;

impl Core {
    /// PBFT §4.3: every K seqs a node multicasts its log digest.
    pub(super) fn take_checkpoint(&mut self, seq: Seq) {
        let digest = self.log_digest;
        self.my_checkpoints.insert(seq, digest);
        let c = self.sign(LogCheckpoint {
            node: self.cfg.me,
            app: self.cfg.app,
            seq,
            log_digest: digest,
        });
        // Persist the committed prefix at least once per checkpoint.
        self.persist();
        self.broadcast(Msg::LogCheckpoint(c.clone()));
        self.record_checkpoint(c);
    }

    /// PBFT §4.3: a checkpoint message from another node.
    pub(super) fn on_checkpoint(&mut self, m: Signed<LogCheckpoint>) {
        let c = m.body;
        let k = self.cfg.checkpoint_interval.max(1);
        if c.seq == 0 || !c.seq.is_multiple_of(k) {
            self.stats.dropped_invalid += 1;
            return;
        }
        if c.seq <= self.stable.seq {
            self.stats.dropped_old += 1;
            return;
        }
        if c.seq > self.stable.seq + AHEAD_WINDOWS * self.cfg.timing.log_window {
            self.stats.dropped_future += 1;
            return;
        }
        self.record_checkpoint(m);
        let high = self.checkpoint_high.entry(c.node).or_default();
        *high = (*high).max(c.seq);
        // f+1 nodes checkpointed above us: at least one correct node is ahead.
        let mut highs: Vec<Seq> = self.checkpoint_high.values().copied().collect();
        highs.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(&s) = highs.get(self.th.weak() - 1) {
            if s > self.last_committed {
                self.note_behind(s);
            }
        }
    }

    fn record_checkpoint(&mut self, m: Signed<LogCheckpoint>) {
        let (seq, node, digest) = (m.body.seq, m.body.node, m.body.log_digest);
        let votes = self.checkpoint_votes.entry(seq).or_default();
        if votes.insert(node, digest, m) == Insert::Conflict {
            self.stats.dropped_invalid += 1;
        }
        if votes.count(&digest) >= self.th.quorum() {
            let proof = votes.matching(&digest).cloned().collect();
            self.make_stable(seq, digest, proof);
        }
    }

    /// PBFT §4.3: 2f+1 matching checkpoints make `seq` stable: the low
    /// watermark moves up and the log below it is discarded.
    pub(super) fn make_stable(&mut self, seq: Seq, digest: zz_wire::Digest, proof: Vec<Signed<LogCheckpoint>>) {
        if seq <= self.stable.seq {
            return;
        }
        if self.my_checkpoints.get(&seq).is_some_and(|d| *d != digest) {
            self.stats.checkpoint_mismatch += 1;
        }
        let mut proof = proof;
        // Exactly a quorum: peers refuse padded proofs.
        proof.truncate(self.th.quorum());
        self.stable = Stable { seq, digest, proof };
        self.stats.stable_checkpoints += 1;
        let keep_from = seq.min(self.last_committed) + 1;
        let mut kept = self.log.split_off(&keep_from);
        for (s, slot) in std::mem::take(&mut self.log) {
            if let Some(entry) = slot.into_committed() {
                self.archive.insert(s, entry);
            }
        }
        // Slots between our last delivered seq and the checkpoint stay only
        // if committed: they are still ours to deliver.
        kept.retain(|s, slot| *s > seq || slot.committed.is_some());
        self.log = kept;
        self.my_checkpoints = self.my_checkpoints.split_off(&(seq + 1));
        self.checkpoint_votes = self.checkpoint_votes.split_off(&(seq + 1));
        if self.passive.is_some_and(|(_, s)| s <= seq) {
            self.passive = None;
        }
        self.persist();
        if self.last_committed < seq {
            self.note_behind(seq);
        }
        self.try_propose();
    }

    /// Evidence that seqs up to `seq` are committed elsewhere.
    pub(super) fn note_behind(&mut self, seq: Seq) {
        if seq > self.fetch.behind {
            self.fetch.behind = seq;
        }
        self.maybe_fetch();
    }

    /// Asks peers for committed entries after our last delivered seq, at
    /// most once per retransmit period unless the previous answer was used up.
    pub(super) fn maybe_fetch(&mut self) {
        if self.fetch.behind <= self.last_committed {
            return;
        }
        let from = self.last_committed + 1;
        let used_up = from >= self.fetch.sent_from + MAX_ENTRIES as u64;
        let quiet = self.fetch.sent_ms.is_none_or(|t| self.now >= t + self.retransmit_ms());
        if !(used_up || quiet) {
            return;
        }
        self.fetch.sent_ms = Some(self.now);
        self.fetch.sent_from = from;
        self.stats.log_fetches += 1;
        let m = self.sign(LogFetch {
            node: self.cfg.me,
            app: self.cfg.app,
            from,
        });
        self.broadcast(Msg::LogFetch(m));
    }

    /// A peer asks for committed entries from `from` on: send our stable
    /// checkpoint proof (so it can move its watermarks) and what we hold.
    pub(super) fn on_log_fetch(&mut self, m: Signed<LogFetch>) {
        let (node, from) = (m.body.node, m.body.from.max(1));
        // An answer can be megabytes: one per peer per retransmit period,
        // except the next one for a peer that used up the last (catching up
        // walks forward; asking for other start points waits).
        if self
            .served
            .get(&node)
            .is_some_and(|(end, t)| from != *end && self.now < t + self.retransmit_ms())
        {
            self.stats.dropped_old += 1;
            return;
        }
        if self.stable.seq >= from {
            for c in self.stable.proof.clone() {
                self.send(node, Msg::LogCheckpoint(c));
            }
        }
        let mut entries: Vec<(Seq, Proposal)> = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        while next <= self.last_committed && entries.len() < MAX_ENTRIES && bytes < MAX_ENTRY_BYTES {
            let p = match self.archive.get(next) {
                Some((_, p)) => p,
                None => match self.log.get(&next).and_then(Slot::committed_proposal) {
                    Some((_, p)) => p,
                    None => break,
                },
            };
            bytes += p.approx_bytes();
            entries.push((next, p.clone()));
            next += 1;
        }
        self.served.insert(node, (next, self.now));
        if entries.is_empty() {
            return;
        }
        let reply = self.sign(LogEntries {
            node: self.cfg.me,
            app: self.cfg.app,
            entries,
        });
        self.send(node, Msg::LogEntries(reply));
    }

    /// Committed entries from a peer: an entry counts once f+1 distinct
    /// peers vouch for the same (seq, digest), so at least one is correct.
    pub(super) fn on_log_entries(&mut self, m: Signed<LogEntries>) {
        let node = m.body.node;
        let limit = self.last_committed + AHEAD_WINDOWS * self.cfg.timing.log_window;
        if m.body.entries.len() > 2 * MAX_ENTRIES {
            self.stats.dropped_invalid += 1;
            return;
        }
        // Not fetching: nobody asked (or the answer came after others').
        if self.fetch.behind <= self.last_committed {
            self.stats.dropped_old += 1;
            return;
        }
        let mut accepted = Vec::new();
        for (seq, p) in m.body.entries {
            if seq <= self.last_committed || seq > limit {
                self.stats.dropped_old += 1;
                continue;
            }
            if self.log.get(&seq).is_some_and(|s| s.committed.is_some()) {
                continue;
            }
            let d = p.digest();
            let votes = self.fetch.votes.entry(seq).or_default();
            if votes.insert(node, d, ()) != Insert::New {
                continue;
            }
            let n = votes.count(&d);
            if !self.fetch.bodies.contains_key(&(seq, d)) {
                let held = self.fetch.held.entry(node).or_default();
                let size = p.approx_bytes();
                if *held + size <= FETCH_BYTES_PER_PEER {
                    *held += size;
                    self.fetch.bodies.insert((seq, d), (node, p));
                } else {
                    self.stats.dropped_overload += 1;
                }
            }
            if n >= self.th.weak() {
                accepted.push((seq, d));
            }
        }
        for (seq, d) in accepted {
            let Some(p) = self.take_fetched(seq, d) else {
                continue;
            };
            let now = self.now;
            let view = self.view;
            let slot = self.log.entry(seq).or_insert_with(|| Slot::new(view, now));
            slot.committed = Some(d);
            slot.body = Some(p);
            self.stats.fetched += 1;
        }
        self.try_deliver();
        if self.fetch.behind > self.last_committed {
            self.maybe_fetch();
        }
    }

    /// Takes a fetched body out, releasing its peer's share of the budget.
    fn take_fetched(&mut self, seq: Seq, d: zz_wire::Digest) -> Option<Proposal> {
        let (node, p) = self.fetch.bodies.remove(&(seq, d))?;
        self.fetch.release(node, &p);
        Some(p)
    }

    /// Forgets fetched bodies for seqs up to `seq` (delivered by now).
    pub(super) fn drop_fetched_through(&mut self, seq: Seq) {
        let rest = self.fetch.bodies.split_off(&(seq + 1, zz_wire::Digest::ZERO));
        for (node, p) in std::mem::replace(&mut self.fetch.bodies, rest).into_values() {
            self.fetch.release(node, &p);
        }
    }

    /// The periodic timer: resend what may have been lost, notice being stuck.
    pub(super) fn on_retransmit(&mut self) {
        let period = self.retransmit_ms();
        match self.status {
            Status::ViewChange => {
                if let Some(vc) = self.my_view_change.clone() {
                    self.broadcast(Msg::ViewChange(vc));
                }
            }
            Status::Normal => {
                self.retransmit_votes(period);
                self.retry_bodies();
            }
        }
        // No delivery for a whole period while later seqs are known: ask peers.
        let stalled = self.last_committed == self.tick_committed
            && self
                .log
                .range(self.last_committed + 1..)
                .next()
                .is_some_and(|(_, s)| s.since_ms + period <= self.now);
        if stalled {
            let top = self.log.keys().next_back().copied().unwrap_or(0);
            self.note_behind(top);
        } else {
            self.maybe_fetch();
        }
        self.tick_committed = self.last_committed;
        self.refresh_view_change_timer();
    }

    fn retransmit_votes(&mut self, period: u64) {
        let (me, view, now) = (self.cfg.me, self.view, self.now);
        let primary = self.is_primary() && self.fault != Some(NodeFault::Equivocate);
        let limit = usize::try_from(self.cfg.timing.pipeline.max(1) * 2).unwrap_or(usize::MAX);
        let mut msgs = Vec::new();
        for (_, s) in self.log.range(self.last_committed + 1..).take(limit) {
            if s.view != view || s.committed.is_some() || s.since_ms + period > now {
                continue;
            }
            let Some(d) = s.digest() else { continue };
            match &s.pp {
                Some(pp) if primary && pp.body.node == me => {
                    msgs.push(Msg::PrePrepare(pp.clone()));
                }
                _ => {}
            }
            let mine = s.prepares.matching(&d).find(|p| p.body.0.node == me).cloned();
            msgs.extend(mine.map(Msg::Prepare));
            let mine = s.commits.matching(&d).find(|c| c.0.node == me).copied();
            msgs.extend(mine.map(Msg::Commit));
        }
        self.out.extend(msgs.into_iter().map(Action::Broadcast));
    }
}
