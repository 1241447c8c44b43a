//! View changes (PBFT §4.4) and the liveness rules of §4.5.2.

use super::log::Slot;
use super::validate::Plan;
use super::{Action, Core, Status, TimerId};
use std::collections::BTreeMap;
use zz_wire::{Digest, Msg, NewView, PrePrepareHeader, Proposal, Seq, Signed, View, ViewChange};

/// Most early messages held while waiting for a new view.
const MAX_EARLY: usize = 4096;

impl Core {
    /// PBFT §4.4: move to `target`, stop accepting normal-case messages and
    /// multicast a view change with the stable checkpoint proof and the P set.
    pub(super) fn start_view_change(&mut self, target: View) {
        if target <= self.view {
            return;
        }
        self.view = target;
        self.enter_view_change();
    }

    /// A node restored in view v > 0 does not know whether it had installed
    /// v or crashed in the view change to it, so it asks for v again. If
    /// the others still wait for view changes to v, its own counts again;
    /// if v's primary had installed it, the primary answers with its new
    /// view (`on_view_change`).
    pub(super) fn rejoin_view(&mut self) {
        if self.view > 0 && self.status == Status::Normal && self.new_view.is_none() {
            self.enter_view_change();
        }
    }

    /// Into the view change to `self.view`: multicast our view change.
    fn enter_view_change(&mut self) {
        let target = self.view;
        self.status = Status::ViewChange;
        self.monitor_pause();
        self.early.clear();
        self.ahead.retain(|_, v| *v > target);
        self.stats.view_changes_started += 1;
        self.batch_due = false;
        let need = self.th.prepares();
        let prepared = self
            .log
            .range(self.stable.seq + 1..)
            .filter_map(|(_, s)| s.proof(need))
            // A node rejoining a view it had worked in leaves out what it
            // prepared in that view: a view change carries earlier views' only.
            .filter(|c| c.pre_prepare.body.view < target)
            .map(|c| c.to_wire())
            .collect();
        let vc = self.sign(ViewChange {
            node: self.cfg.me,
            app: self.cfg.app,
            new_view: target,
            stable_seq: self.stable.seq,
            stable_digest: self.stable.digest,
            checkpoint_proof: self.stable.proof.clone(),
            prepared,
        });
        // The view is durable before anyone hears of it.
        self.persist();
        self.broadcast(Msg::ViewChange(vc.clone()));
        self.my_view_change = Some(vc.clone());
        self.view_changes.insert(self.cfg.me, vc);
        self.vc_armed = false;
        self.arm_view_change_timer();
        self.try_send_new_view();
    }

    /// PBFT §4.5.2: the timer that moves a node on to the next view starts
    /// only once 2f+1 nodes (itself included) ask for the view it changes
    /// to. A node alone in its view change (cut off, or behind while the
    /// others are served) stays one view ahead, re-sending its view change,
    /// instead of raising its view at every timeout far above the view the
    /// others will form.
    fn arm_view_change_timer(&mut self) {
        if self.vc_armed || self.status != Status::ViewChange {
            return;
        }
        let view = self.view;
        let asking = self.view_changes.values().filter(|v| v.body.new_view == view).count();
        if asking < self.th.quorum() {
            return;
        }
        self.vc_armed = true;
        let t = self.view_change_timeout();
        self.out.push(Action::SetTimer(TimerId::ViewChange(view), t));
    }

    /// PBFT §4.4 / §4.5.2: a view change from another node. Joins a view
    /// change once f+1 nodes ask for higher views; the new primary answers
    /// 2f+1 of them with a new view.
    pub(super) fn on_view_change(&mut self, m: Signed<ViewChange>) {
        let (node, target) = (m.body.node, m.body.new_view);
        if target < self.view || (target == self.view && self.status == Status::Normal) {
            // A node that missed our new view asks again: resend it.
            if target == self.view && self.is_primary() {
                if let Some(nv) = self.new_view.clone() {
                    self.send(node, Msg::NewView(nv));
                }
            }
            self.stats.dropped_old += 1;
            return;
        }
        if self.view_changes.get(&node).is_some_and(|h| h.body.new_view >= target) {
            self.stats.dropped_old += 1;
            return;
        }
        // Checking a view change costs up to a window of certificates; a
        // node naming ever higher views gets one check per period (a correct
        // node re-sends its latest view change every period anyway).
        let period = self.retransmit_ms();
        if self.vc_checked.get(&node).is_some_and(|t| self.now < t + period) {
            self.stats.dropped_overload += 1;
            return;
        }
        self.vc_checked.insert(node, self.now);
        self.stats.view_changes_checked += 1;
        if self.check_view_change(&m.body).is_err() {
            self.stats.dropped_invalid += 1;
            return;
        }
        self.view_changes.insert(node, m);
        self.arm_view_change_timer();
        self.join_views_ahead();
        self.try_send_new_view();
    }

