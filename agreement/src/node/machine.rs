//! The agreement node's protocol logic as a pure state machine: per app one
//! PBFT `Core`, one reply `Voter` and one `OrderLog`, plus the node's reply
//! cache, relay and `FETCH_ORDERS` budgets and injected fault. Inputs are
//! authenticated messages and fired timers, each with the time it happens
//! at; outputs are [`NodeOut`]s carried out in order. No clock, no rng, no
//! socket, no disk: the TCP driver (`super::run`) and a whole-system
//! simulator run this same code.

use super::orders::{FetchBudget, OrderLog};
use super::relay::RelayBudget;
use super::replies::ReplyCache;
use super::store::Write;
use crate::core::{Action, Config as CoreConfig, Core, Durable, Input, Record, TimerId};
use crate::voting::{VoteAction, VoteInput, Voter, VoterConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use zz_wire::{
    AppId, ClientReply, ControlCmd, Deployment, Fault, Heartbeat, Identity, Keyring, Msg, NodeFault, NodeId,
    OrdersReply, Principal, ReplicaId, Resolved, Seq, Wake,
};

/// How often the node reports its progress to the orchestrator.
pub const HEARTBEAT_MS: u64 = 500;
/// Exit code of an injected crash.
pub const CRASH_EXIT_CODE: i32 = 3;

/// Timers the machine asks for; each comes back through `on_timer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeTimer {
    Core(AppId, TimerId),
    Reply(AppId, Seq),
    Heartbeat,
}

/// What the machine asks its driver to do. **Order is a promise**: outs are
/// carried out in list order, across steps too, and a `Write` is durable
/// before anything after it (of the same or a later step) is carried out.
/// Between writes, a driver may batch: one sync serves every write of a
/// burst of inputs if everything after the first write waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeOut {
    /// Must be durable before ANY later `NodeOut` of the same or later steps
    /// is carried out.
    Write(Write),
    ToPeer(NodeId, Msg),
    /// To every other agreement node.
    ToPeers(Msg),
    ToOrchestrator(Msg),
    /// On the link that principal dialled in on (clients, replicas); dropped
    /// if there is none.
    ToInbound(Principal, Msg),
    /// To every connected replica of the app.
    ToReplicas(AppId, Msg),
    /// Fire `NodeTimer` after this many milliseconds; replaces a pending
    /// arming of the same timer.
    SetTimer(NodeTimer, u64),
    CancelTimer(NodeTimer),
    /// Stop the process now with this code (an injected crash). Carried out
    /// at once, ahead of writes still waiting for their sync: a crash loses
    /// them as a power cut would, and nothing that depended on them has left.
    /// The machine is not fed again; a restart builds a new one from the store.
    Exit(i32),
}

impl NodeOut {
    /// A message leaving the node (what a muted node holds back).
    pub fn is_send(&self) -> bool {
        matches!(
            self,
            NodeOut::ToPeer(..)
                | NodeOut::ToPeers(_)
                | NodeOut::ToOrchestrator(_)
                | NodeOut::ToInbound(..)
                | NodeOut::ToReplicas(..)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("identity {0} is not an agreement node")]
    NotANode(Principal),
}

struct App {
    core: Core,
    voter: Voter,
    orders: OrderLog,
}

pub struct NodeMachine {
    me: NodeId,
    id: Identity,
    dep: Arc<Deployment>,
    apps: BTreeMap<AppId, App>,
    fault: Option<NodeFault>,
    control_nonce: u64,
    replies: ReplyCache,
    relay: RelayBudget,
    fetches: FetchBudget,
    /// What the current step has produced so far.
    out: Vec<NodeOut>,
}

impl NodeMachine {
    /// One core per app of the deployment, restored from `restored` where
    /// the store held something for it. `seed_source` is mixed into every
    /// batch's random seed (the driver draws it from the OS).
    pub fn new(
        dep: Arc<Deployment>,
        identity: Identity,
        restored: BTreeMap<AppId, (Durable, Vec<Record>)>,
        seed_source: u64,
    ) -> Result<Self, MachineError> {
        let keys = dep.keyring();
        Self::with_keys(dep, identity, keys, restored, seed_source)
    }

