//! Reply voting: an agreement node's audit of the execution replicas.
//!
//! Pure like the PBFT core: `Voter::step(now_ms, input) -> Vec<VoteAction>`.
//! f+1 matching replies from distinct replicas certify a result (at least one
//! is correct). Disagreement, silence past the reply timeout, or checkpoint
//! digests that fail to reach f+1 agreement raise an incident (a `Wake` for
//! the orchestrator); once the result is certified, every replica that
//! answered differently is named in a `Fault`.

use std::collections::{BTreeMap, BTreeSet};
use zz_wire::{
    AppId, BatchResult, CheckpointCert, ClientId, Digest, ExecCheckpoint, ExecReply, IncidentKind, ReplicaId, Seq,
    Signed,
};

#[derive(Clone, Debug)]
pub struct VoterConfig {
    pub app: AppId,
    pub f: usize,
    pub replicas: usize,
    pub reply_timeout_ms: u64,
    pub checkpoint_interval: u64,
}

#[derive(Clone, Debug)]
pub enum VoteInput {
    /// The PBFT core delivered `seq`; replies for it are now expected.
    Committed { seq: Seq },
    /// A reply from a replica of this app (its link vouched for the sender).
    Reply(ExecReply),
    /// A signature-checked checkpoint from a replica of this app.
    Checkpoint(Signed<ExecCheckpoint>),
    /// The reply timer for `seq` fired.
    Timer(Seq),
    /// A replica of this app heartbeat on its link: alive, and executed
    /// through `last_executed`.
    Progress { replica: ReplicaId, last_executed: Seq },
}

