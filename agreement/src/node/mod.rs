//! The agreement node driver: TCP links, clock, timers and storage around
//! the pure [`NodeMachine`]. A single task owns all protocol state and runs
//! `select!` over its inbox, its timers and shutdown.

mod budget;
pub mod links;
mod machine;
mod orders;
mod relay;
mod replies;
mod store;
mod timers;

pub use links::{allowed, authorised};
pub use machine::{MachineError, NodeMachine, NodeOut, NodeTimer, CRASH_EXIT_CODE, HEARTBEAT_MS};
pub use orders::{OrderLog, MAX_ORDERS_PER_REPLY};
pub use store::{MemStore, NodeStore, StoreError, Write};

use bytes::Bytes;
use links::{Event, Outbox, EVENT_QUEUE};
use std::collections::{BTreeMap, HashMap, VecDeque};
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
use zz_wire::{Deployment, Identity, Keyring, Msg, NodeFault, NodeId, Principal, ReplicaId, ReplicaKey, Signed};

pub struct NodeConfig {
    pub deployment: Arc<Deployment>,
    pub identity: Identity,
    pub data_dir: PathBuf,
}

/// How long a `slow` node holds each burst of work.
const SLOW_DELAY: Duration = Duration::from_millis(50);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Key announcements kept per replica (see `Node::replica_keys`).
const KEYS_KEPT: usize = 9;

struct Node {
    machine: NodeMachine,
    /// Shared with the links and the machine (see `Keyring`).
    keys: Arc<Keyring>,
    /// Replaced replicas' key announcements by generation (the newest
    /// `KEYS_KEPT` of each), passed on to each replica of the app that
    /// links: it needs earlier generations' keys for older checkpoints.
    replica_keys: BTreeMap<(ReplicaId, u64), Signed<ReplicaKey>>,
    store: NodeStore,
    peers: BTreeMap<NodeId, Outbox>,
    orchestrator: Outbox,
    /// Links that others dialled in on (latest per principal wins); replicas
    /// and clients are answered on these.
    inbound: HashMap<Principal, (u64, Outbox)>,
    timers: Timers<NodeTimer>,
    /// Writes the machine asked for since the last `flush`, and every out
    /// that came after the first of them: those wait for the writes to be
    /// on disk (`NodeOut`'s order promise), so one sync serves a whole burst.
    writes: Vec<Write>,
    deferred: Vec<NodeOut>,
    /// `slow-primary`: pre-prepares held until their time, with the peer
    /// each goes to (`None`: every peer).
    held: VecDeque<(Instant, Option<NodeId>, Bytes)>,
    /// How long `slow-primary` holds each pre-prepare: just under the
    /// view-change timeout, as Aardvark's slow primary does.
    hold: Duration,
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
    let restored = store.restored(dep.app_ids())?;
    let mut replica_keys = BTreeMap::new();
    for cert in store.replica_keys()? {
        match cert.apply(&keys) {
            Ok(_) => {
                replica_keys.insert((cert.body.replica, cert.body.generation), cert);
            }
            Err(e) => tracing::warn!(error = %e, "stored replica key does not verify; ignored"),
        }
    }
    let machine = NodeMachine::with_keys(
        dep.clone(),
        cfg.identity.clone(),
        (*keys).clone(),
        restored,
        rand::random::<u64>(),
    )?;
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