    /// `new` checking signatures with `keys` (the deployment's keys; the
    /// simulator's keyring remembers signatures found valid).
    pub fn with_keys(
        dep: Arc<Deployment>,
        identity: Identity,
        keys: Keyring,
        mut restored: BTreeMap<AppId, (Durable, Vec<Record>)>,
        seed_source: u64,
    ) -> Result<Self, MachineError> {
        let me = match identity.who {
            Principal::Node(n) => n,
            other => return Err(MachineError::NotANode(other)),
        };
        let mut apps = BTreeMap::new();
        for app in dep.app_ids() {
            let cfg = CoreConfig {
                me,
                app,
                f: dep.f,
                timing: dep.timing.clone(),
                checkpoint_interval: dep.checkpoint_interval,
                seed_source,
                keys: keys.clone(),
            };
            let core = match restored.remove(&app) {
                Some((d, records)) => {
                    tracing::info!(%me, app = app.0, view = d.view, last = d.last_committed, records = records.len(), "restoring");
                    Core::restore(cfg, identity.clone(), d, records)
                }
                None => Core::new(cfg, identity.clone()),
            };
            let voter = Voter::new(VoterConfig {
                app,
                f: dep.f,
                replicas: dep.replicas_per_app(),
                reply_timeout_ms: dep.timing.reply_timeout_ms,
                checkpoint_interval: dep.checkpoint_interval,
            });
            let orders = OrderLog::new(app, me, dep.n(), dep.f);
            apps.insert(app, App { core, voter, orders });
        }
        Ok(NodeMachine {
            me,
            id: identity,
            dep,
            apps,
            fault: None,
            control_nonce: 0,
            replies: ReplyCache::default(),
            relay: RelayBudget::default(),
            fetches: FetchBudget::default(),
            out: Vec::new(),
        })
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn fault(&self) -> Option<NodeFault> {
        self.fault
    }

    pub fn core(&self, app: AppId) -> Option<&Core> {
        self.apps.get(&app).map(|a| &a.core)
    }

    pub fn voter(&self, app: AppId) -> Option<&Voter> {
        self.apps.get(&app).map(|a| &a.voter)
    }

    /// Arms the heartbeat and the cores' periodic timers; a restored core
    /// starts catching up.
    pub fn start(&mut self, now_ms: u64) -> Vec<NodeOut> {
        self.emit(NodeOut::SetTimer(NodeTimer::Heartbeat, HEARTBEAT_MS));
        let apps: Vec<AppId> = self.apps.keys().copied().collect();
        for app in apps {
            if let Some(a) = self.apps.get_mut(&app) {
                let actions = a.core.start(now_ms);
                self.apply(app, now_ms, actions);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// One message, already authenticated by the link it came on.
    pub fn on_msg(&mut self, now_ms: u64, from: Principal, msg: Msg) -> Vec<NodeOut> {
        self.dispatch(now_ms, from, msg);
        std::mem::take(&mut self.out)
    }

    pub fn on_timer(&mut self, now_ms: u64, t: NodeTimer) -> Vec<NodeOut> {
        match t {
            NodeTimer::Core(app, t) => self.core_step(app, now_ms, Input::Timer(t)),
            NodeTimer::Reply(app, seq) => self.vote_step(app, now_ms, VoteInput::Timer(seq)),
            NodeTimer::Heartbeat => {
                self.heartbeat(now_ms);
                self.emit(NodeOut::SetTimer(NodeTimer::Heartbeat, HEARTBEAT_MS));
            }
        }
        std::mem::take(&mut self.out)
    }

    fn dispatch(&mut self, now: u64, from: Principal, msg: Msg) {
        // Peer protocol messages go to their app's core whole (moved: a
        // pre-prepare carries the batch's every request).
        let peer_app = match &msg {
            Msg::PrePrepare(m) => Some(m.body.app),
            Msg::Prepare(m) => Some(m.body.0.app),
            Msg::Commit(m) => Some(m.0.app),
            Msg::LogCheckpoint(m) => Some(m.body.app),
            Msg::ViewChange(m) => Some(m.body.app),
            Msg::NewView(m) => Some(m.body.app),
            Msg::LogFetch(m) => Some(m.body.app),
            Msg::LogEntries(m) => Some(m.body.app),
            Msg::BodyFetch(m) => Some(m.body.app),
            Msg::Bodies(m) => Some(m.body.app),
            _ => None,
        };
        if let Some(app) = peer_app {
            return self.core_step(app, now, Input::Peer(msg));
        }
        match msg {
            Msg::Request(r) => {
                let b = &r.body;
                if let Some(done) = self.replies.get(b.app, b.client, b.first_id) {
                    // Executed already: the client lost our answer.
                    metrics::counter!("zz_agreement_replies_resent_total").increment(1);
                    let msg = Msg::Reply(ClientReply {
                        node: self.me,
                        app: b.app,
                        view: self.apps.get(&b.app).map_or(0, |a| a.core.view()),
                        client: b.client,
                        results: vec![done.clone()],
                    });
                    self.emit(NodeOut::ToInbound(Principal::Client(b.client), msg));
                    return;
                }
                let app = r.body.app;
                self.core_step(app, now, Input::Request(r));
            }
            Msg::ExecReply(r) => {
                let app = r.replica.app;
                self.vote_step(app, now, VoteInput::Reply(r));
            }
            Msg::ExecCheckpoint(c) => {
                let app = c.body.replica.app;
                self.vote_step(app, now, VoteInput::Checkpoint(c));
            }
            Msg::FetchOrders(f) => {
                if self.fetches.allow(from, now) {
                    self.serve_orders(from, f.body.replica, f.body.from, f.body.to);
                } else {
                    metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "fetch-orders-budget")
                        .increment(1);
                    tracing::debug!(%from, "FETCH_ORDERS past its budget");
                }
            }
            Msg::StateRequest(ref r) => {
                let (from, to) = (r.body.from, r.body.to);
                self.relay_state(from, to, now, msg);
            }
            Msg::StateResponse(ref r) => {
                let (from, to) = (r.body.from, r.body.to);
                self.relay_state(from, to, now, msg);
            }
            Msg::Control(c) => self.on_control(c.body.target, c.body.nonce, c.body.cmd, now),
            // Replicas heartbeat their node links so a link that died unseen
            // (a restored VM) fails on send; the voter learns from it that a
            // replica silent for a seq is alive and behind it.
            Msg::Heartbeat(h) => {
                if let (Principal::Replica(r), true) = (from, h.body.from == from) {
                    let last_executed = h.body.last_executed;
                    self.vote_step(
                        r.app,
                        now,
                        VoteInput::Progress {
                            replica: r,
                            last_executed,
                        },
                    );
                }
            }
            other => {
                metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "unexpected").increment(1);
                tracing::debug!(%from, kind = other.kind(), "unexpected message kind");
            }
        }
    }

    fn on_control(&mut self, target: Principal, nonce: u64, cmd: ControlCmd, now: u64) {
        if target != Principal::Node(self.me) || nonce <= self.control_nonce {
            metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "control").increment(1);
            return;
        }
        self.control_nonce = nonce;
        let fault = match cmd {
            ControlCmd::SetNodeFault(k) => Some(k),
            ControlCmd::ClearFaults => None,
            ControlCmd::SetFault(_) => return,
        };
        tracing::warn!(me = %self.me, ?fault, "fault injection");
        if fault == Some(NodeFault::Crash) {
            // Injected crash: stop at once, as a power cut would.
            self.emit(NodeOut::Exit(CRASH_EXIT_CODE));
            return;
        }
        self.fault = fault;
        let apps: Vec<AppId> = self.apps.keys().copied().collect();
        for app in apps {
            self.core_step(app, now, Input::SetFault(fault));
        }
    }

    fn serve_orders(&mut self, from: Principal, replica: ReplicaId, lo: Seq, hi: Seq) {
        let Some(app) = self.apps.get(&replica.app) else {
            return;
        };
        let reply = OrdersReply {
            node: self.me,
            app: replica.app,
            stable: app.orders.stable().cloned(),
            orders: app.orders.range(lo, hi),
        };
        let msg = Msg::OrdersReply(self.id.sign(reply));
        self.emit(NodeOut::ToInbound(from, msg));
    }

    fn core_step(&mut self, app: AppId, now: u64, input: Input) {
        let Some(a) = self.apps.get_mut(&app) else {
            metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "unknown-app").increment(1);
            return;
        };
        let started = a.core.stats().view_changes_started;
        let actions = a.core.step(now, input);
        if a.core.stats().view_changes_started > started {
            let s = a.core.stats();
            tracing::warn!(
                me = %self.me,
                app = app.0,
                view = a.core.view(),
                slow_primary = s.slow_primary_suspected,
                pending = a.core.pending_requests(),
                "started a view change"
            );
        }
        self.apply(app, now, actions);
    }

