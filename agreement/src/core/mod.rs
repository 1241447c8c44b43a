//! The PBFT replica for one app's ordered log, as a pure state machine.
//!
//! `Core::step(now_ms, input) -> Vec<Action>`: no sockets, no clock, no rng.
//! The driver verifies signatures before handing messages in, carries out the
//! actions in order, and feeds timers back as inputs.
//!
//! CONTRACT (used by the driver in `crate::node`; change only together with it):
//! - `Core::new(Config, Identity)`; `Core::restore(Config, Identity, Durable)`
//! - `Core::step(&mut self, now_ms: u64, input: Input) -> Vec<Action>`
//! - read-only accessors: `view()`, `primary()`, `last_committed()`,
//!   `stable_checkpoint()`, `is_primary()`.

use zz_wire::{AppId, ClientBatch, Digest, Identity, Msg, NodeFault, NodeId, Proposal, Seq, Signed, Timing, View};

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
}

/// Timers the core asks for; each comes back as `Input::Timer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerId {
    /// Primary: cut the current batch even if it is not full.
    Batch,
    /// Backup: a request it knows of was not committed in time (PBFT §4.4).
    ViewChange(View),
    /// Resend the view-change / fetch-log messages if nothing moved.
    Retransmit,
}

/// What the driver hands the core. Messages are already signature-checked.
#[derive(Clone, Debug)]
pub enum Input {
    /// From a client (directly or forwarded by a backup).
    Request(Signed<ClientBatch>),
    /// From another agreement node: PrePrepare, Prepare, Commit, LogCheckpoint,
    /// ViewChange, NewView, LogFetch, LogEntries. Other variants are ignored.
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
    SetTimer(TimerId, u64),
    CancelTimer(TimerId),
    /// Write to stable storage before anything after it is sent.
    Persist(Durable),
    /// `seq` is committed with this proposal. Emitted exactly once per seq, in
    /// seq order with no gaps (including seqs learned through `LogEntries`).
    Deliver { seq: Seq, digest: Digest, proposal: Proposal },
    /// The node entered `view` (for metrics and client replies).
    ViewChanged(View),
}

/// What survives a restart: enough to rejoin without voting inconsistently.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Durable {
    pub view: View,
    pub last_committed: Seq,
    /// Chain digest of the committed log up to `last_committed`.
    pub log_digest: Digest,
    pub stable_checkpoint: Seq,
}

pub struct Core {
    _todo: (),
}

impl Core {
    pub fn new(_config: Config, _id: Identity) -> Self {
        unimplemented!("PBFT core")
    }

    pub fn restore(_config: Config, _id: Identity, _durable: Durable) -> Self {
        unimplemented!("PBFT core")
    }

    pub fn step(&mut self, _now_ms: u64, _input: Input) -> Vec<Action> {
        unimplemented!("PBFT core")
    }

    pub fn view(&self) -> View {
        unimplemented!()
    }

    pub fn primary(&self) -> NodeId {
        unimplemented!()
    }

    pub fn is_primary(&self) -> bool {
        unimplemented!()
    }

    pub fn last_committed(&self) -> Seq {
        unimplemented!()
    }

    pub fn stable_checkpoint(&self) -> Seq {
        unimplemented!()
    }
}
