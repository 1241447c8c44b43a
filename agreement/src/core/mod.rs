//! The PBFT replica for one app's ordered log, as a pure state machine.
//!
//! `Core::step(now_ms, input) -> Vec<Action>`: no sockets, no clock, no rng.
//! The driver verifies signatures before handing messages in, carries out the
//! actions in order, and feeds timers back as inputs.
//!
//! CONTRACT (used by the driver in `crate::node`; change only together with it):
//! - `Core::new(Config, Identity)`; `Core::restore(Config, Identity, Durable, Vec<Record>)`
//! - `Core::step(&mut self, now_ms: u64, input: Input) -> Vec<Action>`
//! - read-only accessors: `view()`, `primary()`, `last_committed()`,
//!   `stable_checkpoint()`, `is_primary()`.
//!
//! Handlers live in one file per protocol part: `normal` (PBFT §4.2 and
//! request batching), `checkpoint` (§4.3 and log catch-up), `viewchange`
//! (§4.4, §4.5.2) with nested-proof checks in `validate`.

mod bodies;
mod checkpoint;
mod dedup;
mod durable;
mod log;
mod monitor;
mod normal;
pub mod quorum;
mod validate;
mod viewchange;

#[cfg(test)]
mod tests;

use dedup::{Dedup, ReqKey};
use log::{Archive, Slot};
use quorum::{Thresholds, Votes};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use zz_wire::{
    AppId, ClientBatch, ClientId, Digest, Hasher, Identity, Keyring, LogCheckpoint, Msg, NewView, NodeFault, NodeId,
    Principal, Proposal, Seq, Signable, Signed, Timing, View, ViewChange,
};

pub use durable::{Durable, Record, RecordKey, RecordKind};
pub use log::Certificate;
pub use validate::Reject;

/// Static parameters of one app's PBFT instance on one node.
#[derive(Clone, Debug)]
pub struct Config {
    pub me: NodeId,
    pub app: AppId,
    pub f: usize,
    pub timing: Timing,
    /// PBFT checkpoint period K (LogCheckpoint every K seqs).
    pub checkpoint_interval: u64,
    /// Mixed with (view, seq) to derive each batch's random seed, so the core
    /// needs no rng; the driver draws it from the OS at start-up.
    pub seed_source: u64,
    /// Public keys of the deployment, for signatures nested in proposals,
    /// view changes and new views.
    pub keys: Keyring,
}

/// Timers the core asks for; each comes back as `Input::Timer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerId {
    /// Primary: cut the current batch even if it is not full.
    Batch,
    /// Backup: a request it knows of was not committed in time (PBFT §4.4).
    ViewChange(View),
    /// Resend the view-change / fetch-log / fetch-body messages if nothing moved.
    Retransmit,
}

/// What the driver hands the core. Messages are already signature-checked.
#[derive(Clone, Debug)]
pub enum Input {
    /// From a client (directly or forwarded by a backup).
    Request(Signed<ClientBatch>),
    /// From another agreement node: PrePrepare, Prepare, Commit, LogCheckpoint,
    /// ViewChange, NewView, LogFetch, LogEntries, BodyFetch, Bodies. Other
    /// variants are ignored.
    Peer(Msg),
    Timer(TimerId),
    /// Orchestrator-injected misbehaviour for demos and tests (`equivocate`,
    /// `mute`); `None` clears it.
    SetFault(Option<NodeFault>),
}

/// What the core asks the driver to do. **Order is a promise**: the driver
/// carries actions out in list order, and finishes a `Persist` before any
/// later action's message leaves the node.
#[derive(Clone, Debug)]
pub enum Action {
    Send(NodeId, Msg),
    /// To every other agreement node.
    Broadcast(Msg),
    /// Fire `Input::Timer(id)` after this many milliseconds; replaces a
    /// pending timer with the same id.
    SetTimer(TimerId, u64),
    CancelTimer(TimerId),
    /// Write to stable storage before anything after it is sent.
    Persist(Durable),
    /// Append to the write-ahead log before **any** later action is carried
    /// out: a commit vote, a delivery and everything else after it depend
    /// on it (PBFT's log on stable storage; `Durable` snapshots prune it).
    Record(Record),
    /// `seq` is committed with this proposal. Emitted exactly once per seq, in
    /// seq order with no gaps (including seqs learned through `LogEntries`).
    /// A restored core starts again after its last recorded delivery.
    Deliver {
        seq: Seq,
        digest: Digest,
        proposal: Proposal,
    },
    /// The node entered `view` (for metrics and client replies).
    ViewChanged(View),
}

