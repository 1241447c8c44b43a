//! The agreement node driver: TCP links, clock, timers and storage around
//! one PBFT `Core` and one reply `Voter` per app. A single task owns all
//! protocol state and runs `select!` over its inbox, its timers and shutdown.

pub mod links;
mod orders;
mod relay;
mod replies;
mod store;
mod timers;

pub use links::{allowed, authorised};
pub use orders::{OrderLog, MAX_ORDERS_PER_REPLY};
pub use store::{MemStore, NodeStore, StoreError, Write};

use crate::core::{Action, Config as CoreConfig, Core, Input, TimerId};
use crate::voting::{VoteAction, VoteInput, Voter, VoterConfig};
use bytes::Bytes;
use links::{Event, Outbox, EVENT_QUEUE};
use replies::ReplyCache;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use timers::Timers;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use zz_wire::frame::encode;
use zz_wire::{
    AppId, ClientReply, ControlCmd, Deployment, Fault, Heartbeat, Identity, Keyring, Msg, NodeFault, NodeId,
    OrdersReply, Principal, ReplicaId, Resolved, Seq, Wake,
};

pub struct NodeConfig {
    pub deployment: Arc<Deployment>,
    pub identity: Identity,
    pub data_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TimerKey {
    Core(AppId, TimerId),
    Reply(AppId, Seq),
    Heartbeat,
}

const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a `slow` node holds each burst of work.
const SLOW_DELAY: Duration = Duration::from_millis(50);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct App {
    core: Core,
    voter: Voter,
    orders: OrderLog,
}

struct Node {
    me: NodeId,
    id: Identity,
    dep: Arc<Deployment>,
    store: NodeStore,
    apps: BTreeMap<AppId, App>,
    peers: BTreeMap<NodeId, Outbox>,
    orchestrator: Outbox,
    /// Links that others dialled in on (latest per principal wins); replicas
    /// and clients are answered on these.
    inbound: HashMap<Principal, (u64, Outbox)>,
    timers: Timers<TimerKey>,
    fault: Option<NodeFault>,
    control_nonce: u64,
    /// Writes the cores asked for since the last `flush`, and every action
    /// that came after the first of them: those wait for the writes to be
    /// on disk (`Action`'s order promise), so one sync serves a whole burst.
    writes: Vec<Write>,
    deferred: Vec<(AppId, u64, Action)>,
    replies: ReplyCache,
    relay: relay::RelayBudget,
}

/// Runs an agreement node until `shutdown` resolves.
pub async fn run(cfg: NodeConfig, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let dep = cfg.deployment.clone();
    let me = match cfg.identity.who {
        Principal::Node(n) => n,
        other => anyhow::bail!("identity {other} is not an agreement node"),
    };
    let keys: Arc<Keyring> = Arc::new(dep.keyring());
    std::fs::create_dir_all(&cfg.data_dir)?;
    let store = NodeStore::open(&cfg.data_dir.join("node.redb"))?;
    let (ev_tx, mut ev_rx) = mpsc::channel(EVENT_QUEUE);
    let mut tasks = JoinSet::new();
    let inbox = links::Inbox::new(keys.clone(), ev_tx, &mut tasks);
    tasks.spawn(links::accept_loop(
        listener,
        cfg.identity.clone(),
        keys.clone(),
        inbox.clone(),
    ));
    let peers = links::dial_nodes(&dep, Some(me), &cfg.identity, &keys, &inbox, &mut tasks)?;
    let (orch_tx, orch_rx) = links::outbox();
    tasks.spawn(links::dial_loop(
        dep.orchestrator.addr,
        Principal::Orchestrator,
        orch_rx,
        cfg.identity.clone(),
        keys.clone(),
        inbox,
    ));

    let seed_source = rand::random::<u64>();
    let mut apps = BTreeMap::new();
    for app in dep.app_ids() {
        let core_cfg = CoreConfig {
            me,
            app,
            f: dep.f,
            timing: dep.timing.clone(),
            checkpoint_interval: dep.checkpoint_interval,
            seed_source,
            keys: (*keys).clone(),
        };
        let core = match store.load(app)? {
            Some((d, records)) => {
                tracing::info!(%me, app = app.0, view = d.view, last = d.last_committed, records = records.len(), "restoring");
                Core::restore(core_cfg, cfg.identity.clone(), d, records)
            }
            None => Core::new(core_cfg, cfg.identity.clone()),
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
    let mut node = Node {
        me,
        id: cfg.identity,
        dep,
        store,
        apps,
        peers,
        orchestrator: orch_tx,
        inbound: HashMap::new(),
        timers: Timers::new(),
        fault: None,
        control_nonce: 0,
        writes: Vec::new(),
        deferred: Vec::new(),
        replies: ReplyCache::default(),
        relay: relay::RelayBudget::default(),
    };
    node.timers.set(TimerKey::Heartbeat, Instant::now() + HEARTBEAT);
    let now = now_ms();
    let apps: Vec<AppId> = node.apps.keys().copied().collect();
    for app in apps {
        // Arms the core's periodic timers; a restored core starts catching up.
        let actions = match node.apps.get_mut(&app) {
            Some(a) => a.core.start(now),
            None => continue,
        };
        node.apply(app, now, actions)?;
    }
    node.flush()?;
    tracing::info!(%me, "agreement node running");

    // One timer for the loop's life, moved only when the next deadline
    // changes (a fresh one per turn is a timer-wheel insert and removal).
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(shutdown, timer);
    loop {
        let deadline = node
            .timers
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break };
                node.handle(ev)?;
                // Drain what else is queued before looking at timers again.
                for _ in 0..256 {
                    match ev_rx.try_recv() {
                        Ok(ev) => node.handle(ev)?,
                        Err(_) => break,
                    }
                }
                node.flush()?;
                if node.fault == Some(NodeFault::Slow) {
                    tokio::time::sleep(SLOW_DELAY).await;
                }
            }
            () = &mut timer => {
                node.fire_timers()?;
                node.flush()?;
            }
        }
    }
    node.flush()?;
    tasks.shutdown().await;
    tracing::info!(%me, "agreement node stopped");
    Ok(())
}

