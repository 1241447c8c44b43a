//! What the orchestrator knows and tells: replicas, events, incidents,
//! injected faults. These are persisted (JSON in the store) and served by
//! the admin API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zz_wire::{AppId, ReplicaId};

use crate::backend::Handle;

/// Life of an execution replica as the API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    Provisioning,
    Active,
    Paused,
    Hibernated,
    Waking,
    Faulty,
    Stopped,
}

impl ReplicaState {
    pub const ALL: [ReplicaState; 7] = [
        ReplicaState::Provisioning,
        ReplicaState::Active,
        ReplicaState::Paused,
        ReplicaState::Hibernated,
        ReplicaState::Waking,
        ReplicaState::Faulty,
        ReplicaState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Provisioning => "provisioning",
            ReplicaState::Active => "active",
            ReplicaState::Paused => "paused",
            ReplicaState::Hibernated => "hibernated",
            ReplicaState::Waking => "waking",
            ReplicaState::Faulty => "faulty",
            ReplicaState::Stopped => "stopped",
        }
    }

    /// A standby is a replica that can be woken.
    pub fn is_standby(self) -> bool {
        matches!(self, ReplicaState::Paused | ReplicaState::Hibernated)
    }

    /// Executing (or about to): counts towards the app's active set.
    pub fn is_running(self) -> bool {
        matches!(self, ReplicaState::Active | ReplicaState::Waking)
    }
}

/// What a provisioning replica becomes once it is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Active,
    Standby,
}

/// A tenant's Wasm app in one of the deployment's `wasm` slots (persisted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantApp {
    /// The deployment app (slot) it runs in, e.g. `slot-0`.
    pub slot: String,
    pub name: String,
    /// SHA-256 of the component, hex.
    pub hash: String,
    /// 0 while its first install is not certified yet.
    pub version: u64,
}

/// An app as `GET /v1/apps` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppView {
    pub name: String,
    /// `builtin` or `wasm`.
    pub kind: String,
    /// The component's SHA-256 (hex); absent for built-in apps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The deployment slot a Wasm app runs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    pub replicas: Vec<String>,
}

/// The orchestrator's record of one replica (persisted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    pub id: ReplicaId,
    pub name: String,
    pub app_name: String,
    pub state: ReplicaState,
    /// Bumped on every replacement, so stale backend reports are ignored.
    pub generation: u64,
    /// Where a provisioning replica is headed.
    pub role: Role,
    pub handle: Option<Handle>,
    pub host: String,
    pub backend: String,
    pub last_executed: u64,
    pub last_checkpoint: u64,
    pub fetched_objects: u64,
    pub stale_objects: u64,
    /// Last heartbeat of the current generation (unix ms).
    pub last_heartbeat_ms: Option<u64>,
    /// When the current state was entered (unix ms).
    pub since_ms: u64,
    /// Hibernated with no instance kept (no saved memory image): a wake
    /// provisions a clean one. Absent in stores written before it existed.
    #[serde(default)]
    pub cold: bool,
    /// Last time (unix ms) a syncing replica's heartbeat showed progress
    /// (objects fetched or fewer stale), so a standby still copying a large
    /// checkpoint is not paused half-synced when its grace runs out.
    #[serde(default)]
    pub sync_progress_ms: u64,
    /// The announcement of the current generation's key, if it is not the
    /// deployment's (every replacement's).
    #[serde(default)]
    pub key: Option<Box<zz_wire::Signed<zz_wire::ReplicaKey>>>,
    /// Earlier generations' announcements (the newest few): replicas
    /// check older checkpoint certificates with those keys.
    #[serde(default)]
    pub retired_keys: Vec<zz_wire::Signed<zz_wire::ReplicaKey>>,
}

