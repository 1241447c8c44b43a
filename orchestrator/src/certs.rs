//! Wake and fault certificates, and the incidents they open. Pure: no I/O,
//! time is an argument.
//!
//! The orchestrator acts only on f+1 signed messages from distinct
//! agreement nodes (one of them is then correct): f+1 `WAKE`s for the same
//! (app, seq) wake standbys, f+1 `FAULT`s naming the same instance of a
//! replica in the same incident (or about the same seq) fence it, f+1
//! `RESOLVED`s for an incident's seq record its certified reply. A minority
//! of faulty nodes can therefore neither wake, kill nor churn.
//!
//! One fault episode is one incident: while an app's incident is open, or
//! until it has been quiet (certified, no WAKE or FAULT certificate joining
//! it) for the quiet window, WAKE certificates join it. A faulty replica
//! keeps answering wrong or late until it is fenced, its replacement phase
//! brings more late replies, and each node raises a new WAKE as soon as its
//! previous one is answered; these are counted in the incident, not opened
//! as incidents of their own. The controller acts on a joined certificate
//! as on a new one (it wakes any standby left).

use crate::model::Incident;
use std::collections::{BTreeMap, VecDeque};
use zz_wire::{AppId, Fault, Keyring, Msg, NodeId, Principal, ReplicaId, Resolved, Seq, Wake};

/// Pending votes one node may hold per kind; beyond it its oldest vote is
/// forgotten, so a faulty node cannot grow our memory.
pub const MAX_PENDING_PER_NODE: usize = 64;
/// Incidents kept (oldest dropped first).
pub const MAX_INCIDENTS: usize = 1000;
/// How long after a replica's new instance starts the nodes' heartbeats
/// still move its boundary up (see [`Instance`]): four of their 500 ms
/// heartbeat intervals.
pub const INSTANCE_SETTLE_MS: u64 = 2_000;
/// Default quiet window of an incident (see [`Tracker::with_quiet_ms`]):
/// longer than the nodes' re-armed reply timeout (4 × 400 ms by default),
/// so a replica that stays slow or silent keeps one incident; short enough
/// that a fault injected a few seconds after recovery is a new one.
pub const DEFAULT_QUIET_MS: u64 = 2_000;

/// Why an inbound message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("bad signature")]
    BadSignature,
    #[error("author is not the link's peer")]
    WrongAuthor,
    #[error("message kind not accepted from this peer")]
    Unexpected,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadSignature => "bad-signature",
            DropReason::WrongAuthor => "wrong-author",
            DropReason::Unexpected => "unexpected",
        }
    }
}

/// Admits a message from `peer` (proven by the handshake): it must be a kind
/// the orchestrator takes from that role, authored by `peer`, and verify.
pub fn check(peer: Principal, msg: &Msg, keys: &Keyring) -> Result<(), DropReason> {
    let from_node = matches!(peer, Principal::Node(_));
    let allowed = match msg {
        Msg::Wake(_) | Msg::Fault(_) | Msg::Resolved(_) => from_node,
        Msg::Heartbeat(_) => from_node || matches!(peer, Principal::Replica(_)),
        Msg::ComponentFetch(_) => matches!(peer, Principal::Replica(_)),
        _ => false,
    };
    if !allowed {
        return Err(DropReason::Unexpected);
    }
    if msg.author() != Some(peer) {
        return Err(DropReason::WrongAuthor);
    }
    msg.verify(keys).map_err(|_| DropReason::BadSignature)
}

/// Votes from distinct nodes per key; each vote carries a seq.
#[derive(Debug)]
struct Quorum<K: Ord + Copy> {
    votes: BTreeMap<K, Tally>,
    /// Per node, the keys it voted for, oldest first.
    by_node: BTreeMap<NodeId, VecDeque<K>>,
}

#[derive(Debug, Default)]
struct Tally {
    first_at: u64,
    seqs: BTreeMap<NodeId, Seq>,
}

impl<K: Ord + Copy> Quorum<K> {
    fn new() -> Self {
        Quorum {
            votes: BTreeMap::new(),
            by_node: BTreeMap::new(),
        }
    }

