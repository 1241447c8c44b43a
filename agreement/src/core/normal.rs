//! Normal-case operation (PBFT §4.2): requests, batching, pre-prepare,
//! prepare, commit and in-order delivery.

use super::dedup::ReqKey;
use super::log::{chain, Slot};
use super::quorum::Insert;
use super::{Action, Core, Pooled, Record, Status, TimerId, MAX_POOL, MAX_POOL_PER_CLIENT, POOL_BYTES_PER_CLIENT};
use std::collections::BTreeSet;
use zz_wire::{
    ClientBatch, ClientId, Commit, Msg, NodeFault, NodeId, NonDet, PrePrepare, Prepare, Principal, Proposal, Seq,
    Signed, Vote,
};

/// A request left out this many view-change timeouts while others are
/// served makes a backup suspect the primary of censoring it.
const CENSOR_FACTOR: u64 = 10;
/// Request bytes past which a proposal takes no further client batch (one
/// batch alone is at most a frame, which the client keeps far smaller).
pub(super) const PROPOSAL_MAX_BYTES: usize = zz_wire::frame::MAX_FRAME / 4;

impl Core {
    /// PBFT §4.1: a client request. The primary queues it for a batch; a
    /// backup forwards it to the primary and starts its view-change timer.
    pub(super) fn on_request(&mut self, req: Signed<ClientBatch>) {
        let b = &req.body;
        if b.app != self.cfg.app || !self.cfg.keys.contains(&Principal::Client(b.client)) {
            self.stats.dropped_invalid += 1;
            return;
        }
        let key = (b.client, b.first_id);
        if self.dedup.contains(key) {
            self.stats.dropped_old += 1;
            return;
        }
        let fresh = !self.pool.contains_key(&key);
        let size = b.ops.as_bytes().len();
        let (held, bytes) = self.pooled_by.get(&b.client).copied().unwrap_or_default();
        if fresh && (self.pool.len() >= MAX_POOL || held >= MAX_POOL_PER_CLIENT || bytes + size > POOL_BYTES_PER_CLIENT)
        {
            self.stats.dropped_overload += 1;
            return;
        }
        let normal = self.status == Status::Normal;
        if normal && !self.is_primary() && !self.in_log.contains_key(&key) {
            // A client that re-sent to everyone gets served even if the
            // primary never saw the request. Once per retransmit period: a
            // client replaying one batch must not make backups flood the
            // primary with it.
            let period = self.retransmit_ms();
            let now = self.now;
            let due = match self.pool.get_mut(&key) {
                None => true,
                Some(p) if now >= p.forwarded_ms + period => {
                    p.forwarded_ms = now;
                    true
                }
                Some(_) => false,
            };
            if due {
                let p = self.primary();
                self.send(p, Msg::Request(req.clone()));
            } else {
                self.stats.dropped_old += 1;
            }
        }
        if fresh {
            let mine = self.pooled_by.entry(key.0).or_default();
            mine.0 += 1;
            mine.1 += size;
            if !self.is_primary() {
                self.monitor_demand();
            }
            self.ages.insert((self.now, key));
            let (since_ms, forwarded_ms) = (self.now, self.now);
            self.pool.insert(
                key,
                Pooled {
                    req,
                    since_ms,
                    forwarded_ms,
                },
            );
        }
        if !normal {
            return;
        }
        if self.is_primary() {
            if fresh {
                self.queue.push_back(key);
                self.try_propose();
            }
        } else {
            self.refresh_view_change_timer();
        }
    }

    /// A batch of `client`'s of `size` request bytes left the pool.
    fn unpool(&mut self, client: ClientId, size: usize) {
        if let Some(mine) = self.pooled_by.get_mut(&client) {
            mine.0 = mine.0.saturating_sub(1);
            mine.1 = mine.1.saturating_sub(size);
            if mine.0 == 0 {
                self.pooled_by.remove(&client);
            }
        }
    }