/// Counters for metrics and tests: every dropped input is counted once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Malformed, unauthorised or inconsistent inputs (bad nested proof,
    /// wrong digest, wrong author, equivocation, duplicate request...).
    pub dropped_invalid: u64,
    /// For a view, seq or checkpoint already passed.
    pub dropped_old: u64,
    /// For a view or seq beyond what this node accepts yet.
    pub dropped_future: u64,
    /// Requests refused because the pool is full.
    pub dropped_overload: u64,
    /// Pre-prepares refused for a timestamp out of bounds (no prepare sent).
    pub rejected_timestamps: u64,
    /// Pre-prepares refused for repeating a committed or pending client batch.
    pub rejected_duplicates: u64,
    /// View changes started because the primary's throughput fell below
    /// the recent best while requests waited (`monitor`, Aardvark).
    pub slow_primary_suspected: u64,
    /// View changes this node started.
    pub view_changes_started: u64,
    /// Peers' view changes whose proofs this node checked.
    pub view_changes_checked: u64,
    /// New views installed.
    pub view_changes: u64,
    pub proposed: u64,
    /// Seqs delivered.
    pub committed: u64,
    /// Of which learned from peers' `LogEntries`.
    pub fetched: u64,
    pub log_fetches: u64,
    /// New-view proposal bodies this node lacked and got from `Bodies`.
    pub bodies_fetched: u64,
    pub stable_checkpoints: u64,
    /// Our own checkpoint digest disagreed with a stable one (should stay 0).
    pub checkpoint_mismatch: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Normal,
    /// Sent a view change for `view`, waiting for its new view.
    ViewChange,
}

#[derive(Clone, Debug, Default)]
struct Stable {
    seq: Seq,
    digest: Digest,
    proof: Vec<Signed<LogCheckpoint>>,
}

/// A known, not yet committed client batch.
#[derive(Debug)]
struct Pooled {
    req: Signed<ClientBatch>,
    since_ms: u64,
    /// When a backup last forwarded it to the primary.
    forwarded_ms: u64,
}

/// Catch-up through `LogFetch`/`LogEntries`.
#[derive(Debug, Default)]
struct Fetch {
    /// Highest seq some evidence says is committed elsewhere.
    behind: Seq,
    /// Per seq, who vouched for which digest.
    votes: BTreeMap<Seq, Votes<()>>,
    /// Bodies not yet vouched for by f+1 peers, with the peer whose copy it
    /// is; `held` is what each peer's copies weigh (`FETCH_BYTES_PER_PEER`).
    bodies: BTreeMap<(Seq, Digest), (NodeId, Proposal)>,
    held: BTreeMap<NodeId, usize>,
    sent_ms: Option<u64>,
    sent_from: Seq,
}

impl Fetch {
    /// A body of `node`'s left `bodies`: it no longer counts against its budget.
    fn release(&mut self, node: NodeId, p: &Proposal) {
        if let Some(h) = self.held.get_mut(&node) {
            *h = h.saturating_sub(p.approx_bytes());
        }
    }
}

/// Most client batches waiting to be ordered before new ones are refused.
const MAX_POOL: usize = 1 << 17;
/// Most of them from one client, in count and in request bytes: a client
/// flooding the pool (a faulty one, or a gateway under attack) leaves the
/// rest to the others. A gateway keeps about one batch per concurrent web
/// client waiting (each at most 1 MiB), far below both.
pub const MAX_POOL_PER_CLIENT: usize = MAX_POOL / 8;
pub const POOL_BYTES_PER_CLIENT: usize = 256 << 20;
/// Request bytes of fetched, not yet vouched-for entries kept per peer.
pub(crate) const FETCH_BYTES_PER_PEER: usize = 16 << 20;
/// Checkpoint votes and fetched entries are kept this many windows ahead.
const AHEAD_WINDOWS: u64 = 4;