impl ReplicaRecord {
    /// How long the replica has been in its state without sync progress.
    pub fn idle_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.since_ms.max(self.sync_progress_ms))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaView {
    /// `kv-e0`
    pub id: String,
    pub app: String,
    pub index: u16,
    pub state: ReplicaState,
    pub backend: String,
    pub host: String,
    pub generation: u64,
    pub last_executed: u64,
    pub last_checkpoint: u64,
    pub fetched_objects: u64,
    pub stale_objects: u64,
    pub last_heartbeat_ms: Option<u64>,
    /// A hibernated replica with no instance at all (cold standby).
    pub cold: bool,
}

impl From<&ReplicaRecord> for ReplicaView {
    fn from(r: &ReplicaRecord) -> Self {
        ReplicaView {
            id: r.name.clone(),
            app: r.app_name.clone(),
            index: r.id.index,
            state: r.state,
            backend: r.backend.clone(),
            host: r.host.clone(),
            generation: r.generation,
            last_executed: r.last_executed,
            last_checkpoint: r.last_checkpoint,
            fetched_objects: r.fetched_objects,
            stale_objects: r.stale_objects,
            last_heartbeat_ms: r.last_heartbeat_ms,
            cold: r.cold,
        }
    }
}

/// One entry of the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub seq: u64,
    pub at_ms: u64,
    pub replica: Option<String>,
    pub app: Option<String>,
    pub kind: String,
    pub detail: String,
}

/// Event kind: an agreement node under `zz up` exited on its own (crash,
/// kill); its supervisor restarts it after a backoff.
pub const EVENT_NODE_EXITED: &str = "node-exited";
/// Event kind: `zz up` restarted an agreement node from its durable state.
pub const EVENT_NODE_RESTARTED: &str = "node-restarted";

/// A wake incident with its timings (unix ms): one fault episode of an
/// app. WAKE certificates that come while it is open, or within the quiet
/// window after it (see `certs::Tracker::with_quiet_ms`), join it instead of
/// opening another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub app: AppId,
    /// The seq of the certificate that opened it.
    pub seq: u64,
    /// Highest seq that joined it.
    pub last_seq: u64,
    /// The kind of the certificate that opened it.
    pub kind: zz_wire::IncidentKind,
    pub detected_at: u64,
    pub woken: Option<u64>,
    /// When the answers were certified again after the last WAKE it absorbed
    /// (cleared while a joined WAKE keeps it open).
    pub certified_at: Option<u64>,
    pub faulty: Vec<ReplicaId>,
    pub replaced: Vec<ReplicaId>,
    /// WAKE certificates that joined it after the one that opened it.
    /// Fields below are absent in stores written before coalescing.
    #[serde(default)]
    pub coalesced: u64,
    /// The kinds of its WAKE certificates, in the order first seen.
    #[serde(default)]
    pub kinds: Vec<zz_wire::IncidentKind>,
    /// Only an answer certified at or after this seq ends it: the seq of the
    /// WAKE that reopened it after it was certified (none until then), so
    /// straggling votes about the earlier seqs do not.
    #[serde(default)]
    pub answer_from: Option<u64>,
    /// The last WAKE or FAULT certificate that joined it (unix ms, 0 if
    /// none after it opened): its quiet window counts from this or from
    /// `certified_at`, whichever is later.
    #[serde(default)]
    pub last_joined_at: u64,
}

impl Incident {
    /// From the first detection to the first certified answer after the
    /// last WAKE the incident absorbed: the whole episode, not its first
    /// certificate alone.
    pub fn recovery_ms(&self) -> Option<u64> {
        self.certified_at.map(|c| c.saturating_sub(self.detected_at))
    }

    pub fn is_open(&self) -> bool {
        self.certified_at.is_none()
    }

    pub fn covers(&self, seq: u64) -> bool {
        (self.seq..=self.last_seq).contains(&seq)
    }

    /// Whether a certificate at `now` still belongs to this episode: it is
    /// open, or was certified, and last joined, less than `quiet_ms` ago.
    pub fn joinable(&self, now: u64, quiet_ms: u64) -> bool {
        match self.certified_at {
            None => true,
            Some(c) => now.saturating_sub(c.max(self.last_joined_at)) < quiet_ms,
        }
    }