    /// PBFT §4.2: the primary assigns the next seqs to batches of queued
    /// requests (at once when none is in flight, else when a batch is full,
    /// the batch timer fires or a commit frees the pipeline), at most
    /// `batch_max` client batches (and about
    /// `batch_max_ops` requests) per proposal and `pipeline` proposals above
    /// the last committed one, inside the watermarks. A proposal also takes
    /// no further batch past [`PROPOSAL_MAX_BYTES`] of requests, so that its
    /// pre-prepare and ORDER frames stay well inside the frame limit.
    pub(super) fn try_propose(&mut self) {
        if !self.is_primary() || self.status != Status::Normal || !self.can_vote(self.view, self.next_seq) {
            return;
        }
        // The new view's batches are pending only once their bodies are
        // here; proposing before could order one of them twice.
        if self.missing_body() {
            return;
        }
        let t = &self.cfg.timing;
        let (batch_max, max_ops, pipeline, delay_us) = (
            t.batch_max.max(1),
            t.batch_max_ops.max(1),
            t.pipeline.max(1),
            t.batch_delay_us,
        );
        // A primary behind its stable checkpoint cannot tell what is committed.
        while self.last_committed >= self.low()
            && self.next_seq <= self.last_committed + pipeline
            && self.next_seq <= self.high()
        {
            self.drop_stale_queue_head();
            if self.queue.is_empty() {
                self.batch_due = false;
                break;
            }
            // Adaptive batching: with no proposal in flight nothing is gained
            // by waiting, so a lone request is proposed at once. A batch is
            // left to fill only behind outstanding proposals, and each commit
            // calls this again.
            let in_flight = self.next_seq > self.last_committed + 1;
            if in_flight && self.queue.len() < batch_max && self.queued_ops(max_ops) < max_ops && !self.batch_due {
                if !self.batch_armed {
                    self.batch_armed = true;
                    self.out.push(Action::SetTimer(TimerId::Batch, delay_us.div_ceil(1000)));
                }
                break;
            }
            let mut requests = Vec::with_capacity(batch_max.min(self.queue.len()));
            let (mut ops, mut bytes) = (0, 0);
            while requests.len() < batch_max && ops < max_ops && bytes < PROPOSAL_MAX_BYTES {
                let Some(key) = self.queue.pop_front() else {
                    break;
                };
                if self.in_log.contains_key(&key) || self.dedup.contains(key) {
                    continue;
                }
                if let Some(p) = self.pool.get(&key) {
                    ops += p.req.body.ops.len();
                    bytes += p.req.body.ops.as_bytes().len();
                    requests.push(p.req.clone());
                    self.in_log.insert(key, self.next_seq);
                }
            }
            if requests.is_empty() {
                continue;
            }
            self.propose(requests);
        }
    }

    /// Requests queued for proposing, counted up to `cap`.
    fn queued_ops(&self, cap: usize) -> usize {
        let mut ops = 0;
        for key in &self.queue {
            if ops >= cap {
                break;
            }
            ops += self.pool.get(key).map_or(0, |p| p.req.body.ops.len());
        }
        ops
    }

    fn drop_stale_queue_head(&mut self) {
        while let Some(k) = self.queue.front() {
            if self.pool.contains_key(k) && !self.in_log.contains_key(k) {
                return;
            }
            self.queue.pop_front();
        }
    }

    fn propose(&mut self, requests: Vec<Signed<ClientBatch>>) {
        let (view, seq) = (self.view, self.next_seq);
        self.next_seq += 1;
        let ts = self.now.max(self.last_proposed_ts).max(self.last_ts);
        self.last_proposed_ts = ts;
        let proposal = Proposal {
            requests,
            nondet: NonDet {
                timestamp_ms: ts,
                seed: self.seed_for(view, seq),
            },
        };
        self.stats.proposed += 1;
        if self.fault == Some(NodeFault::Equivocate) {
            // Each backup gets its own seed, so its own digest.
            for i in 0..self.th.n {
                #[allow(clippy::cast_possible_truncation)]
                let to = zz_wire::NodeId(i as u16);
                if to == self.cfg.me {
                    continue;
                }
                let mut p = proposal.clone();
                p.nondet.seed ^= i as u64 + 1;
                let pp = self.make_pre_prepare(view, seq, p);
                self.send(to, Msg::PrePrepare(pp));
            }
        }
        let pp = self.make_pre_prepare(view, seq, proposal);
        if self.fault != Some(NodeFault::Equivocate) {
            self.broadcast(Msg::PrePrepare(pp.clone()));
        }
        let now = self.now;
        let slot = self.log.entry(seq).or_insert_with(|| Slot::new(view, now));
        slot.enter_view(view, now);
        slot.pp = Some(pp);
        slot.since_ms = now;
        self.check_prepared(seq);
    }