    /// The core's actions as outs, in order: `Persist` and `Record` become
    /// writes where they stand, so whatever the core put after them waits
    /// for them (`Action`'s order promise carries over to `NodeOut`'s).
    fn apply(&mut self, app: AppId, now: u64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Persist(d) => self.emit(NodeOut::Write(Write::Snapshot(app, d))),
                Action::Record(r) => self.emit(NodeOut::Write(Write::Record(app, r))),
                Action::Send(to, msg) => self.emit(NodeOut::ToPeer(to, msg)),
                Action::Broadcast(msg) => self.emit(NodeOut::ToPeers(msg)),
                Action::SetTimer(t, ms) => self.emit(NodeOut::SetTimer(NodeTimer::Core(app, t), ms)),
                Action::CancelTimer(t) => self.emit(NodeOut::CancelTimer(NodeTimer::Core(app, t))),
                Action::Deliver { seq, digest, proposal } => {
                    metrics::counter!("zz_agreement_committed_total").increment(1);
                    let Some(a) = self.apps.get_mut(&app) else {
                        continue;
                    };
                    let order = a.orders.commit(seq, digest, proposal);
                    self.emit(NodeOut::ToReplicas(app, Msg::Order(order)));
                    self.vote_step(app, now, VoteInput::Committed { seq });
                }
                Action::ViewChanged(v) => {
                    metrics::counter!("zz_agreement_view_changes_total").increment(1);
                    tracing::info!(me = %self.me, app = app.0, view = v, "entered view");
                }
            }
        }
    }

    fn vote_step(&mut self, app: AppId, now: u64, input: VoteInput) {
        let Some(a) = self.apps.get_mut(&app) else {
            metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "unknown-app").increment(1);
            return;
        };
        let view = a.core.view();
        let actions = a.voter.step(now, input);
        for action in actions {
            match action {
                VoteAction::ClientReply { client, results, .. } => {
                    self.replies.insert(app, &results);
                    let msg = Msg::Reply(ClientReply {
                        node: self.me,
                        app,
                        view,
                        client,
                        results,
                    });
                    self.emit(NodeOut::ToInbound(Principal::Client(client), msg));
                }
                VoteAction::Wake { seq, kind } => {
                    tracing::warn!(me = %self.me, app = app.0, seq, kind = kind.as_str(), "incident: asking to wake standbys");
                    let msg = Msg::Wake(self.id.sign(Wake {
                        node: self.me,
                        app,
                        seq,
                        kind,
                    }));
                    self.emit(NodeOut::ToOrchestrator(msg));
                }
                VoteAction::Fault {
                    replica,
                    seq,
                    certified,
                    theirs,
                } => {
                    tracing::warn!(me = %self.me, replica = %self.dep.replica_name(replica), seq, "replica disagreed with the certified result");
                    let msg = Msg::Fault(self.id.sign(Fault {
                        node: self.me,
                        replica,
                        seq,
                        certified_digest: certified,
                        their_digest: theirs,
                    }));
                    self.emit(NodeOut::ToOrchestrator(msg));
                }
                VoteAction::Resolved { seq } => {
                    let msg = Msg::Resolved(self.id.sign(Resolved {
                        node: self.me,
                        app,
                        seq,
                    }));
                    self.emit(NodeOut::ToOrchestrator(msg));
                }
                VoteAction::Stable(cert) => {
                    let msg = Msg::CheckpointCert(cert.clone());
                    if let Some(a) = self.apps.get_mut(&app) {
                        a.orders.set_stable(cert);
                    }
                    self.emit(NodeOut::ToReplicas(app, msg));
                }
                VoteAction::SetTimer { seq, after_ms } => {
                    self.emit(NodeOut::SetTimer(NodeTimer::Reply(app, seq), after_ms));
                }
            }
        }
    }

    fn heartbeat(&mut self, now: u64) {
        let beats: Vec<Msg> = self
            .apps
            .iter()
            .map(|(app, a)| {
                Msg::Heartbeat(self.id.sign(Heartbeat {
                    from: Principal::Node(self.me),
                    app: *app,
                    view: a.core.view(),
                    last_executed: a.core.last_committed(),
                    // The execution checkpoint the replicas certified (what
                    // a standby must reach, and what closes incidents).
                    last_checkpoint: a.voter.stable_seq(),
                    fetched_objects: 0,
                    stale_objects: 0,
                    time_ms: now,
                }))
            })
            .collect();
        for msg in beats {
            self.emit(NodeOut::ToOrchestrator(msg));
        }
    }

    /// Relays a replica's state message to its addressee, within the
    /// sender's budget.
    fn relay_state(&mut self, from: ReplicaId, to: ReplicaId, now: u64, msg: Msg) {
        if self.relay.allow(from, to, now) {
            self.emit(NodeOut::ToInbound(Principal::Replica(to), msg));
        } else {
            metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "relay-budget").increment(1);
        }
    }

    /// Queues `out` for the caller; a muted node sends nothing (it still
    /// writes, arms timers and crashes).
    fn emit(&mut self, out: NodeOut) {
        if out.is_send() && self.fault == Some(NodeFault::Mute) {
            return;
        }
        self.out.push(out);
    }
}

#[cfg(test)]
mod tests;