pub struct Core {
    cfg: Config,
    id: Identity,
    th: Thresholds,
    now: u64,
    started: bool,
    view: View,
    status: Status,
    /// The last view this node ran normally in, for timeout doubling.
    last_normal_view: View,
    log: BTreeMap<Seq, Slot>,
    /// Committed proposals kept below the stable checkpoint, to serve
    /// lagging peers.
    archive: Archive,
    last_committed: Seq,
    log_digest: Digest,
    /// Timestamp of the last delivered non-null proposal.
    last_ts: u64,
    stable: Stable,
    my_checkpoints: BTreeMap<Seq, Digest>,
    checkpoint_votes: BTreeMap<Seq, Votes<Signed<LogCheckpoint>>>,
    /// Highest checkpoint seq each peer announced.
    checkpoint_high: BTreeMap<NodeId, Seq>,
    pool: BTreeMap<ReqKey, Pooled>,
    /// Per client: its batches in `pool`, and their request bytes.
    pooled_by: BTreeMap<ClientId, (usize, usize)>,
    ages: BTreeSet<(u64, ReqKey)>,
    /// Requests older than this count from here (timers restart in a new view).
    age_floor: u64,
    /// Last time a delivered batch served a pooled request (restarts the
    /// backups' view-change timer, PBFT §4.5.2).
    last_progress: u64,
    /// Primary: pooled requests not yet proposed in this view, in arrival order.
    queue: VecDeque<ReqKey>,
    /// Requests in a pre-prepare of the current view not yet delivered.
    in_log: BTreeMap<ReqKey, Seq>,
    dedup: Dedup,
    next_seq: Seq,
    last_proposed_ts: u64,
    batch_armed: bool,
    batch_due: bool,
    vc_armed: bool,
    view_changes: BTreeMap<NodeId, Signed<ViewChange>>,
    /// When each peer's view change was last checked (one per period).
    vc_checked: BTreeMap<NodeId, u64>,
    my_view_change: Option<Signed<ViewChange>>,
    new_view: Option<Signed<NewView>>,
    fetch: Fetch,
    /// Per peer: where our last answer to its log fetch ended, and when.
    served: BTreeMap<NodeId, (Seq, u64)>,
    /// Per peer: when we last answered its body fetch.
    bodies_served: BTreeMap<NodeId, u64>,
    /// After a restart: no prepare/commit in views up to `.0` for seqs up to `.1`.
    passive: Option<(View, Seq)>,
    fault: Option<NodeFault>,
    /// Normal-case messages for the view being changed into that arrived
    /// before its new view; replayed once it is installed.
    early: Vec<Msg>,
    /// Highest view each peer sent normal-case messages in, above ours.
    ahead: BTreeMap<NodeId, View>,
    out: Vec<Action>,
    tick_committed: Seq,
    /// Aardvark's expectation of the primary's throughput.
    monitor: monitor::Monitor,
    stats: Stats,
}