    let mut node = Node {
        machine,
        keys: keys.clone(),
        replica_keys,
        store,
        peers,
        orchestrator: orch_tx,
        inbound: HashMap::new(),
        timers: Timers::new(),
        writes: Vec::new(),
        deferred: Vec::new(),
        held: VecDeque::new(),
        hold: Duration::from_millis(dep.timing.view_change_timeout_ms.saturating_mul(9) / 10),
    };
    let outs = node.machine.start(now_ms());
    node.carry(outs);
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
            .into_iter()
            .chain(node.held.front().map(|h| h.0))
            .min()
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
                if node.machine.fault() == Some(NodeFault::Slow) {
                    tokio::time::sleep(SLOW_DELAY).await;
                }
            }
            () = &mut timer => {
                node.release_held();
                node.fire_timers();
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
                // A replica is told its peers' keys (and its own) at once.
                if let Principal::Replica(r) = who {
                    for cert in self.replica_keys.values().filter(|c| c.body.replica.app == r.app) {
                        send_frame(&tx, &Msg::ReplicaKey(Box::new(cert.clone())));
                    }
                }
                self.inbound.insert(who, (conn, tx));
            }
            Event::Msg {
                from: Principal::Orchestrator,
                msg: Msg::ReplicaKey(cert),
            } => self.on_replica_key(*cert)?,
            Event::Down { who, conn } => {
                if self.inbound.get(&who).is_some_and(|(c, _)| *c == conn) {
                    self.inbound.remove(&who);
                }
            }
            Event::Msg { from, msg } => {
                let outs = self.machine.on_msg(now_ms(), from, msg);
                self.carry(outs);
            }
        }
        Ok(())
    }

    /// A replacement's key, from the orchestrator: current from now on
    /// (unless a later one is known), kept across restarts, passed on to
    /// the app's replicas; the link of the instance it replaces is closed
    /// (its key no longer opens one).
    fn on_replica_key(&mut self, cert: Signed<ReplicaKey>) -> anyhow::Result<()> {
        let r = cert.body.replica;
        let at = (r, cert.body.generation);
        if self.replica_keys.contains_key(&at) {
            return Ok(());
        }
        let current = match cert.apply(&self.keys) {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(error = %e, "replica key announcement does not verify; dropped");
                return Ok(());
            }
        };
        self.store.put_replica_key(&cert, KEYS_KEPT)?;
        self.carry_out(NodeOut::ToReplicas(r.app, Msg::ReplicaKey(Box::new(cert.clone()))));
        self.replica_keys.insert(at, cert);
        let stale: Vec<_> = self
            .replica_keys
            .range((r, 0)..=(r, u64::MAX))
            .map(|(k, _)| *k)
            .rev()
            .skip(KEYS_KEPT)
            .collect();
        for k in stale {
            self.replica_keys.remove(&k);
        }
        if current {
            tracing::info!(replica = %Principal::Replica(r), generation = at.1, "replica key replaced");
            metrics::counter!("zz_agreement_replica_keys_total").increment(1);
            self.inbound.remove(&Principal::Replica(r));
        }
        Ok(())
    }

    fn fire_timers(&mut self) {
        let now = now_ms();
        for t in self.timers.due(Instant::now()) {
            let outs = self.machine.on_timer(now, t);
            self.carry(outs);
        }
    }

    /// Carries out the machine's outs in order. Writes are batched: from
    /// the first of them on, every later out waits in `deferred` until
    /// `flush` has the writes on disk.
    fn carry(&mut self, outs: Vec<NodeOut>) {
        for out in outs {
            match out {
                NodeOut::Write(w) => self.writes.push(w),
                // Injected crash: stop at once, as a power cut would.
                NodeOut::Exit(code) => std::process::exit(code),
                out if !self.writes.is_empty() => self.deferred.push(out),
                out => self.carry_out(out),
            }
        }
    }

    /// Syncs the batched writes, then carries out what waited for them.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.writes);
        self.store.commit(&writes)?;
        metrics::counter!("zz_agreement_store_syncs_total").increment(1);
        for out in std::mem::take(&mut self.deferred) {
            self.carry_out(out);
        }
        Ok(())
    }

    /// Sends the held pre-prepares whose time has come.
    fn release_held(&mut self) {
        let now = Instant::now();
        while self.held.front().is_some_and(|h| h.0 <= now) {
            let Some((_, to, b)) = self.held.pop_front() else { break };
            match to {
                Some(to) => {
                    if let Some(tx) = self.peers.get(&to) {
                        push(tx, b);
                    }
                }
                None => {
                    for tx in self.peers.values() {
                        push(tx, b.clone());
                    }
                }
            }
        }
    }

    /// Injected `slow-primary`: holds a pre-prepare instead of sending it.
    /// Middleware on the way out; the protocol core knows nothing of it.
    fn hold_if_slow(&mut self, to: Option<NodeId>, msg: &Msg) -> bool {
        if !matches!(msg, Msg::PrePrepare(_)) || self.machine.fault() != Some(NodeFault::SlowPrimary) {
            return false;
        }
        if let Some(b) = encoded(msg) {
            self.held.push_back((Instant::now() + self.hold, to, b));
        }
        true
    }

    /// One out that is not a write: a send or a timer.
    fn carry_out(&mut self, out: NodeOut) {
        match out {
            NodeOut::ToPeer(to, msg) if self.hold_if_slow(Some(to), &msg) => {}
            NodeOut::ToPeers(msg) if self.hold_if_slow(None, &msg) => {}
            NodeOut::ToPeer(to, msg) => {
                if let Some(tx) = self.peers.get(&to) {
                    send_frame(tx, &msg);
                }
            }
            NodeOut::ToPeers(msg) => {
                if let Some(b) = encoded(&msg) {
                    for tx in self.peers.values() {
                        push(tx, b.clone());
                    }
                }
            }
            NodeOut::ToOrchestrator(msg) => send_frame(&self.orchestrator, &msg),
            NodeOut::ToInbound(to, msg) => {
                if let Some((_, tx)) = self.inbound.get(&to) {
                    send_frame(tx, &msg);
                }
            }
            // Pushed to every connected replica of the app, never waiting on one.
            NodeOut::ToReplicas(app, msg) => {
                let Some(b) = encoded(&msg) else { return };
                for (who, (_, tx)) in &self.inbound {
                    if matches!(who, Principal::Replica(r) if r.app == app) {
                        push(tx, b.clone());
                    }
                }
            }
            NodeOut::SetTimer(t, ms) => self.timers.set(t, Instant::now() + Duration::from_millis(ms)),
            NodeOut::CancelTimer(t) => self.timers.cancel(t),
            NodeOut::Write(w) => self.writes.push(w),
            NodeOut::Exit(code) => std::process::exit(code),
        }
    }
}

fn send_frame(tx: &Outbox, msg: &Msg) {
    if let Some(b) = encoded(msg) {
        push(tx, b);
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

fn push(tx: &Outbox, b: Bytes) {
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
    use zz_wire::{AppId, AppRequest, ClientBatch, ClientId, Digest, NonDet, Order, Proposal};

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