    pub(super) fn make_pre_prepare(&self, view: u64, seq: Seq, proposal: Proposal) -> Signed<PrePrepare> {
        let digest = proposal.digest();
        self.sign(PrePrepare {
            node: self.cfg.me,
            app: self.cfg.app,
            view,
            seq,
            proposal,
            digest,
        })
    }

    /// PBFT §4.2: a backup accepts a pre-prepare in its view, inside the
    /// watermarks, with a correct digest, no conflicting pre-prepare, no
    /// repeated client batch and a plausible timestamp; then it prepares.
    pub(super) fn on_pre_prepare(&mut self, m: Signed<PrePrepare>) {
        if self.awaits_new_view(m.body.view) {
            return self.hold_early(Msg::PrePrepare(m));
        }
        let pp = &m.body;
        if pp.view < self.view || pp.seq <= self.low().max(self.last_committed) {
            self.stats.dropped_old += 1;
            return;
        }
        if pp.view > self.view || self.status != Status::Normal {
            self.stats.dropped_future += 1;
            let (node, view) = (pp.node, pp.view);
            self.note_ahead(node, view);
            return;
        }
        if pp.node != self.primary() {
            self.stats.dropped_invalid += 1;
            return;
        }
        if pp.seq > self.high() {
            // The primary is far ahead of us: we are probably lagging.
            self.stats.dropped_future += 1;
            self.note_behind(pp.seq.saturating_sub(self.cfg.timing.log_window));
            return;
        }
        let pending = self
            .log
            .get(&pp.seq)
            .filter(|s| s.view == pp.view)
            .and_then(|s| s.pending.as_ref())
            .map(|h| h.body.digest);
        if let Some(d) = pending {
            // The primary's retransmitted pre-prepare brings a body this
            // node's new view lacks.
            if d == pp.digest && pp.proposal.digest() == d {
                self.fill_body(m);
            } else {
                self.stats.dropped_invalid += 1;
            }
            return;
        }
        if self.missing_body() {
            // Its duplicate check needs the whole new view; the primary
            // retransmits the pre-prepare.
            self.stats.dropped_future += 1;
            return;
        }
        if let Some(d) = self
            .log
            .get(&pp.seq)
            .filter(|s| s.view == pp.view)
            .and_then(Slot::digest)
        {
            if d != pp.digest {
                self.stats.dropped_invalid += 1; // equivocating primary
            }
            return;
        }
        if pp.proposal.digest() != pp.digest {
            self.stats.dropped_invalid += 1;
            return;
        }
        if let Err(r) = self.check_proposal(pp.seq, &pp.proposal) {
            match r {
                super::Reject::Timestamp => self.stats.rejected_timestamps += 1,
                super::Reject::Duplicate => self.stats.rejected_duplicates += 1,
                _ => self.stats.dropped_invalid += 1,
            }
            return;
        }
        let (view, seq, digest) = (pp.view, pp.seq, pp.digest);
        for r in &pp.proposal.requests {
            self.in_log.insert((r.body.client, r.body.first_id), seq);
        }
        let now = self.now;
        let slot = self.log.entry(seq).or_insert_with(|| Slot::new(view, now));
        slot.enter_view(view, now);
        slot.pp = Some(m);
        self.send_prepare(seq, digest);
        self.check_prepared(seq);
    }

    /// Client batches of a proposal: of this app, not yet committed nor
    /// pending at another seq, not repeated; and the primary's timestamp
    /// within the skew and non-decreasing along the log. Their client
    /// signatures the driver checked with the message's own
    /// (`links::verify_client_requests`).
    fn check_proposal(&self, seq: Seq, p: &Proposal) -> Result<(), super::Reject> {
        use super::Reject;
        let mut seen = BTreeSet::new();
        for r in &p.requests {
            let b = &r.body;
            let key: ReqKey = (b.client, b.first_id);
            if b.app != self.cfg.app {
                return Err(Reject::WrongApp);
            }
            if !seen.insert(key) || self.dedup.contains(key) || self.in_log.get(&key).is_some_and(|s| *s != seq) {
                return Err(Reject::Duplicate);
            }
        }
        if p.requests.is_empty() {
            return Ok(());
        }
        let ts = p.nondet.timestamp_ms;
        if ts.abs_diff(self.now) > self.cfg.timing.max_clock_skew_ms {
            return Err(Reject::Timestamp);
        }
        let before = self
            .log
            .range(self.last_committed + 1..seq)
            .rev()
            .find_map(|(_, s)| s.timestamp())
            .unwrap_or(self.last_ts);
        let after = self.log.range(seq + 1..).find_map(|(_, s)| s.timestamp());
        if ts < before || after.is_some_and(|a| ts > a) {
            return Err(Reject::Timestamp);
        }
        Ok(())
    }