    /// A further WAKE certificate, for `seq`, joins the episode; it is open
    /// again until an answer at or after `seq` is certified.
    pub fn join(&mut self, seq: u64, kind: zz_wire::IncidentKind, now: u64) {
        self.last_seq = self.last_seq.max(seq);
        self.coalesced = self.coalesced.saturating_add(1);
        if !self.kinds.contains(&kind) {
            self.kinds.push(kind);
        }
        if self.certified_at.take().is_some() {
            self.answer_from = Some(seq);
        }
        self.last_joined_at = now;
    }

    /// Whether a certified answer at `seq` ends the open incident.
    pub fn answered_by(&self, seq: u64) -> bool {
        // A checkpoint WAKE may reopen it below the seq that opened it.
        (self.answer_from.unwrap_or(self.seq)..=self.last_seq).contains(&seq)
    }

    /// The kinds to report: stores written before coalescing kept only one.
    pub fn all_kinds(&self) -> Vec<zz_wire::IncidentKind> {
        if self.kinds.is_empty() {
            vec![self.kind]
        } else {
            self.kinds.clone()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IncidentView {
    pub id: u64,
    pub app: String,
    pub seq: u64,
    pub last_seq: u64,
    pub kind: String,
    pub detected_at: u64,
    pub woken: Option<u64>,
    pub certified_at: Option<u64>,
    pub faulty: Vec<String>,
    pub replaced: Vec<String>,
    /// From detection to the first certified answer after the last WAKE
    /// the incident absorbed.
    pub recovery_ms: Option<u64>,
    /// WAKE certificates of the same fault episode that joined this
    /// incident instead of opening their own (seqs `seq..=last_seq`).
    pub coalesced: u64,
    /// The kinds of all its WAKE certificates, in the order first seen.
    pub kinds: Vec<String>,
}

/// What was injected: a replica fault or an agreement node fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    Replica(zz_wire::ReplicaFault),
    Node(zz_wire::NodeFault),
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Replica(k) => k.as_str(),
            FaultKind::Node(k) => k.as_str(),
        }
    }
}

/// An injected fault (persisted, so an expiry survives a restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub id: u64,
    pub target: zz_wire::Principal,
    pub target_name: String,
    pub kind: FaultKind,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// Whether the Control reached a live link.
    pub delivered: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FaultView {
    pub id: u64,
    pub target: String,
    pub kind: String,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub delivered: bool,
}

impl From<&FaultRecord> for FaultView {
    fn from(f: &FaultRecord) -> Self {
        FaultView {
            id: f.id,
            target: f.target_name.clone(),
            kind: f.kind.as_str().to_string(),
            created_at: f.created_at,
            expires_at: f.expires_at,
            delivered: f.delivered,
        }
    }
}

/// An agreement node's progress on one app, from its heartbeats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeAppStatus {
    pub app: String,
    pub view: u64,
    pub last_committed: u64,
    pub stable_checkpoint: u64,
    pub at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    /// `a0`
    pub id: String,
    pub addr: String,
    pub connected: bool,
    /// Highest over the apps, for a quick look.
    pub view: u64,
    pub last_committed: u64,
    pub stable_checkpoint: u64,
    pub last_heartbeat_ms: Option<u64>,
    pub apps: Vec<NodeAppStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    pub f: usize,
    pub apps: Vec<String>,
    pub agreement: Vec<NodeView>,
}

/// Where the controller reads the time: the system clock, or one its owner
/// moves (the whole-system simulator runs the controller in virtual time).
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<std::sync::Arc<std::sync::atomic::AtomicU64>>);

impl Clock {
    pub fn system() -> Clock {
        Clock(None)
    }

    /// Reads `at` (Unix milliseconds, or any origin the owner keeps).
    pub fn manual(at: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Clock {
        Clock(Some(at))
    }

    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(at) => at.load(std::sync::atomic::Ordering::Relaxed),
            None => now_ms(),
        }
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