impl Node {
    fn handle(&mut self, ev: Event) -> anyhow::Result<()> {
        match ev {
            // Every inbound link is kept, peers' too: dropping its queue
            // would end the link's writer and with it the connection.
            Event::Up { who, conn, tx } => {
                self.inbound.insert(who, (conn, tx));
            }
            Event::Down { who, conn } => {
                if self.inbound.get(&who).is_some_and(|(c, _)| *c == conn) {
                    self.inbound.remove(&who);
                }
            }
            Event::Msg { from, msg } => self.on_msg(from, msg)?,
        }
        Ok(())
    }

    fn on_msg(&mut self, from: Principal, msg: Msg) -> anyhow::Result<()> {
        let now = now_ms();
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
                    self.send_inbound(Principal::Client(b.client), &msg);
                    return Ok(());
                }
                let app = r.body.app;
                self.core_step(app, now, Input::Request(r))?;
            }
            Msg::ExecReply(r) => {
                let app = r.replica.app;
                self.vote_step(app, now, VoteInput::Reply(r));
            }
            Msg::ExecCheckpoint(c) => {
                let app = c.body.replica.app;
                self.vote_step(app, now, VoteInput::Checkpoint(c));
            }
            Msg::FetchOrders(f) => self.serve_orders(from, f.body.replica, f.body.from, f.body.to),
            Msg::StateRequest(ref r) => self.relay_state(r.body.from, r.body.to, now, &msg),
            Msg::StateResponse(ref r) => self.relay_state(r.body.from, r.body.to, now, &msg),
            Msg::Control(c) => self.on_control(c.body.target, c.body.nonce, c.body.cmd, now)?,
            // Replicas heartbeat their node links so a link that died unseen
            // (a restored VM) fails on send; nothing to do with it here.
            Msg::Heartbeat(_) => {}
            other => {
                metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "unexpected").increment(1);
                tracing::debug!(%from, kind = other.kind(), "unexpected message kind");
            }
        }
        Ok(())
    }

    fn on_control(&mut self, target: Principal, nonce: u64, cmd: ControlCmd, now: u64) -> anyhow::Result<()> {
        if target != Principal::Node(self.me) || nonce <= self.control_nonce {
            metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "control").increment(1);
            return Ok(());
        }
        self.control_nonce = nonce;
        let fault = match cmd {
            ControlCmd::SetNodeFault(k) => Some(k),
            ControlCmd::ClearFaults => None,
            ControlCmd::SetFault(_) => return Ok(()),
        };
        tracing::warn!(me = %self.me, ?fault, "fault injection");
        if fault == Some(NodeFault::Crash) {
            // Injected crash: stop at once, as a power cut would.
            std::process::exit(3);
        }
        self.fault = fault;
        let apps: Vec<AppId> = self.apps.keys().copied().collect();
        for app in apps {
            self.core_step(app, now, Input::SetFault(fault))?;
        }
        Ok(())
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
        self.send_inbound(from, &msg);
    }

    fn core_step(&mut self, app: AppId, now: u64, input: Input) -> anyhow::Result<()> {
        let Some(a) = self.apps.get_mut(&app) else {
            metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "unknown-app").increment(1);
            return Ok(());
        };
        let actions = a.core.step(now, input);
        self.apply(app, now, actions)
    }

    /// Carries out the core's actions in order. Writes (`Persist`,
    /// `Record`) are batched: from the first of them on, every later action
    /// waits in `deferred` until `flush` has the writes on disk.
    fn apply(&mut self, app: AppId, now: u64, actions: Vec<Action>) -> anyhow::Result<()> {
        for action in actions {
            match action {
                Action::Persist(d) => self.writes.push(Write::Snapshot(app, d)),
                Action::Record(r) => self.writes.push(Write::Record(app, r)),
                a if !self.writes.is_empty() => self.deferred.push((app, now, a)),
                a => self.carry_out(app, now, a)?,
            }
        }
        Ok(())
    }

    /// Syncs the batched writes, then carries out what waited for them.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.writes);
        self.store.commit(&writes)?;
        metrics::counter!("zz_agreement_store_syncs_total").increment(1);
        for (app, now, a) in std::mem::take(&mut self.deferred) {
            self.carry_out(app, now, a)?;
        }
        Ok(())
    }

    fn carry_out(&mut self, app: AppId, now: u64, action: Action) -> anyhow::Result<()> {
        match action {
            Action::Send(to, msg) => {
                if let Some(tx) = self.peers.get(&to) {
                    send_frame(tx, &msg, self.muted());
                }
            }
            Action::Broadcast(msg) => {
                if let Some(b) = encoded(&msg) {
                    for tx in self.peers.values() {
                        push(tx, b.clone(), self.muted());
                    }
                }
            }
            Action::SetTimer(t, ms) => self
                .timers
                .set(TimerKey::Core(app, t), Instant::now() + Duration::from_millis(ms)),
            Action::CancelTimer(t) => self.timers.cancel(TimerKey::Core(app, t)),
            Action::Persist(d) => self.writes.push(Write::Snapshot(app, d)),
            Action::Record(r) => self.writes.push(Write::Record(app, r)),
            Action::Deliver { seq, digest, proposal } => {
                metrics::counter!("zz_agreement_committed_total").increment(1);
                let Some(a) = self.apps.get_mut(&app) else {
                    return Ok(());
                };
                let order = a.orders.commit(seq, digest, proposal);
                let msg = Msg::Order(order);
                self.send_replicas(app, &msg);
                self.vote_step(app, now, VoteInput::Committed { seq });
            }
            Action::ViewChanged(v) => {
                metrics::counter!("zz_agreement_view_changes_total").increment(1);
                tracing::info!(me = %self.me, app = app.0, view = v, "entered view");
            }
        }
        Ok(())
    }

    fn vote_step(&mut self, app: AppId, now: u64, input: VoteInput) {
        let Some(a) = self.apps.get_mut(&app) else {
            metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "unknown-app").increment(1);
            return;
        };
        let actions = a.voter.step(now, input);
        for action in actions {
            match action {
                VoteAction::ClientReply { client, results, .. } => {
                    self.replies.insert(app, &results);
                    let view = self.apps.get(&app).map_or(0, |a| a.core.view());
                    let msg = Msg::Reply(ClientReply {
                        node: self.me,
                        app,
                        view,
                        client,
                        results,
                    });
                    self.send_inbound(Principal::Client(client), &msg);
                }
                VoteAction::Wake { seq, kind } => {
                    tracing::warn!(me = %self.me, app = app.0, seq, kind = kind.as_str(), "incident: asking to wake standbys");
                    let msg = Msg::Wake(self.id.sign(Wake {
                        node: self.me,
                        app,
                        seq,
                        kind,
                    }));
                    send_frame(&self.orchestrator, &msg, self.muted());
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
                    send_frame(&self.orchestrator, &msg, self.muted());
                }
                VoteAction::Resolved { seq } => {
                    let msg = Msg::Resolved(self.id.sign(Resolved {
                        node: self.me,
                        app,
                        seq,
                    }));
                    send_frame(&self.orchestrator, &msg, self.muted());
                }
                VoteAction::Stable(cert) => {
                    let msg = Msg::CheckpointCert(cert.clone());
                    if let Some(a) = self.apps.get_mut(&app) {
                        a.orders.set_stable(cert);
                    }
                    self.send_replicas(app, &msg);
                }
                VoteAction::SetTimer { seq, after_ms } => self.timers.set(
                    TimerKey::Reply(app, seq),
                    Instant::now() + Duration::from_millis(after_ms),
                ),
            }
        }
    }

    fn fire_timers(&mut self) -> anyhow::Result<()> {
        let now = now_ms();
        for key in self.timers.due(Instant::now()) {
            match key {
                TimerKey::Core(app, t) => self.core_step(app, now, Input::Timer(t))?,
                TimerKey::Reply(app, seq) => self.vote_step(app, now, VoteInput::Timer(seq)),
                TimerKey::Heartbeat => {
                    self.heartbeat(now);
                    self.timers.set(TimerKey::Heartbeat, Instant::now() + HEARTBEAT);
                }
            }
        }
        Ok(())
    }

    fn heartbeat(&self, now: u64) {
        for (app, a) in &self.apps {
            let msg = Msg::Heartbeat(self.id.sign(Heartbeat {
                from: Principal::Node(self.me),
                app: *app,
                view: a.core.view(),
                last_executed: a.core.last_committed(),
                last_checkpoint: a.core.stable_checkpoint(),
                fetched_objects: 0,
                stale_objects: 0,
                time_ms: now,
            }));
            send_frame(&self.orchestrator, &msg, self.muted());
        }
    }

    fn muted(&self) -> bool {
        self.fault == Some(NodeFault::Mute)
    }

    /// Relays a replica's state message to its addressee, within the
    /// sender's budget.
    fn relay_state(&mut self, from: ReplicaId, to: ReplicaId, now: u64, msg: &Msg) {
        if self.relay.allow(from, to, now) {
            self.send_inbound(Principal::Replica(to), msg);
        } else {
            metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "relay-budget").increment(1);
        }
    }

    fn send_inbound(&self, to: Principal, msg: &Msg) {
        if let Some((_, tx)) = self.inbound.get(&to) {
            send_frame(tx, msg, self.muted());
        }
    }

    /// Pushes to every connected replica of `app`, never waiting on one.
    fn send_replicas(&self, app: AppId, msg: &Msg) {
        let Some(b) = encoded(msg) else { return };
        for (who, (_, tx)) in &self.inbound {
            if matches!(who, Principal::Replica(r) if r.app == app) {
                push(tx, b.clone(), self.muted());
            }
        }
    }
}