    pub(super) fn send_prepare(&mut self, seq: Seq, digest: zz_wire::Digest) {
        let view = self.view;
        if !self.can_vote(view, seq) {
            return;
        }
        let vote = self.sign(Prepare(Vote {
            node: self.cfg.me,
            app: self.cfg.app,
            view,
            seq,
            digest,
        }));
        if let Some(slot) = self.log.get_mut(&seq) {
            slot.prepares.insert(self.cfg.me, digest, vote.clone());
            slot.sent_prepare = true;
        }
        self.broadcast(Msg::Prepare(vote));
    }

    /// PBFT §4.2: a prepare from a backup of the current view.
    pub(super) fn on_prepare(&mut self, m: Signed<Prepare>) {
        let v = m.body.0;
        if self.awaits_new_view(v.view) {
            return self.hold_early(Msg::Prepare(m));
        }
        if !self.vote_in_window(v.node, v.view, v.seq) {
            return;
        }
        if v.node == self.primary() {
            self.stats.dropped_invalid += 1;
            return;
        }
        let now = self.now;
        let slot = self.log.entry(v.seq).or_insert_with(|| Slot::new(v.view, now));
        slot.enter_view(v.view, now);
        if slot.prepares.insert(v.node, v.digest, m) == Insert::Conflict {
            self.stats.dropped_invalid += 1;
        }
        self.check_prepared(v.seq);
    }

    /// PBFT §4.2: a commit from any node of the current view (unsigned:
    /// only this node acts on it, and its link vouches for the sender).
    pub(super) fn on_commit(&mut self, m: Commit) {
        let v = m.0;
        if self.awaits_new_view(v.view) {
            return self.hold_early(Msg::Commit(m));
        }
        if !self.vote_in_window(v.node, v.view, v.seq) {
            return;
        }
        let now = self.now;
        let slot = self.log.entry(v.seq).or_insert_with(|| Slot::new(v.view, now));
        slot.enter_view(v.view, now);
        if slot.commits.insert(v.node, v.digest, m) == Insert::Conflict {
            self.stats.dropped_invalid += 1;
        }
        self.check_committed(v.seq);
    }

    fn vote_in_window(&mut self, from: NodeId, view: u64, seq: Seq) -> bool {
        if view < self.view || seq <= self.low().max(self.last_committed) {
            self.stats.dropped_old += 1;
            return false;
        }
        if view > self.view || self.status != Status::Normal || seq > self.high() {
            self.stats.dropped_future += 1;
            self.note_ahead(from, view);
            return false;
        }
        true
    }

    /// PBFT §4.2 prepared(m, v, n, i): the pre-prepare plus 2f matching
    /// prepares from distinct backups; then multicast a commit.
    pub(super) fn check_prepared(&mut self, seq: Seq) {
        let need = self.th.prepares();
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let Some(d) = slot.digest() else { return };
        if slot.prepared || slot.prepares.count(&d) < need {
            return;
        }
        slot.prepared = true;
        let view = slot.view;
        // On disk before our commit can leave: a correct node never forgets
        // a certificate a commit quorum may depend on (see `durable`).
        if let Some(proof) = slot.proof(need) {
            self.out.push(Action::Record(Record::Prepared(proof)));
        }
        if self.can_vote(view, seq) {
            let vote = Commit(Vote {
                node: self.cfg.me,
                app: self.cfg.app,
                view,
                seq,
                digest: d,
            });
            if let Some(slot) = self.log.get_mut(&seq) {
                slot.commits.insert(self.cfg.me, d, vote);
                slot.sent_commit = true;
            }
            self.broadcast(Msg::Commit(vote));
        }
        self.check_committed(seq);
    }