    /// Records `node`'s vote; returns the tally once it has `need` distinct
    /// voters (and forgets it, so it fires once).
    fn vote(&mut self, key: K, node: NodeId, seq: Seq, now: u64, need: usize) -> Option<Tally> {
        let tally = self.votes.entry(key).or_insert_with(|| Tally {
            first_at: now,
            seqs: BTreeMap::new(),
        });
        if tally.seqs.insert(node, seq).is_none() {
            let mine = self.by_node.entry(node).or_default();
            mine.push_back(key);
            if mine.len() > MAX_PENDING_PER_NODE {
                if let Some(old) = mine.pop_front() {
                    self.unvote(old, node);
                }
            }
        }
        if self.votes.get(&key).is_some_and(|t| t.seqs.len() >= need) {
            return self.take(key);
        }
        None
    }

    fn unvote(&mut self, key: K, node: NodeId) {
        if let Some(t) = self.votes.get_mut(&key) {
            t.seqs.remove(&node);
            if t.seqs.is_empty() {
                self.votes.remove(&key);
            }
        }
    }

    /// Drops every pending vote whose key matches.
    fn forget(&mut self, matches: impl Fn(&K) -> bool) {
        let keys: Vec<K> = self.votes.keys().filter(|k| matches(k)).copied().collect();
        for k in keys {
            self.take(k);
        }
    }

    fn take(&mut self, key: K) -> Option<Tally> {
        let tally = self.votes.remove(&key)?;
        for node in tally.seqs.keys() {
            if let Some(q) = self.by_node.get_mut(node) {
                q.retain(|k| *k != key);
            }
        }
        Some(tally)
    }
}

/// What the controller must do after a certificate formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new incident: wake standbys of its app.
    Opened { incident: u64 },
    /// Another certificate joined the app's incident (open, or certified
    /// but not yet quiet, which it reopens): wake any standby left.
    Joined { incident: u64, seq: Seq },
    /// The incident got its certified reply (or its first fault certificate).
    Certified { incident: u64 },
    /// f+1 nodes name this replica faulty: destroy and replace it. `seq` is
    /// the lowest seq the votes name: one the faulty instance executed.
    Fence {
        replica: ReplicaId,
        incident: Option<u64>,
        seq: Seq,
    },
    /// A FAULT vote that cannot count (see [`Refusal`]); nothing to do but
    /// count it.
    Refused { replica: ReplicaId, seq: Seq, why: Refusal },
}

/// Why a FAULT vote was not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its seq is past anything a correct node can have committed
    /// ([`Tracker::horizon`]): only a faulty node sends it.
    BeyondHorizon,
    /// Its seq is at or below the current instance's boundary: it is about
    /// an instance already fenced (or the vote is made up).
    EarlierInstance,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BeyondHorizon => "fault-beyond-horizon",
            Refusal::EarlierInstance => "fault-about-fenced-instance",
        }
    }
}

/// What a FAULT vote is about. Votes add up only when they agree on it, so
/// one correct node's vote in one incident and a faulty node's vote in
/// another never make a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultScope {
    /// The seq lies within an incident's range, or at or after the start of
    /// an open one: the nodes' votes about that incident may name different
    /// seqs of it (each names the seq where it saw the replica go wrong or
    /// silent).
    Incident(u64),
    /// No incident covers it (a checkpoint mismatch, say): the exact seq.
    Seq(Seq),
}

/// FAULT tallies are kept per replica, instance and scope.
type FaultKey = (ReplicaId, u64, FaultScope);

/// The instance of a replica slot that FAULTs are counted against.
///
/// A FAULT names a replica index and a seq, not an instance, so the
/// instance is inferred from the seq: a vote about seq `s` concerns the
/// instance that was running when `s` was executed. After a replacement,
/// `after` is set to a seq every vote about the old instance stays at or
/// below, and such votes are refused:
/// - the certificate's lowest seq: some correct node saw the old instance
///   fail there, and
/// - the seq f+1 nodes report having committed ([`Tracker::vouched`]),
///   raised by their heartbeats for [`INSTANCE_SETTLE_MS`] after the
///   replacement. The old instance was destroyed at the replacement, so it
///   answered no seq committed later; a correct node's late vote about it
///   names a seq committed by then, which f+1 nodes report within a couple
///   of heartbeats.
///
/// The cost: the new instance cannot be fenced for a wrong answer at a seq
/// up to `after` (it is still outvoted there); it is fenced once it
/// misbehaves past it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Instance {
    /// Counts the instances this tracker has seen in the slot.
    epoch: u64,
    after: Seq,
    settling_until: u64,
}