fn send_frame(tx: &Outbox, msg: &Msg, muted: bool) {
    if let Some(b) = encoded(msg) {
        push(tx, b, muted);
    }
}

/// `msg` as a frame; a message that cannot be one (past the frame limit,
/// such as a NEW-VIEW carrying many large proposals) is logged and counted,
/// never sent cut short.
fn encoded(msg: &Msg) -> Option<Bytes> {
    match encode(msg) {
        Ok(b) => Some(b),
        Err(e) => {
            metrics::counter!("zz_agreement_dropped_messages_total", "reason" => "unencodable").increment(1);
            tracing::error!(error = %e, kind = msg.kind(), "cannot encode; not sent");
            None
        }
    }
}

fn push(tx: &Outbox, b: Bytes, muted: bool) {
    if muted {
        return;
    }
    if let Err(e) = tx.try_send(b) {
        let (reason, n) = match e {
            links::Refused::Full => ("queue-full", 1),
            links::Refused::Shed { frames } => ("link-stalled", frames as u64 + 1),
            links::Refused::Stalled => ("link-stalled", 1),
            links::Refused::Closed => ("link-closed", 1),
        };
        metrics::counter!("zz_agreement_dropped_messages_total", "reason" => reason).increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zz_wire::{AppRequest, ClientBatch, ClientId, Digest, NonDet, Order, Proposal};

    /// An ORDER carrying one client batch of `bodies` requests of 1 MiB each.
    fn order(bodies: usize) -> Msg {
        let ops: Vec<AppRequest> = (0..bodies)
            .map(|_| AppRequest::new("PUT", "/kv/k", vec![7; 1 << 20]))
            .collect();
        let client = Identity::from_seed(Principal::Client(ClientId(1)), [5; 32]);
        let batch = ClientBatch::new(ClientId(1), AppId(0), 1, &ops).expect("packs");
        Msg::Order(Order {
            node: NodeId(0),
            app: AppId(0),
            seq: 1,
            digest: Digest::ZERO,
            proposal: Some(Proposal {
                requests: vec![client.sign(batch)],
                nondet: NonDet::default(),
            }),
        })
    }

    #[test]
    fn a_message_past_the_frame_limit_is_refused_not_sent() {
        assert!(encoded(&order(1)).is_some());
        // 20 MiB of bodies: past the 16 MiB frame limit.
        assert!(encoded(&order(20)).is_none());
    }
}