impl Core {
    pub fn new(config: Config, id: Identity) -> Self {
        let th = Thresholds::new(config.f);
        Core {
            th,
            now: 0,
            started: false,
            view: 0,
            status: Status::Normal,
            last_normal_view: 0,
            log: BTreeMap::new(),
            archive: Archive::new(
                config.checkpoint_interval.max(config.timing.log_window),
                usize::try_from(config.timing.archive_max_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            ),
            last_committed: 0,
            log_digest: Digest::ZERO,
            last_ts: 0,
            stable: Stable::default(),
            my_checkpoints: BTreeMap::new(),
            checkpoint_votes: BTreeMap::new(),
            checkpoint_high: BTreeMap::new(),
            pool: BTreeMap::new(),
            pooled_by: BTreeMap::new(),
            ages: BTreeSet::new(),
            age_floor: 0,
            last_progress: 0,
            queue: VecDeque::new(),
            in_log: BTreeMap::new(),
            dedup: Dedup::default(),
            next_seq: 1,
            last_proposed_ts: 0,
            batch_armed: false,
            batch_due: false,
            vc_armed: false,
            view_changes: BTreeMap::new(),
            vc_checked: BTreeMap::new(),
            my_view_change: None,
            new_view: None,
            fetch: Fetch::default(),
            served: BTreeMap::new(),
            bodies_served: BTreeMap::new(),
            passive: None,
            fault: None,
            early: Vec::new(),
            ahead: BTreeMap::new(),
            out: Vec::new(),
            tick_committed: 0,
            monitor: monitor::Monitor::default(),
            stats: Stats::default(),
            cfg: config,
            id,
        }
    }

    /// Start-up actions (the periodic retransmit timer, a first log fetch
    /// after a restart). `step` calls it on its first input if the driver did not.
    pub fn start(&mut self, now_ms: u64) -> Vec<Action> {
        self.now = now_ms;
        self.ensure_started();
        std::mem::take(&mut self.out)
    }

    fn ensure_started(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        self.age_floor = self.now;
        self.monitor_restart();
        self.out
            .push(Action::SetTimer(TimerId::Retransmit, self.retransmit_ms()));
        self.maybe_fetch();
        self.rejoin_view();
    }

    pub fn step(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        self.now = self.now.max(now_ms);
        self.ensure_started();
        match input {
            Input::Request(r) => self.on_request(r),
            Input::Peer(m) => self.on_peer(m),
            Input::Timer(t) => self.on_timer(t),
            Input::SetFault(f) => self.fault = f,
        }
        let mut out = std::mem::take(&mut self.out);
        if self.fault == Some(NodeFault::Mute) {
            out.retain(|a| !matches!(a, Action::Send(..) | Action::Broadcast(_)));
        }
        out
    }

    fn on_peer(&mut self, msg: Msg) {
        let Some(Principal::Node(from)) = msg.author() else {
            if let Msg::Request(r) = msg {
                return self.on_request(r);
            }
            self.stats.dropped_invalid += 1;
            return;
        };
        if !self.th.is_node(from) || from == self.cfg.me {
            self.stats.dropped_invalid += 1;
            return;
        }
        match msg {
            Msg::PrePrepare(m) if m.body.app == self.cfg.app => self.on_pre_prepare(m),
            Msg::Prepare(m) if m.body.0.app == self.cfg.app => self.on_prepare(m),
            Msg::Commit(m) if m.0.app == self.cfg.app => self.on_commit(m),
            Msg::LogCheckpoint(m) if m.body.app == self.cfg.app => self.on_checkpoint(m),
            Msg::ViewChange(m) if m.body.app == self.cfg.app => self.on_view_change(m),
            Msg::NewView(m) if m.body.app == self.cfg.app => self.on_new_view(m),
            Msg::LogFetch(m) if m.body.app == self.cfg.app => self.on_log_fetch(m),
            Msg::LogEntries(m) if m.body.app == self.cfg.app => self.on_log_entries(m),
            Msg::BodyFetch(m) if m.body.app == self.cfg.app => self.on_body_fetch(m),
            Msg::Bodies(m) if m.body.app == self.cfg.app => self.on_bodies(m),
            _ => self.stats.dropped_invalid += 1,
        }
    }

    fn on_timer(&mut self, t: TimerId) {
        match t {
            TimerId::Batch => {
                self.batch_armed = false;
                self.batch_due = true;
                self.try_propose();
            }
            TimerId::ViewChange(v) => self.on_view_change_timer(v),
            TimerId::Retransmit => {
                self.on_retransmit();
                self.monitor_tick();
                self.out
                    .push(Action::SetTimer(TimerId::Retransmit, self.retransmit_ms()));
            }
        }
    }

    // ------------------------------------------------------------ accessors

    pub fn view(&self) -> View {
        self.view
    }

    pub fn primary(&self) -> NodeId {
        self.primary_of(self.view)
    }

    pub fn is_primary(&self) -> bool {
        self.primary() == self.cfg.me
    }

    pub fn last_committed(&self) -> Seq {
        self.last_committed
    }

    pub fn stable_checkpoint(&self) -> Seq {
        self.stable.seq
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True while a view change is under way (no new view installed yet).
    pub fn in_view_change(&self) -> bool {
        self.status == Status::ViewChange
    }

    /// Slots held in the log (above the stable checkpoint), for memory checks.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Committed proposals kept below the stable checkpoint for lagging peers.
    pub fn archive_len(&self) -> usize {
        self.archive.len()
    }

    /// Client batches known and not yet committed.
    pub fn pending_requests(&self) -> usize {
        self.pool.len()
    }

    /// What `restore` needs; also emitted as `Action::Persist`.
    pub fn durable(&self) -> Durable {
        Durable {
            view: self.view,
            last_committed: self.last_committed,
            log_digest: self.log_digest,
            stable_checkpoint: self.stable.seq,
            stable_digest: self.stable.digest,
            stable_proof: self.stable.proof.clone(),
            dedup: self.dedup.record(),
        }
    }

    // ------------------------------------------------------------ helpers

    fn primary_of(&self, view: View) -> NodeId {
        // n ≤ u16::MAX nodes, so the remainder fits.
        #[allow(clippy::cast_possible_truncation)]
        NodeId((view % self.th.n as u64) as u16)
    }

    fn low(&self) -> Seq {
        self.stable.seq
    }

    fn high(&self) -> Seq {
        self.stable.seq + self.cfg.timing.log_window
    }

    fn retransmit_ms(&self) -> u64 {
        (self.cfg.timing.view_change_timeout_ms / 4).max(1)
    }

    /// PBFT §4.5.2: the timeout doubles for each view change without progress.
    fn view_change_timeout(&self) -> u64 {
        let extra = self.view.saturating_sub(self.last_normal_view + 1).min(10);
        self.cfg.timing.view_change_timeout_ms << extra
    }

    fn can_vote(&self, view: View, seq: Seq) -> bool {
        self.passive.is_none_or(|(v, s)| view > v || seq > s)
    }

    fn persist(&mut self) {
        let d = self.durable();
        self.out.push(Action::Persist(d));
    }

    fn broadcast(&mut self, m: Msg) {
        self.out.push(Action::Broadcast(m));
    }

    fn send(&mut self, to: NodeId, m: Msg) {
        self.out.push(Action::Send(to, m));
    }

    fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        self.id.sign(body)
    }

    /// Random seed of a proposal, derived so that no rng is needed.
    fn seed_for(&self, view: View, seq: Seq) -> u64 {
        let d = Hasher::new("zz/nondet-seed/v1")
            .u64(self.cfg.seed_source)
            .u64(view)
            .u64(seq)
            .finish();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d.0[..8]);
        u64::from_le_bytes(b)
    }
}