pub struct Tracker {
    f: usize,
    /// The agreement nodes' `log_window` (PBFT's L): see [`Tracker::horizon`].
    log_window: u64,
    wakes: Quorum<(AppId, Seq)>,
    resolved: Quorum<(AppId, Seq)>,
    faults: Quorum<FaultKey>,
    instances: BTreeMap<ReplicaId, Instance>,
    /// Each node's last committed seq per app, from its heartbeats.
    committed: BTreeMap<AppId, BTreeMap<NodeId, Seq>>,
    /// Each node's stable execution checkpoint per app (its reply voter's).
    stable: BTreeMap<AppId, BTreeMap<NodeId, Seq>>,
    /// Seqs whose RESOLVED certificate came before any incident it answers
    /// (its WAKE certificate was still forming), newest last.
    answered: BTreeMap<AppId, VecDeque<Seq>>,
    incidents: VecDeque<Incident>,
    next_id: u64,
    quiet_ms: u64,
    /// When a fault was last injected into each app (by the operator): a
    /// new fault is a new episode, not part of the last one still settling.
    injected: BTreeMap<AppId, u64>,
}

impl Tracker {
    pub fn new(f: usize, log_window: u64, mut incidents: Vec<Incident>) -> Self {
        incidents.sort_by_key(|i| i.id);
        let next_id = incidents.last().map_or(1, |i| i.id + 1);
        Tracker {
            f,
            log_window,
            wakes: Quorum::new(),
            resolved: Quorum::new(),
            faults: Quorum::new(),
            instances: BTreeMap::new(),
            committed: BTreeMap::new(),
            stable: BTreeMap::new(),
            answered: BTreeMap::new(),
            incidents: incidents.into(),
            next_id,
            quiet_ms: DEFAULT_QUIET_MS,
            injected: BTreeMap::new(),
        }
    }

    /// A fault was injected into `app` at `now`: certificates after this no
    /// longer join an incident already certified (a benchmark or a demo
    /// injecting one fault after another gets one incident per fault).
    pub fn on_injected(&mut self, app: AppId, now: u64) {
        self.injected.insert(app, now);
    }

    /// How long an app's incident must be quiet (certified, and no WAKE or
    /// FAULT certificate joining it) before a WAKE certificate opens a new
    /// one instead of joining it.
    pub fn with_quiet_ms(mut self, quiet_ms: u64) -> Self {
        self.quiet_ms = quiet_ms;
        self
    }

    /// The app's incident a certificate at `now` joins: its newest, if that
    /// is open or not yet quiet.
    fn episode(&self, app: AppId, now: u64) -> Option<u64> {
        self.incidents
            .iter()
            .rev()
            .find(|i| i.app == app)
            .filter(|i| i.joinable(now, self.quiet_ms))
            .filter(|i| {
                let injected = self.injected.get(&app).copied();
                !matches!((i.certified_at, injected), (Some(c), Some(t)) if t >= c)
            })
            .map(|i| i.id)
    }

    /// A node's heartbeat: it has committed `seq` of `app`.
    pub fn on_progress(&mut self, app: AppId, node: NodeId, seq: Seq, now: u64) {
        self.committed.entry(app).or_default().insert(node, seq);
        let vouched = self.vouched(app);
        for (r, i) in self.instances.iter_mut() {
            if r.app == app && now < i.settling_until {
                i.after = i.after.max(vouched);
            }
        }
    }