    /// PBFT §4.4: the primary of the new view, holding 2f+1 view changes for
    /// it (its own included), multicasts the new view and installs it.
    fn try_send_new_view(&mut self) {
        if self.status != Status::ViewChange || self.primary_of(self.view) != self.cfg.me {
            return;
        }
        let view = self.view;
        let mut chosen: Vec<Signed<ViewChange>> = Vec::with_capacity(self.th.quorum());
        if let Some(mine) = self.view_changes.get(&self.cfg.me).filter(|v| v.body.new_view == view) {
            chosen.push(mine.clone());
        } else {
            return;
        }
        for (n, vc) in &self.view_changes {
            if chosen.len() == self.th.quorum() {
                break;
            }
            if *n != self.cfg.me && vc.body.new_view == view {
                chosen.push(vc.clone());
            }
        }
        if chosen.len() < self.th.quorum() {
            return;
        }
        let plan = Plan::compute(&chosen.iter().map(|s| &s.body).collect::<Vec<_>>());
        // Headers only: the backups (and this node) find or fetch the bodies.
        let null = Proposal::default().digest();
        let pre_prepares = plan
            .entries
            .iter()
            .map(|(seq, choice)| {
                let digest = choice.as_ref().map_or(null, |p| p.pre_prepare.body.digest);
                self.sign(PrePrepareHeader {
                    node: self.cfg.me,
                    app: self.cfg.app,
                    view,
                    seq: *seq,
                    digest,
                })
            })
            .collect();
        let nv = self.sign(NewView {
            node: self.cfg.me,
            app: self.cfg.app,
            view,
            view_changes: chosen,
            pre_prepares,
        });
        self.broadcast(Msg::NewView(nv.clone()));
        self.install_new_view(nv, plan);
    }

    /// PBFT §4.4: a backup accepts a new view whose proofs check out and
    /// whose pre-prepares are exactly the O set; it may jump ahead to it.
    pub(super) fn on_new_view(&mut self, m: Signed<NewView>) {
        let v = m.body.view;
        if v < self.view || (v == self.view && self.status == Status::Normal) {
            self.stats.dropped_old += 1;
            return;
        }
        match self.check_new_view(&m.body) {
            Ok(plan) => self.install_new_view(m, plan),
            Err(_) => self.stats.dropped_invalid += 1,
        }
    }

    /// Enters the new view: adopt its stable checkpoint, take its
    /// pre-prepares as this view's log and prepare them (PBFT §4.4).
    fn install_new_view(&mut self, nv: Signed<NewView>, plan: Plan) {
        let view = nv.body.view;
        if plan.min_s > self.stable.seq {
            self.make_stable(plan.min_s, plan.stable_digest, plan.stable_proof.clone());
        }
        if view > self.view || self.status == Status::ViewChange {
            self.out.push(Action::CancelTimer(TimerId::ViewChange(self.view)));
        }
        self.view = view;
        self.status = Status::Normal;
        self.last_normal_view = view;
        self.age_floor = self.now;
        self.vc_armed = false;
        self.monitor_restart();
        self.stats.view_changes += 1;
        self.persist();
        let now = self.now;
        for slot in self.log.values_mut() {
            slot.enter_view(view, now);
        }
        let primary = self.is_primary();
        let mut top_ts = self.last_ts;
        for h in nv.body.pre_prepares.iter() {
            let (seq, digest) = (h.body.seq, h.body.digest);
            if seq <= self.stable.seq {
                continue;
            }
            let full = self.known_body(seq, &digest).and_then(|p| h.with_body(p));
            if let Some(p) = full.as_ref().map(|pp| &pp.body.proposal) {
                if !p.requests.is_empty() {
                    top_ts = top_ts.max(p.nondet.timestamp_ms);
                }
            }
            let slot = self.log.entry(seq).or_insert_with(|| Slot::new(view, now));
            if slot.committed.is_some_and(|c| c != digest) {
                self.stats.checkpoint_mismatch += 1;
                continue;
            }
            match full {
                Some(pp) => {
                    slot.pp = Some(pp);
                    if !primary {
                        self.send_prepare(seq, digest);
                    }
                }
                // No vote before the body is here (see `bodies`).
                None => slot.pending = Some(h.clone()),
            }
        }
        self.rebuild_after_view_change(plan.max_s(), top_ts);
        let namers = Self::namers(&nv.body.view_changes, self.cfg.me);
        if primary {
            self.new_view = Some(nv);
        } else {
            self.new_view = None;
        }
        self.view_changes.retain(|_, v| v.body.new_view > view);
        self.my_view_change = None;
        self.out.push(Action::ViewChanged(view));
        // Checked now like any message of this view.
        for m in std::mem::take(&mut self.early) {
            self.on_peer(m);
        }
        let seqs: Vec<Seq> = self.log.range(self.last_committed + 1..).map(|(s, _)| *s).collect();
        for s in seqs {
            self.check_prepared(s);
        }
        self.fetch_bodies(Some(&namers));
        self.try_propose();
        self.refresh_view_change_timer();
    }