#[derive(Clone, Debug, PartialEq)]
pub enum VoteAction {
    /// Certified results for one client's batches at `seq`.
    ClientReply {
        seq: Seq,
        client: ClientId,
        results: Vec<BatchResult>,
    },
    Wake {
        seq: Seq,
        kind: IncidentKind,
    },
    /// `replica` disagreed with the certified result of `seq` (or stayed
    /// silent while its peers answered: `theirs` = None).
    Fault {
        replica: ReplicaId,
        seq: Seq,
        certified: Digest,
        theirs: Option<Digest>,
    },
    /// The incident raised at `seq` got its first certified reply.
    Resolved {
        seq: Seq,
    },
    /// f+1 matching checkpoints: stable. Push it to replicas, truncate below.
    Stable(CheckpointCert),
    SetTimer {
        seq: Seq,
        after_ms: u64,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VoteStats {
    pub certified: u64,
    pub incidents: u64,
    pub faults: u64,
    pub dropped: u64,
    /// Checkpoints whose f+1 roots matched while an incident held them.
    pub held_checkpoints: u64,
}

#[derive(Default)]
struct Slot {
    committed: bool,
    /// Each replica's first reply, with its result digest (hashing every
    /// result of a large batch once, not on every evaluation). Once the
    /// seq is certified, the replies' results are dropped.
    replies: BTreeMap<u16, (Digest, ExecReply)>,
    certified: Option<Digest>,
    /// Replicas already named in a Fault for this seq.
    blamed: BTreeSet<u16>,
    incident: bool,
    /// When an incident's result was certified: replicas silent for it are
    /// named only if they also send nothing at all for a reply timeout after
    /// this (a slow replica still answering earlier seqs is not silent).
    silence_since: Option<u64>,
    /// The silence check above has run.
    silence_judged: bool,
    /// Its replies count against their replicas' `future_bytes` (it was
    /// above `committed_high` when they came, and still is).
    charged: bool,
}

impl Slot {
    /// Certified through an incident, its silent replicas not yet judged.
    fn awaits_silence_check(&self) -> bool {
        self.incident && self.silence_since.is_some() && !self.silence_judged
    }
}

#[derive(Default)]
struct CheckpointSlot {
    sigs: BTreeMap<u16, Signed<ExecCheckpoint>>,
    stable: Option<Digest>,
    blamed: BTreeSet<u16>,
    incident: bool,
}

pub struct Voter {
    cfg: VoterConfig,
    slots: BTreeMap<Seq, Slot>,
    checkpoints: BTreeMap<Seq, CheckpointSlot>,
    /// Highest seq each replica answered: a replica that answered recently
    /// and then went silent through an incident is blamed; long-paused
    /// standbys are not.
    last_reply: BTreeMap<u16, Seq>,
    /// When each replica's latest reply (for any seq) arrived.
    last_reply_ms: BTreeMap<u16, u64>,
    /// Each replica's latest heartbeat: when, and the seq it said it had
    /// executed through.
    progress: BTreeMap<u16, (u64, Seq)>,
    stable: Seq,
    /// Highest seq the core delivered. A restarted node's voter starts with
    /// no stable checkpoint; its horizons count from here so the replicas'
    /// checkpoints far above zero are still taken (and the node recovers
    /// its stable checkpoint instead of refusing every later reply).
    committed_high: Seq,
    /// The open incident (its seq); new problems while it is open join it.
    open_incident: Option<(Seq, u64)>,
    /// Per replica: bytes of its replies held for seqs above
    /// `committed_high` (see `FUTURE_REPLY_BYTES`).
    future_bytes: BTreeMap<u16, usize>,
    stats: VoteStats,
}

/// How far behind the incident a replica's last answer may be for its silence
/// to count as a fault (it was active then).
const SILENCE_WINDOW: Seq = 64;

/// Checkpoint intervals an unanswered incident may hold its checkpoint.
const INCIDENT_HOLD: Seq = 4;

/// Bytes of replies one replica may have held for seqs this node has not
/// committed yet. A correct replica runs ahead of a node only by the node's
/// lag; a Byzantine one could otherwise park a frame per seq up to the
/// horizon (gigabytes). Past it such replies are dropped: a node that
/// missed replies forgets their seqs (`missed`) instead of waking anyone.
pub const FUTURE_REPLY_BYTES: usize = 32 << 20;

/// What a held reply costs: its responses and a fixed overhead per batch
/// and per reply, so empty replies are not free.
fn reply_bytes(r: &ExecReply) -> usize {
    256 + r
        .results
        .iter()
        .map(|b| 64 + b.responses.as_bytes().len())
        .sum::<usize>()
}

impl Voter {
    pub fn new(cfg: VoterConfig) -> Self {
        Voter {
            cfg,
            slots: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            last_reply: BTreeMap::new(),
            last_reply_ms: BTreeMap::new(),
            progress: BTreeMap::new(),
            stable: 0,
            committed_high: 0,
            open_incident: None,
            future_bytes: BTreeMap::new(),
            stats: VoteStats::default(),
        }
    }

    pub fn stats(&self) -> &VoteStats {
        &self.stats
    }

    pub fn stable_seq(&self) -> Seq {
        self.stable
    }

    /// Replica `index`'s latest heartbeat: when, and its last executed seq.
    pub fn progress(&self, index: u16) -> Option<(u64, Seq)> {
        self.progress.get(&index).copied()
    }

    fn quorum(&self) -> usize {
        self.cfg.f + 1
    }

    pub fn step(&mut self, now_ms: u64, input: VoteInput) -> Vec<VoteAction> {
        let mut out = Vec::new();
        match input {
            VoteInput::Committed { seq } => {
                if seq > self.committed_high {
                    self.release_future(self.committed_high + 1..=seq);
                    self.committed_high = seq;
                }
                if seq <= self.stable {
                    return out;
                }
                self.slots.entry(seq).or_default().committed = true;
                out.push(VoteAction::SetTimer {
                    seq,
                    after_ms: self.cfg.reply_timeout_ms,
                });
                self.evaluate(now_ms, seq, &mut out);
            }
            VoteInput::Reply(r) => self.on_reply(now_ms, r, &mut out),
            VoteInput::Checkpoint(c) => self.on_checkpoint(c, &mut out),
            VoteInput::Timer(seq) => self.on_timeout(now_ms, seq, &mut out),
            VoteInput::Progress { replica, last_executed } => {
                if self.valid_replica(replica) {
                    self.progress.insert(replica.index, (now_ms, last_executed));
                } else {
                    self.stats.dropped += 1;
                }
            }
        }
        out
    }

    /// Where the far-future horizons for replies and checkpoints count from.
    fn base(&self) -> Seq {
        self.stable.max(self.committed_high)
    }

    fn valid_replica(&self, r: ReplicaId) -> bool {
        r.app == self.cfg.app && usize::from(r.index) < self.cfg.replicas
    }

    fn on_reply(&mut self, now_ms: u64, r: ExecReply, out: &mut Vec<VoteAction>) {
        let b = &r;
        // Far-future replies are refused so a faulty replica cannot fill memory.
        let horizon = self.base() + 4 * self.cfg.checkpoint_interval.max(1) + 4096;
        // Below the stable checkpoint only a seq still held for its incident
        // takes replies: a slow replica's answer there must still count
        // against its silence.
        let settled = b.seq <= self.stable && !self.slots.contains_key(&b.seq);
        if !self.valid_replica(b.replica) || settled || b.seq > horizon {
            self.stats.dropped += 1;
            return;
        }
        let (seq, idx) = (b.seq, b.replica.index);
        if seq > self.committed_high && !self.slots.get(&seq).is_some_and(|s| s.replies.contains_key(&idx)) {
            let size = reply_bytes(&r);
            let held = self.future_bytes.entry(idx).or_default();
            if *held + size > FUTURE_REPLY_BYTES {
                tracing::debug!(
                    replica = idx,
                    seq,
                    held = *held,
                    "reply ahead of the log past its budget"
                );
                self.stats.dropped += 1;
                return;
            }
            *held += size;
            self.slots.entry(seq).or_default().charged = true;
        }
        let last = self.last_reply.entry(idx).or_default();
        *last = (*last).max(seq);
        self.last_reply_ms.insert(idx, now_ms);
        let slot = self.slots.entry(seq).or_default();
        // First answer per replica counts; a replica changing its answer is
        // already faulty and its first answer is evidence enough.
        slot.replies.entry(idx).or_insert_with(|| (r.result_digest(), r));
        self.evaluate(now_ms, seq, out);
    }

    /// The slots in `range` no longer count against the replicas' budgets
    /// for replies ahead of the log (committed, or forgotten).
    fn release_future(&mut self, range: impl std::ops::RangeBounds<Seq>) {
        for slot in self.slots.range_mut(range).map(|(_, s)| s) {
            if std::mem::take(&mut slot.charged) {
                for (idx, (_, r)) in &slot.replies {
                    if let Some(held) = self.future_bytes.get_mut(idx) {
                        *held = held.saturating_sub(reply_bytes(r));
                    }
                }
            }
        }
    }

    /// Certify, raise a mismatch, and blame disagreeing replicas, as far as
    /// the replies for `seq` allow.
    fn evaluate(&mut self, now_ms: u64, seq: Seq, out: &mut Vec<VoteAction>) {
        let q = self.quorum();
        let mut released = false;
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        let mut groups: BTreeMap<Digest, Vec<u16>> = BTreeMap::new();
        for (idx, (d, _)) in &slot.replies {
            groups.entry(*d).or_default().push(*idx);
        }
        if slot.certified.is_none() {
            if let Some((d, members)) = groups.iter().find(|(_, m)| m.len() >= q) {
                let d = *d;
                slot.certified = Some(d);
                self.stats.certified += 1;
                if slot.committed {
                    if let Some((_, first)) = members.first().and_then(|i| slot.replies.get(i)) {
                        push_client_replies(seq, first, out);
                    }
                }
                if slot.incident {
                    out.push(VoteAction::Resolved { seq });
                    released = true;
                }
                if self.open_incident.is_some_and(|(s, _)| s <= seq) {
                    self.open_incident = None;
                }
            }
        }
        if groups.len() > 1 && !slot.incident && slot.certified.is_some() {
            // Found after the answer was certified: the incident is raised
            // (the episode is recorded, the FAULTs below fence) and resolved
            // at once, as nothing will answer this seq again.
            slot.incident = true;
            self.stats.incidents += 1;
            out.push(VoteAction::Wake {
                seq,
                kind: IncidentKind::Mismatch,
            });
            out.push(VoteAction::Resolved { seq });
        }
        if groups.len() > 1 && !slot.incident {
            slot.incident = true;
            if self.open_incident.is_none() {
                self.open_incident = Some((seq, now_ms));
                self.stats.incidents += 1;
                out.push(VoteAction::Wake {
                    seq,
                    kind: IncidentKind::Mismatch,
                });
            }
        }
        if let Some(cert) = slot.certified {
            for (idx, (theirs, _)) in &slot.replies {
                let theirs = *theirs;
                if theirs != cert && slot.blamed.insert(*idx) {
                    self.stats.faults += 1;
                    out.push(VoteAction::Fault {
                        replica: ReplicaId {
                            app: self.cfg.app,
                            index: *idx,
                        },
                        seq,
                        certified: cert,
                        theirs: Some(theirs),
                    });
                }
            }
            if slot.incident && slot.silence_since.is_none() {
                slot.silence_since = Some(now_ms);
                out.push(VoteAction::SetTimer {
                    seq,
                    after_ms: self.cfg.reply_timeout_ms,
                });
            }
            // Certified: the answer went out and blame needs only digests,
            // so the results go (a replica's 16 MiB reply to every seq of
            // the window would otherwise stay until the next checkpoint).
            for (idx, (_, r)) in slot.replies.iter_mut() {
                if r.results.is_empty() {
                    continue;
                }
                let before = reply_bytes(r);
                r.results = Vec::new();
                if slot.charged {
                    if let Some(held) = self.future_bytes.get_mut(idx) {
                        *held = held.saturating_sub(before - reply_bytes(r));
                    }
                }
            }
        }
        if released {
            self.release_held(out);
        }
    }

    /// Whether this node missed the replies for `seq` rather than the
    /// replicas leaving it unanswered: none came, yet f+1 replicas answered
    /// later seqs. A correct replica answers in order on one link, so it
    /// answered `seq` too; the replies were lost to this node (it restarted,
    /// or caught up on seqs executed while it was down, or its link reset).
    /// A replica silent at `seq` alone still leaves the others' replies here.
    fn missed(&self, seq: Seq) -> bool {
        let uncertified_and_empty = self
            .slots
            .get(&seq)
            .is_some_and(|s| s.certified.is_none() && s.replies.is_empty());
        uncertified_and_empty && self.last_reply.values().filter(|&&l| l > seq).count() >= self.quorum()
    }

    /// A reply timeout after an incident at `seq` was certified: replicas
    /// that were answering just before it, but answered neither it nor
    /// anything else since it was certified, are named as silent. Not one
    /// that heartbeat since then that it has not executed `seq` yet: it is
    /// alive and behind (a woken standby whose state fetch for `seq` fails
    /// says nothing for it rather than a wrong answer). A replica saying so
    /// for ever is of no use but does no harm: it is never counted for an
    /// answer, and the orchestrator sees its progress in the heartbeats.
    fn blame_silent(&mut self, seq: Seq, cert: Digest, since_ms: u64, out: &mut Vec<VoteAction>) {
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        for idx in 0..u16::try_from(self.cfg.replicas).unwrap_or(u16::MAX) {
            let recent = self
                .last_reply
                .get(&idx)
                .is_some_and(|&l| l + SILENCE_WINDOW >= seq && l < seq);
            let quiet = self.last_reply_ms.get(&idx).is_none_or(|&t| t < since_ms);
            let behind = self.progress.get(&idx).is_some_and(|&(t, l)| t >= since_ms && l < seq);
            if behind && recent && quiet && !slot.replies.contains_key(&idx) {
                tracing::info!(replica = idx, seq, "silent replica says it is behind; not named");
                continue;
            }
            if recent && quiet && !slot.replies.contains_key(&idx) && slot.blamed.insert(idx) {
                self.stats.faults += 1;
                out.push(VoteAction::Fault {
                    replica: ReplicaId {
                        app: self.cfg.app,
                        index: idx,
                    },
                    seq,
                    certified: cert,
                    theirs: None,
                });
            }
        }
    }

    fn on_timeout(&mut self, now_ms: u64, seq: Seq, out: &mut Vec<VoteAction>) {
        if self.missed(seq) {
            // Forgotten: it holds no checkpoint and wakes nobody.
            self.release_future(seq..=seq);
            if self.slots.remove(&seq).is_some_and(|s| s.incident) {
                out.push(VoteAction::Resolved { seq });
            }
            self.release_held(out);
            return;
        }
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        if let Some(cert) = slot.certified {
            if let (true, Some(since), false) = (slot.incident, slot.silence_since, slot.silence_judged) {
                slot.silence_judged = true;
                self.blame_silent(seq, cert, since, out);
            }
            return;
        }
        slot.incident = true;
        // Re-arm: if the wake does not help, wake again later.
        out.push(VoteAction::SetTimer {
            seq,
            after_ms: self.cfg.reply_timeout_ms * 4,
        });
        let stale_open = self
            .open_incident
            .is_some_and(|(_, at)| now_ms.saturating_sub(at) >= self.cfg.reply_timeout_ms * 4);
        if self.open_incident.is_none() || stale_open {
            self.open_incident = Some((seq, now_ms));
            self.stats.incidents += 1;
            out.push(VoteAction::Wake {
                seq,
                kind: IncidentKind::Timeout,
            });
        }
    }

    fn on_checkpoint(&mut self, c: Signed<ExecCheckpoint>, out: &mut Vec<VoteAction>) {
        let b = c.body;
        let horizon = self.base() + 8 * self.cfg.checkpoint_interval.max(1);
        let known = self.checkpoints.contains_key(&b.seq);
        if !self.valid_replica(b.replica)
            || (b.seq <= self.stable && !known)
            || b.seq > horizon
            || !b.seq.is_multiple_of(self.cfg.checkpoint_interval.max(1))
        {
            self.stats.dropped += 1;
            return;
        }
        let (seq, idx) = (b.seq, b.replica.index);
        let slot = self.checkpoints.entry(seq).or_default();
        slot.sigs.entry(idx).or_insert(c);
        let roots: BTreeSet<Digest> = slot.sigs.values().map(|s| s.body.root).collect();
        if roots.len() > 1 && !slot.incident {
            slot.incident = true;
            self.stats.incidents += 1;
            out.push(VoteAction::Wake {
                seq,
                kind: IncidentKind::Checkpoint,
            });
        }
        self.try_stabilize(seq, out);
    }

    /// Whether an incident at or below `seq` still waits for its certified
    /// answer. Its checkpoint must not become stable yet: replicas woken for
    /// it would jump to that checkpoint by state transfer, never execute the
    /// incident's seq, and nobody could answer it (the nodes truncate its
    /// orders). A bounded wait: past `INCIDENT_HOLD` intervals the system
    /// moves on without that answer rather than stall.
    fn holds_checkpoint(&self, seq: Seq) -> bool {
        let hold = INCIDENT_HOLD * self.cfg.checkpoint_interval.max(1);
        self.slots
            .range(..=seq)
            .any(|(s, slot)| slot.incident && slot.certified.is_none() && seq < s + hold)
    }

    /// Certifies the checkpoint at `seq` once f+1 roots match and no open
    /// incident holds it; blames replicas with another root.
    fn try_stabilize(&mut self, seq: Seq, out: &mut Vec<VoteAction>) {
        let q = self.quorum();
        let held = self.holds_checkpoint(seq);
        let Some(slot) = self.checkpoints.get_mut(&seq) else {
            return;
        };
        if slot.stable.is_none() {
            let mut groups: BTreeMap<Digest, Vec<u16>> = BTreeMap::new();
            for (i, s) in &slot.sigs {
                groups.entry(s.body.root).or_default().push(*i);
            }
            let Some((root, members)) = groups.iter().find(|(_, m)| m.len() >= q) else {
                return;
            };
            if held {
                self.stats.held_checkpoints += 1;
                return;
            }
            let root = *root;
            slot.stable = Some(root);
            let sigs = members.iter().filter_map(|i| slot.sigs.get(i).cloned()).collect();
            let cert = CheckpointCert {
                app: self.cfg.app,
                seq,
                root,
                sigs,
            };
            if slot.incident {
                out.push(VoteAction::Resolved { seq });
            }
            out.push(VoteAction::Stable(cert));
        }
        if let Some(root) = slot.stable {
            for (i, s) in &slot.sigs {
                if s.body.root != root && slot.blamed.insert(*i) {
                    self.stats.faults += 1;
                    out.push(VoteAction::Fault {
                        replica: ReplicaId {
                            app: self.cfg.app,
                            index: *i,
                        },
                        seq,
                        certified: root,
                        theirs: Some(s.body.root),
                    });
                }
            }
            self.advance_stable(seq, out);
        }
    }

    /// An incident got its answer: checkpoints it held may become stable.
    fn release_held(&mut self, out: &mut Vec<VoteAction>) {
        let pending: Vec<Seq> = self
            .checkpoints
            .iter()
            .filter(|(s, c)| **s > self.stable && c.stable.is_none())
            .map(|(s, _)| *s)
            .collect();
        for seq in pending {
            self.try_stabilize(seq, out);
        }
    }

    /// Forget slots at or below a stable checkpoint. Keeps the checkpoint
    /// slot itself a while so late divergent checkpoints are still blamed.
    fn advance_stable(&mut self, seq: Seq, out: &mut Vec<VoteAction>) {
        if seq <= self.stable {
            return;
        }
        self.stable = seq;
        // An incident still unanswered here is answered by the checkpoint:
        // its hold ran out, replies at or below `seq` are refused from now
        // on, and f+1 replicas vouch for the state after it. It is resolved
        // (the orchestrator closes it on f+1 of these) and forgotten, rather
        // than kept to raise its WAKE for good.
        for (s, slot) in self.slots.range(..=seq) {
            if slot.incident && slot.certified.is_none() {
                out.push(VoteAction::Resolved { seq: *s });
            }
        }
        if self.open_incident.is_some_and(|(s, _)| s <= seq) {
            self.open_incident = None;
        }
        // Keep certified slots whose silent replicas are still to be named
        // (the orchestrator fences a hung replica on nothing else).
        self.release_future(..=seq);
        self.slots.retain(|s, slot| *s > seq || slot.awaits_silence_check());
        let keep_from = seq.saturating_sub(self.cfg.checkpoint_interval);
        self.checkpoints.retain(|s, _| *s >= keep_from);
    }
}

fn push_client_replies(seq: Seq, reply: &ExecReply, out: &mut Vec<VoteAction>) {
    let mut by_client: BTreeMap<ClientId, Vec<BatchResult>> = BTreeMap::new();
    for r in &reply.results {
        by_client.entry(r.client).or_default().push(r.clone());
    }
    for (client, results) in by_client {
        out.push(VoteAction::ClientReply { seq, client, results });
    }
}

#[cfg(test)]
mod tests;