    /// A node's heartbeat: its reply voter holds a stable checkpoint of
    /// `app` at `stable`. A correct voter moves its checkpoint past an
    /// unanswered incident only once the incident is answered or its hold
    /// ran out; so when f+1 nodes report a checkpoint at or past an open
    /// incident's last seq, the incident is over even if some RESOLVED was
    /// lost on the way (a node that crashed right after voting, a link
    /// that reset): it is certified, or it would stay open for good and
    /// the app would never settle back to f+1 active replicas.
    pub fn on_node_stable(&mut self, app: AppId, node: NodeId, stable: Seq, now: u64) -> Vec<Decision> {
        self.stable.entry(app).or_default().insert(node, stable);
        let mut seen: Vec<Seq> = self
            .stable
            .get(&app)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default();
        seen.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&vouched) = seen.get(self.f) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for i in self.incidents.iter_mut() {
            if i.app == app && i.is_open() && i.last_seq <= vouched {
                i.certified_at = Some(now);
                out.push(Decision::Certified { incident: i.id });
            }
        }
        out
    }

    /// The highest seq of `app` that f+1 nodes report having committed (so
    /// at least one correct node has). Faulty nodes cannot raise it.
    pub fn vouched(&self, app: AppId) -> Seq {
        let mut seen: Vec<Seq> = self
            .committed
            .get(&app)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default();
        seen.sort_unstable_by(|a, b| b.cmp(a));
        seen.get(self.f).copied().unwrap_or(0)
    }

    /// The highest seq of `app` a correct node can have committed, and so
    /// name in a FAULT. A correct node commits seq s only once 2f+1 nodes
    /// prepared it, f+1 of them correct, and a correct node prepares only
    /// within `log_window` of its stable checkpoint (PBFT's high watermark),
    /// which is at or below its last committed seq: so f+1 nodes have
    /// committed at least s - log_window, and s ≤ `vouched` + log_window.
    /// A second window covers heartbeats' lag behind the nodes.
    pub fn horizon(&self, app: AppId) -> Seq {
        self.vouched(app).saturating_add(self.log_window.saturating_mul(2))
    }

    /// A new instance of `r` starts (a replacement, or a first start): FAULTs
    /// about earlier instances stop counting (see [`Instance`]).
    pub fn new_instance(&mut self, r: ReplicaId, now: u64) {
        let vouched = self.vouched(r.app);
        let i = self.instances.entry(r).or_default();
        i.epoch += 1;
        i.after = i.after.max(vouched);
        i.settling_until = now.saturating_add(INSTANCE_SETTLE_MS);
        self.faults.forget(|k| k.0 == r);
    }

    fn need(&self) -> usize {
        self.f + 1
    }

    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.iter()
    }

    pub fn incident(&self, id: u64) -> Option<&Incident> {
        self.incidents.iter().find(|i| i.id == id)
    }

    fn incident_mut(&mut self, id: u64) -> Option<&mut Incident> {
        self.incidents.iter_mut().find(|i| i.id == id)
    }

    pub fn open_incident(&self, app: AppId) -> Option<&Incident> {
        self.incidents.iter().rev().find(|i| i.app == app && i.is_open())
    }

    /// Whether the app had an incident event within `window_ms` of `now`
    /// or has one open.
    pub fn busy(&self, app: AppId, now: u64, window_ms: u64) -> bool {
        self.incidents
            .iter()
            .any(|i| i.app == app && (i.is_open() || i.certified_at.is_some_and(|c| now.saturating_sub(c) < window_ms)))
    }

    pub fn on_wake(&mut self, w: &Wake, now: u64) -> Vec<Decision> {
        // Also a seq a checkpoint WAKE joined below the first one: more
        // than f+1 nodes voting make a second certificate for it, which
        // must not reopen what its answer closed.
        let covered = self
            .incidents
            .iter()
            .any(|i| i.app == w.app && (i.covers(w.seq) || i.answered_by(w.seq)));
        if covered {
            return Vec::new();
        }
        let Some(tally) = self.wakes.vote((w.app, w.seq), w.node, w.seq, now, self.need()) else {
            return Vec::new();
        };
        if let Some(id) = self.episode(w.app, now) {
            if let Some(i) = self.incident_mut(id) {
                i.join(w.seq, w.kind, now);
            }
            let mut out = vec![Decision::Joined {
                incident: id,
                seq: w.seq,
            }];
            out.extend(self.answered_early(w.app, id, now));
            return out;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.incidents.push_back(Incident {
            id,
            app: w.app,
            seq: w.seq,
            last_seq: w.seq,
            kind: w.kind,
            detected_at: tally.first_at,
            woken: None,
            certified_at: None,
            faulty: Vec::new(),
            replaced: Vec::new(),
            coalesced: 0,
            kinds: vec![w.kind],
            answer_from: None,
            last_joined_at: 0,
        });
        while self.incidents.len() > MAX_INCIDENTS {
            self.incidents.pop_front();
        }
        let mut out = vec![Decision::Opened { incident: id }];
        out.extend(self.answered_early(w.app, id, now));
        out
    }

    /// A RESOLVED vote. Votes count whether or not an incident is open
    /// yet: a node sends RESOLVED as soon as the answer it waited for is
    /// certified, which may be before the WAKE certificate that opens or
    /// joins the incident has formed here; such an early certificate is
    /// kept and ends the incident as soon as it opens (or joins).
    pub fn on_resolved(&mut self, r: &Resolved, now: u64) -> Vec<Decision> {
        if self
            .resolved
            .vote((r.app, r.seq), r.node, r.seq, now, self.need())
            .is_none()
        {
            return Vec::new();
        }
        let target = self
            .incidents
            .iter()
            .rev()
            .find(|i| i.app == r.app && i.is_open() && i.answered_by(r.seq))
            .map(|i| i.id);
        match target {
            Some(id) => self.certify(id, now),
            None => {
                let early = self.answered.entry(r.app).or_default();
                if early.len() >= MAX_PENDING_PER_NODE {
                    early.pop_front();
                }
                early.push_back(r.seq);
                Vec::new()
            }
        }
    }

    fn certify(&mut self, id: u64, now: u64) -> Vec<Decision> {
        match self.incident_mut(id) {
            Some(i) if i.certified_at.is_none() => {
                i.certified_at = Some(now);
                vec![Decision::Certified { incident: id }]
            }
            _ => Vec::new(),
        }
    }

    /// Incident `id` just opened or took a seq: an answer certified before
    /// it did ends it at once.
    fn answered_early(&mut self, app: AppId, id: u64, now: u64) -> Vec<Decision> {
        let answered = self.incident(id).is_some_and(|i| {
            self.answered
                .get(&app)
                .is_some_and(|seqs| seqs.iter().any(|s| i.is_open() && i.answered_by(*s)))
        });
        if answered {
            self.certify(id, now)
        } else {
            Vec::new()
        }
    }

    /// A FAULT vote. It counts with votes about the same instance and scope
    /// ([`FaultScope`]); a vote past the [`horizon`](Self::horizon) or about
    /// an earlier instance is refused, so no single vote can move the
    /// boundary of later instances.
    pub fn on_fault(&mut self, fault: &Fault, now: u64) -> Vec<Decision> {
        let r = fault.replica;
        let refuse = |why| {
            vec![Decision::Refused {
                replica: r,
                seq: fault.seq,
                why,
            }]
        };
        if fault.seq > self.horizon(r.app) {
            return refuse(Refusal::BeyondHorizon);
        }
        let instance = self.instances.get(&r).copied().unwrap_or_default();
        if fault.seq <= instance.after {
            return refuse(Refusal::EarlierInstance);
        }
        let scope = self
            .incidents
            .iter()
            .rev()
            .find(|i| i.app == r.app && (i.covers(fault.seq) || (i.is_open() && fault.seq >= i.seq)))
            .map_or(FaultScope::Seq(fault.seq), |i| FaultScope::Incident(i.id));
        let key = (r, instance.epoch, scope);
        let Some(tally) = self.faults.vote(key, fault.node, fault.seq, now, self.need()) else {
            return Vec::new();
        };
        // At least one of the f+1 votes is a correct node's, so the lowest
        // seq is one the fenced instance did execute.
        let lowest = tally.seqs.values().copied().min().unwrap_or(fault.seq);
        self.new_instance(r, now);
        if let Some(i) = self.instances.get_mut(&r) {
            i.after = i.after.max(lowest);
        }
        // The fence belongs to the episode under way, if any, and keeps
        // it from going quiet.
        let incident = self
            .incidents
            .iter()
            .rev()
            .find(|i| i.app == r.app && (i.is_open() || i.covers(fault.seq)))
            .map(|i| i.id)
            .or_else(|| self.episode(r.app, now));
        let mut out = Vec::new();
        if let Some(i) = incident.and_then(|id| self.incident_mut(id)) {
            if !i.faulty.contains(&r) {
                i.faulty.push(r);
            }
            i.last_joined_at = now;
            // A vote about a seq before the WAKE that reopened it is no
            // answer after that WAKE.
            if i.certified_at.is_none() && i.answer_from.is_none_or(|from| lowest >= from) {
                i.certified_at = Some(now);
                out.push(Decision::Certified { incident: i.id });
            }
        }
        out.insert(
            0,
            Decision::Fence {
                replica: r,
                incident,
                seq: lowest,
            },
        );
        out
    }

    pub fn mark_woken(&mut self, id: u64, now: u64) -> bool {
        match self.incident_mut(id) {
            Some(i) if i.woken.is_none() => {
                i.woken = Some(now);
                true
            }
            _ => false,
        }
    }

    pub fn mark_replaced(&mut self, id: u64, r: ReplicaId) -> bool {
        match self.incident_mut(id) {
            Some(i) if !i.replaced.contains(&r) => {
                i.replaced.push(r);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;