    /// For each prepared (seq, digest) in these view changes, one other node
    /// that named it: it held the body when it sent its view change.
    fn namers(vcs: &[Signed<ViewChange>], me: zz_wire::NodeId) -> BTreeMap<(Seq, Digest), zz_wire::NodeId> {
        let mut out = BTreeMap::new();
        for vc in vcs.iter().filter(|v| v.body.node != me) {
            for p in &vc.body.prepared {
                let h = &p.pre_prepare.body;
                out.entry((h.seq, h.digest)).or_insert(vc.body.node);
            }
        }
        out
    }

    /// Waiting for the new view of `view`: its primary's pre-prepares and
    /// the other backups' votes can overtake the new view on other links.
    pub(super) fn awaits_new_view(&self, view: View) -> bool {
        self.status == Status::ViewChange && view == self.view
    }

    /// Keeps a message for the view being changed into, up to a bound (what
    /// every node can send for one pipeline); past it, dropped as before.
    pub(super) fn hold_early(&mut self, m: Msg) {
        let cap = usize::try_from(self.cfg.timing.pipeline.max(1))
            .unwrap_or(usize::MAX)
            .saturating_mul(3 * self.th.n);
        if self.early.len() < cap.min(MAX_EARLY) {
            self.early.push(m);
        } else {
            self.stats.dropped_future += 1;
        }
    }

    /// PBFT §4.5.2, applied to normal-case messages: a node working in a
    /// view above ours is noted (`join_views_ahead`). Without this a
    /// restarted node would stay in its old view for good and never count
    /// for a quorum again.
    pub(super) fn note_ahead(&mut self, from: zz_wire::NodeId, view: View) {
        if view <= self.view || from == self.cfg.me {
            return;
        }
        let seen = self.ahead.entry(from).or_insert(view);
        *seen = (*seen).max(view);
        self.join_views_ahead();
    }

    /// PBFT §4.5.2: f+1 nodes above our view include a correct one, so this
    /// node asks for the (f+1)-th highest of their views; that view's
    /// primary answers with its new view if it has one (`on_view_change`).
    /// A node shows its view by asking for it (a view change) or by working
    /// in it (normal-case messages), and both count: a primary that formed
    /// its view sends no view change any more, so a node cut off while that
    /// view formed, and now the primary of a view no one else is in, would
    /// otherwise see only the one peer still changing views above it and
    /// wait for good (simulator seed 1000086 f=1).
    fn join_views_ahead(&mut self) {
        let mut above: BTreeMap<zz_wire::NodeId, View> = BTreeMap::new();
        let claims = self.ahead.iter().map(|(n, v)| (*n, *v));
        let asks = self.view_changes.iter().map(|(n, v)| (*n, v.body.new_view));
        for (node, view) in claims.chain(asks) {
            if view > self.view && node != self.cfg.me {
                let seen = above.entry(node).or_insert(view);
                *seen = (*seen).max(view);
            }
        }
        let mut views: Vec<View> = above.into_values().collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        // The (f+1)-th highest: at least one correct node is that far.
        if let Some(&target) = views.get(self.th.weak() - 1) {
            self.start_view_change(target);
        }
    }

    /// Requests in this view's pre-prepares are pending; the rest of the
    /// pool is queued again for the (possibly new) primary.
    fn rebuild_after_view_change(&mut self, max_s: Seq, top_ts: u64) {
        self.in_log.clear();
        for (seq, slot) in self.log.range(self.last_committed + 1..) {
            if let Some(pp) = &slot.pp {
                for r in &pp.body.proposal.requests {
                    self.in_log.insert((r.body.client, r.body.first_id), *seq);
                }
            }
        }
        self.next_seq = max_s.max(self.last_committed).max(self.stable.seq) + 1;
        self.last_proposed_ts = self.last_proposed_ts.max(top_ts);
        self.queue.clear();
        if self.is_primary() {
            let in_log = &self.in_log;
            self.queue
                .extend(self.ages.iter().map(|(_, k)| *k).filter(|k| !in_log.contains_key(k)));
        }
        self.batch_due = !self.queue.is_empty();
    }
}