    /// PBFT §4.2 committed-local: prepared plus 2f+1 matching commits.
    fn check_committed(&mut self, seq: Seq) {
        let need = self.th.quorum();
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let Some(d) = slot.digest() else { return };
        if !slot.prepared || slot.committed.is_some() || slot.commits.count(&d) < need {
            return;
        }
        slot.committed = Some(d);
        self.try_deliver();
    }

    /// Delivers committed slots in seq order with no gaps, chains the log
    /// digest, and takes a checkpoint every K seqs (PBFT §4.3).
    pub(super) fn try_deliver(&mut self) {
        let mut delivered = false;
        loop {
            let seq = self.last_committed + 1;
            let Some(slot) = self.log.get(&seq) else {
                break;
            };
            let Some((digest, proposal)) = slot.committed_proposal() else {
                break;
            };
            let proposal = proposal.clone();
            self.last_committed = seq;
            self.log_digest = chain(&self.log_digest, seq, &digest);
            if !proposal.requests.is_empty() {
                self.last_ts = self.last_ts.max(proposal.nondet.timestamp_ms);
            }
            let batches = proposal
                .requests
                .iter()
                .map(|r| (r.body.client, r.body.first_id))
                .collect();
            self.out
                .push(Action::Record(Record::Committed { seq, digest, batches }));
            for r in &proposal.requests {
                let key = (r.body.client, r.body.first_id);
                if let Some(p) = self.pool.remove(&key) {
                    self.ages.remove(&(p.since_ms, key));
                    self.unpool(key.0, p.req.body.ops.as_bytes().len());
                    // A request some node waited for was served.
                    self.last_progress = self.now;
                }
                self.in_log.remove(&key);
                self.dedup.insert(key);
            }
            self.stats.committed += 1;
            self.monitor_delivered(proposal.op_count() as u64);
            self.out.push(Action::Deliver { seq, digest, proposal });
            delivered = true;
            if seq.is_multiple_of(self.cfg.checkpoint_interval.max(1)) {
                self.take_checkpoint(seq);
            }
        }
        if delivered {
            self.next_seq = self.next_seq.max(self.last_committed + 1);
            self.fetch.votes = self.fetch.votes.split_off(&(self.last_committed + 1));
            self.drop_fetched_through(self.last_committed);
            self.try_propose();
        }
    }

    /// PBFT §4.4: a backup waiting for a request arms its view-change timer.
    pub(super) fn refresh_view_change_timer(&mut self) {
        if self.vc_armed || self.status != Status::Normal || self.is_primary() {
            return;
        }
        let Some(at) = self.suspect_at() else {
            return;
        };
        self.vc_armed = true;
        let due = at.saturating_sub(self.now).max(1);
        self.out.push(Action::SetTimer(TimerId::ViewChange(self.view), due));
    }

    /// When a backup holding unordered requests gives up on the primary.
    /// PBFT §4.5.2 (as in Castro's thesis) restarts the timer whenever a
    /// request executes, so a primary that keeps serving pending requests is
    /// not suspected for the queueing delay of a loaded system: the timeout
    /// counts from the oldest wait or the last progress, whichever is later.
    /// A primary that serves others but leaves one request out is still
    /// suspected once that request has waited `CENSOR_FACTOR` timeouts.
    pub(super) fn suspect_at(&self) -> Option<u64> {
        let oldest = self.ages.first().map(|(t, _)| (*t).max(self.age_floor))?;
        let t = self.view_change_timeout();
        let quiet = oldest.max(self.last_progress) + t;
        let censored = oldest + t.saturating_mul(CENSOR_FACTOR);
        Some(quiet.min(censored))
    }

    /// The view-change timer: in a normal view, a request waited too long;
    /// during a view change, the new view did not come in time (PBFT §4.4).
    pub(super) fn on_view_change_timer(&mut self, v: u64) {
        if v != self.view || !self.vc_armed {
            return;
        }
        self.vc_armed = false;
        match self.status {
            Status::ViewChange => self.start_view_change(self.view + 1),
            Status::Normal => {
                if self.is_primary() {
                    return;
                }
                match self.suspect_at() {
                    Some(at) if at <= self.now => self.start_view_change(self.view + 1),
                    _ => self.refresh_view_change_timer(),
                }
            }
        }
    }
}
