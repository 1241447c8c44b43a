//! What a node keeps on stable storage, and how a restarted node comes back
//! from it (PBFT §4.4 assumes the log survives a crash; Castro's thesis §6.2
//! keeps it on disk for proactive recovery).
//!
//! Two parts:
//! - `Durable`, a snapshot written at checkpoints and view changes: view,
//!   committed prefix, stable checkpoint and its proof, the dedup record;
//! - `Record`s, a write-ahead log appended while voting: each prepared
//!   certificate before the node's commit for it leaves, each delivered seq
//!   before its delivery is acted on. A snapshot makes the records it covers
//!   obsolete (`Record::covered_by`).
//!
//! Without the records a restarted node forgets the certificates it sent
//! commits for; 2f+1 view changes from restarted and lagging nodes could then
//! omit a committed seq and the next view would fill it with another batch
//! (`tests/sim_restart.rs` shows that fork).

use super::dedup::DedupRecord;
use super::log::{chain, Certificate, Slot};
use super::{Config, Core, Stable};
use zz_wire::{ClientId, Digest, Identity, LogCheckpoint, Seq, Signed, View};

/// The snapshot part of what survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Durable {
    pub view: View,
    pub last_committed: Seq,
    /// Chain digest of the committed log up to `last_committed`.
    pub log_digest: Digest,
    pub stable_checkpoint: Seq,
    /// Log digest at `stable_checkpoint` and its 2f+1 signed checkpoints, so
    /// a restarted node can still prove its stable checkpoint in a view change.
    #[serde(default)]
    pub stable_digest: Digest,
    #[serde(default)]
    pub stable_proof: Vec<Signed<LogCheckpoint>>,
    /// Client batches committed up to `last_committed`, so a restarted node
    /// still refuses a proposal that repeats one.
    #[serde(default)]
    pub dedup: DedupRecord,
}

/// One write-ahead record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Record {
    /// This node holds a prepared certificate for the seq (the latest view's
    /// replaces an earlier one); it goes into every later view change.
    Prepared(Certificate),
    /// The seq was delivered with this digest, holding these client batches.
    Committed {
        seq: Seq,
        digest: Digest,
        batches: Vec<(ClientId, u64)>,
    },
}

/// What a record is stored under: its seq, then its kind (a later
/// certificate for a seq replaces the earlier one; a delivery sits beside it).
pub type RecordKey = (Seq, RecordKind);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum RecordKind {
    Prepared = 0,
    Committed = 1,
}

impl RecordKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(RecordKind::Prepared),
            1 => Some(RecordKind::Committed),
            _ => None,
        }
    }

    /// True once `d` makes a record of this kind at `seq` redundant:
    /// certificates at or below the stable checkpoint never enter a view
    /// change again, deliveries up to `last_committed` are in the snapshot.
    pub fn covered_by(self, seq: Seq, d: &Durable) -> bool {
        match self {
            RecordKind::Prepared => seq <= d.stable_checkpoint,
            RecordKind::Committed => seq <= d.last_committed,
        }
    }
}

impl Record {
    pub fn seq(&self) -> Seq {
        self.key().0
    }

    pub fn key(&self) -> RecordKey {
        match self {
            Record::Prepared(p) => (p.pre_prepare.body.seq, RecordKind::Prepared),
            Record::Committed { seq, .. } => (*seq, RecordKind::Committed),
        }
    }

    pub fn covered_by(&self, d: &Durable) -> bool {
        let (seq, kind) = self.key();
        kind.covered_by(seq, d)
    }
}

impl Core {
    /// Comes back in the persisted view with the persisted committed prefix,
    /// extended by the `Committed` records that follow it, and with every
    /// recorded prepared certificate in its log (so its view changes carry
    /// them). It may have voted in that view before the crash without
    /// remembering how, so it stays passive (no prepare, commit or proposal)
    /// for every seq it could have voted on until a later view or a stable
    /// checkpoint above them, and catches up with `LogFetch`.
    pub fn restore(config: Config, id: Identity, durable: Durable, records: Vec<Record>) -> Self {
        let mut core = Core::new(config, id);
        let window = core.cfg.timing.log_window;
        core.view = durable.view;
        core.last_normal_view = durable.view;
        core.last_committed = durable.last_committed;
        core.log_digest = durable.log_digest;
        core.dedup = durable.dedup.restore();
        core.stable = Stable {
            seq: durable.stable_checkpoint,
            digest: durable.stable_digest,
            proof: durable.stable_proof,
        };
        let mut certificates = Vec::new();
        let mut deliveries = Vec::new();
        for r in records {
            match r {
                Record::Prepared(p) => certificates.push(p),
                Record::Committed { seq, digest, batches } => deliveries.push((seq, digest, batches)),
            }
        }
        certificates.sort_by_key(|p| (p.pre_prepare.body.seq, p.pre_prepare.body.view));
        for p in certificates {
            core.restore_prepared(p);
        }
        deliveries.sort_by_key(|(seq, ..)| *seq);
        for (seq, digest, batches) in deliveries {
            if seq != core.last_committed + 1 {
                continue;
            }
            core.last_committed = seq;
            core.log_digest = chain(&core.log_digest, seq, &digest);
            for b in batches {
                core.dedup.insert(b);
            }
            if let Some(slot) = core.log.get_mut(&seq) {
                slot.committed = Some(digest);
            }
        }
        core.tick_committed = core.last_committed;
        core.next_seq = core.last_committed + 1;
        let voted_up_to = core.stable.seq.max(core.last_committed) + window;
        core.passive = Some((core.view, voted_up_to));
        core.fetch.behind = core.last_committed + 1;
        core
    }

    /// A recorded certificate becomes the slot's P-set entry, and its
    /// batches count as pending at that seq (a proposal repeating them
    /// elsewhere is refused).
    fn restore_prepared(&mut self, p: Certificate) {
        let (seq, view) = (p.pre_prepare.body.seq, p.pre_prepare.body.view);
        if seq <= self.stable.seq {
            return;
        }
        for r in &p.pre_prepare.body.proposal.requests {
            self.in_log.insert((r.body.client, r.body.first_id), seq);
        }
        let slot = self.log.entry(seq).or_insert_with(|| Slot::new(view, 0));
        slot.view = slot.view.max(view);
        slot.old_proof = Some(p);
    }
}
