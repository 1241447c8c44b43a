//! The simulated world: one event queue in virtual time over every node,
//! replica, the orchestrator and the clients, and the network between them.

use crate::backend::Op;
use crate::clients::Client;
use crate::oracle::{Kind, Record};
use crate::orch::OrchHost;
use crate::plan::{Plan, LOAD_FROM_MS};
use crate::replicas::ReplicaHost;
use crate::SimConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use zz_agreement::node::{MemStore, NodeMachine, NodeTimer};
use zz_agreement::sim::byz::{Middleware, MwCtx};
use zz_wire::{AppId, ClientId, Deployment, Digest, Identity, Keyring, Msg, NodeId, Principal, ReplicaId, Seq};

mod checks;
mod deploy;
mod faults;
mod nodes;
mod replica_steps;

/// Virtual time at start (Unix-like, far from zero).
pub const EPOCH_MS: u64 = 1_000_000_000;
const CLIENT_TICK_MS: u64 = 20;
/// The orchestrator's tick (`Tuning::tick`).
const ORCH_TICK_MS: u64 = 200;
/// Requests made this long after the heal must all be answered.
pub const ANSWER_GRACE_MS: u64 = 5_000;
/// Clients stop making requests this long before the end, so every request
/// is answered or given up on by then.
const QUIET_BEFORE_END_MS: u64 = crate::clients::DEADLINE_MS + 1_000;
/// An agreement node that exited is started again this long after (`zz
/// up`'s supervisor backs off 100 ms, then the node opens its store).
const NODE_RESTART_MS: u64 = 300;

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Dest {
    /// An agreement node instance (a slot: Twins run two per identity).
    Node(usize),
    Replica(ReplicaId),
    Orch,
    Client(usize),
}

pub(crate) enum Ev {
    Msg {
        from: Principal,
        /// The orchestrator link it travels on (messages to and from the orchestrator).
        link: u64,
        to: Dest,
        msg: Msg,
    },
    NodeTimer {
        slot: usize,
        timer: NodeTimer,
        gen: u64,
    },
    NodeRestart {
        slot: usize,
    },
    NodeCrash {
        slot: usize,
        down_ms: u64,
    },
    ReplicaRun {
        r: ReplicaId,
        epoch: u64,
    },
    ReplicaTick {
        r: ReplicaId,
        epoch: u64,
    },
    ReplicaUp {
        r: ReplicaId,
        epoch: u64,
        fresh: bool,
    },
    OrchTick,
    ClientTick,
    Fault(faults::Step),
    Heal,
}

struct Queued {
    at: u64,
    n: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.n) == (o.at, o.n)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.n).cmp(&(o.at, o.n))
    }
}

pub(crate) struct NodeHost {
    pub id: NodeId,
    pub machine: Option<NodeMachine>,
    pub store: MemStore,
    pub timers: BTreeMap<NodeTimer, u64>,
    pub middleware: Vec<Box<dyn Middleware>>,
    /// Misbehaves on purpose: left out of the agreement check.
    pub byzantine: bool,
    /// Its orchestrator link.
    pub link: u64,
    /// A Twins instance, retired at the heal.
    pub twin: bool,
}

/// Counters of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub events: u64,
    pub messages: u64,
    pub lost: u64,
    pub ops_answered: u64,
    pub ops_unanswered: u64,
    pub fenced: u64,
    pub node_restarts: u64,
    pub seqs_agreed: u64,
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub f: usize,
    pub plan: String,
    pub violations: Vec<String>,
    pub stats: Stats,
    pub trace: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

pub struct World {
    pub(crate) cfg: SimConfig,
    pub(crate) plan: Plan,
    pub(crate) f: usize,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    counter: u64,
    pub(crate) dep: Arc<Deployment>,
    pub(crate) keys: Keyring,
    pub(crate) ids: BTreeMap<Principal, Identity>,
    pub(crate) nodes: Vec<NodeHost>,
    pub(crate) replicas: BTreeMap<ReplicaId, ReplicaHost>,
    pub(crate) by_name: BTreeMap<String, ReplicaId>,
    pub(crate) orch: OrchHost,
    pub(crate) clients: Vec<Client>,
    pub(crate) history: Vec<Record>,
    /// Node pairs that cannot reach each other.
    pub(crate) cut: BTreeSet<(u16, u16)>,
    /// Twins: the node whose identity runs twice, and the nodes that talk
    /// to the second instance.
    pub(crate) twins: Option<(u16, usize, BTreeSet<u16>)>,
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    /// When the last message on each link arrives: links are TCP streams,
    /// so messages on one link keep their order (links reorder among
    /// themselves).
    fifo: BTreeMap<(Principal, Dest), u64>,
    /// (app, seq) -> digest and the node slot that first delivered it.
    pub(crate) agreed: BTreeMap<(AppId, Seq), (Digest, usize)>,
    pub(crate) violations: Vec<String>,
    pub(crate) trace: Vec<String>,
    pub(crate) stats: Stats,
    next_link: u64,
    /// Faults injected through the API, to clear at the heal.
    pub(crate) injected: Vec<u64>,
}

impl World {
    pub fn new(cfg: &SimConfig, plan: Plan) -> World {
        let f = cfg.f;
        let (dep, ids) = deploy::deployment(cfg.seed, f, plan.clients, plan.checkpoint_interval);
        let keys = dep.keyring().with_memo();
        // Signatures made in the run count as checked (see `Identity::vouching`).
        let ids: BTreeMap<Principal, Identity> = ids.into_iter().map(|(p, i)| (p, i.vouching(&keys))).collect();
        let orch_id = ids
            .get(&Principal::Orchestrator)
            .cloned()
            .expect("the deployment has an orchestrator key");
        let orch = OrchHost::new(dep.clone(), orch_id, keys.clone(), EPOCH_MS).expect("an in-memory store opens");
        let dep = Arc::new(dep);
        let by_name: BTreeMap<String, ReplicaId> = dep
            .all_replicas()
            .into_iter()
            .map(|r| (dep.replica_name(r), r))
            .collect();
        let replicas = by_name
            .iter()
            .map(|(name, r)| (*r, ReplicaHost::new(name.clone())))
            .collect();
        let mut clients = Vec::new();
        for (a, kind) in [Kind::Kv, Kind::Bank].into_iter().enumerate() {
            for nth in 0..plan.clients {
                let c = ClientId((a * plan.clients + nth) as u16);
                let id = ids.get(&Principal::Client(c)).cloned().expect("every client has a key");
                let mut client = Client::new(id, c, AppId(a as u16), kind, nth, cfg.seed);
                client.flooding = plan.flooding_client && a == 0 && nth == 0;
                clients.push(client);
            }
        }
        let loss = plan.loss;
        let duplicate = plan.duplicate;
        let mut w = World {
            cfg: cfg.clone(),
            f,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            now: EPOCH_MS,
            queue: BinaryHeap::new(),
            counter: 0,
            dep,
            keys,
            ids,
            nodes: Vec::new(),
            replicas,
            by_name,
            orch,
            clients,
            history: Vec::new(),
            cut: BTreeSet::new(),
            twins: None,
            loss,
            duplicate,
            fifo: BTreeMap::new(),
            agreed: BTreeMap::new(),
            violations: Vec::new(),
            trace: Vec::new(),
            stats: Stats::default(),
            next_link: 1,
            injected: Vec::new(),
            plan,
        };
        for i in 0..w.dep.n() {
            w.nodes.push(NodeHost {
                id: NodeId(i as u16),
                machine: None,
                store: MemStore::default(),
                timers: BTreeMap::new(),
                middleware: Vec::new(),
                byzantine: false,
                link: 0,
                twin: false,
            });
        }
        w
    }

    pub(crate) fn push(&mut self, at: u64, ev: Ev) {
        self.counter += 1;
        self.queue.push(Reverse(Queued {
            at,
            n: self.counter,
            ev,
        }));
    }

    pub(crate) fn link_id(&mut self) -> u64 {
        self.next_link += 1;
        self.next_link
    }

    pub(crate) fn log(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            let t = self.now - EPOCH_MS;
            self.trace.push(format!("{t:>7} {}", line()));
        }
    }

    pub(crate) fn violation(&mut self, what: String) {
        self.log(|| format!("VIOLATION {what}"));
        self.violations.push(format!("at {} ms: {what}", self.now - EPOCH_MS));
    }

    /// Runs the plan to its end, then judges liveness.
    pub fn run(&mut self) {
        let start = self.now;
        for slot in 0..self.nodes.len() {
            self.start_node(slot);
        }
        self.orch.start(self.now);
        self.after_orch();
        self.push(start + ORCH_TICK_MS, Ev::OrchTick);
        self.push(start + LOAD_FROM_MS, Ev::ClientTick);
        self.schedule_plan();
        let end = start + self.plan.end_ms;
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at > end {
                break;
            }
            self.now = q.at;
            self.stats.events += 1;
            self.handle(q.ev);
        }
        self.now = end;
        self.judge_end();
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Msg { from, link, to, msg } => self.deliver(from, link, to, msg),
            Ev::NodeTimer { slot, timer, gen } => {
                if self.nodes[slot].timers.get(&timer) == Some(&gen) {
                    self.nodes[slot].timers.remove(&timer);
                    let now = self.now;
                    let outs = match self.nodes[slot].machine.as_mut() {
                        Some(m) => m.on_timer(now, timer),
                        None => return,
                    };
                    self.node_outs(slot, outs);
                }
            }
            Ev::NodeRestart { slot } => self.start_node(slot),
            Ev::NodeCrash { slot, down_ms } => {
                self.crash_node(slot);
                self.push(self.now + down_ms, Ev::NodeRestart { slot });
            }
            Ev::ReplicaRun { r, epoch } => self.replica_run(r, epoch),
            Ev::ReplicaTick { r, epoch } => self.replica_tick(r, epoch),
            Ev::ReplicaUp { r, epoch, fresh } => self.replica_up(r, epoch, fresh),
            Ev::OrchTick => {
                self.orch.tick(self.now);
                self.after_orch();
                self.push(self.now + ORCH_TICK_MS, Ev::OrchTick);
            }
            Ev::ClientTick => {
                self.client_tick();
                self.push(self.now + CLIENT_TICK_MS, Ev::ClientTick);
            }
            Ev::Fault(step) => self.fault(step),
            Ev::Heal => self.heal(),
        }
    }

    /// Sends over the network: partitions, loss, duplication, delay.
    pub(crate) fn send(&mut self, from: Principal, link: u64, to: Dest, msg: Msg, extra_ms: u64) {
        if let (Principal::Node(a), Dest::Node(slot)) = (from, to) {
            let b = self.nodes[slot].id.0;
            if self.cut.contains(&(a.0, b)) {
                return;
            }
        }
        self.stats.messages += 1;
        // Every link is TCP: loss is a queue overflowing or a connection
        // reset. Nodes drop what their peers' and clients' full queues
        // refuse (PBFT retransmits, clients re-send); a replica's and the
        // orchestrator's links are not lossy here, since a vote lost to f+1
        // nodes at once names a correct replica silent, which takes f+1
        // broken links, a network fault, not a replica's.
        let lossy = matches!(
            (from, to),
            (Principal::Node(_), Dest::Node(_)) | (Principal::Client(_), _) | (_, Dest::Client(_))
        );
        if lossy && self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            self.stats.lost += 1;
            return;
        }
        let (lo, hi) = (
            self.plan.min_delay_ms,
            self.plan.max_delay_ms.max(self.plan.min_delay_ms),
        );
        let copies = if self.duplicate > 0.0 && self.rng.gen_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let d = self.rng.gen_range(lo..=hi);
            let last = self.fifo.entry((from, to)).or_default();
            let at = (self.now + d + extra_ms).max(*last);
            *last = at;
            let msg = msg.clone();
            self.push(at, Ev::Msg { from, link, to, msg });
        }
    }

    /// The node instances a message to `to` reaches from `from` (Twins
    /// split the others between the two instances of one identity).
    pub(crate) fn node_slots(&self, from: Principal, to: NodeId) -> Vec<usize> {
        let Some((twin, slot, side)) = &self.twins else {
            return vec![usize::from(to.0)];
        };
        if to.0 != *twin {
            return vec![usize::from(to.0)];
        }
        match from {
            Principal::Node(n) if side.contains(&n.0) => vec![*slot],
            Principal::Node(_) => vec![usize::from(to.0)],
            _ => vec![usize::from(to.0), *slot],
        }
    }

    pub(crate) fn send_to_node(&mut self, from: Principal, to: NodeId, msg: Msg, extra_ms: u64) {
        for slot in self.node_slots(from, to) {
            self.send(from, 0, Dest::Node(slot), msg.clone(), extra_ms);
        }
    }

    fn deliver(&mut self, from: Principal, link: u64, to: Dest, msg: Msg) {
        match to {
            Dest::Node(slot) => self.node_msg(slot, from, msg),
            Dest::Replica(r) => self.replica_msg(r, from, link, msg),
            Dest::Orch => {
                self.log(|| format!("{from} -> orchestrator: {}", describe(&msg)));
                self.orch.inbound(self.now, link, msg, &self.keys);
                self.after_orch();
            }
            Dest::Client(c) => {
                let Msg::Reply(r) = msg else { return };
                if self.cfg.trace {
                    let ids: Vec<u64> = r.results.iter().map(|b| b.first_id).collect();
                    self.log(|| format!("{} -> c{c}: reply for {ids:?}", r.node));
                }
                let (now, f) = (self.now, self.f);
                if let Some(client) = self.clients.get_mut(c) {
                    client.on_reply(now, r.node, &r.results, f, &mut self.history);
                }
            }
        }
    }

    /// Carries out what the controller decided: backend calls, then the
    /// messages it queued on its links.
    pub(crate) fn after_orch(&mut self) {
        let ops = self.orch.backend.take_ops();
        // A pause may be a standby declared ready: its event says which.
        if ops.iter().any(|o| matches!(o, Op::Pause(_))) {
            self.check_standbys_ready();
        }
        for op in ops {
            self.backend_op(op);
        }
        for (link, peer, msg) in self.orch.outgoing() {
            match peer {
                Principal::Node(_) => {
                    if let Some(slot) = self.nodes.iter().position(|n| n.link == link) {
                        self.send(Principal::Orchestrator, link, Dest::Node(slot), msg, 0);
                    }
                }
                Principal::Replica(r) => self.send(Principal::Orchestrator, link, Dest::Replica(r), msg, 0),
                _ => {}
            }
        }
        if self.cfg.trace {
            for e in self.orch.new_events(self.now) {
                self.log_event(&e);
            }
        }
    }

    fn client_tick(&mut self) {
        let issue = self.now < EPOCH_MS + self.plan.end_ms - QUIET_BEFORE_END_MS;
        let now = self.now;
        let mut sends = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            for m in c.tick(now, issue, &mut self.history) {
                sends.push((i, c.id, m));
            }
        }
        for (_, id, m) in sends {
            for n in 0..self.dep.n() {
                self.send_to_node(Principal::Client(id), NodeId(n as u16), m.clone(), 0);
            }
        }
    }

    pub fn report(&self) -> Report {
        Report {
            seed: self.cfg.seed,
            f: self.f,
            plan: self.plan.describe(),
            violations: self.violations.clone(),
            stats: self.stats.clone(),
            trace: self.trace.clone(),
        }
    }

    /// Applies Byzantine middleware to a node's message to another node.
    pub(crate) fn through_middleware(&mut self, slot: usize, to: NodeId, msg: Msg) -> Vec<(Msg, u64)> {
        if self.nodes[slot].middleware.is_empty() {
            return vec![(msg, 0)];
        }
        let n = self.dep.n();
        let identity = match self.ids.get(&Principal::Node(self.nodes[slot].id)) {
            Some(i) => i.clone(),
            None => return vec![(msg, 0)],
        };
        let me = self.nodes[slot].id;
        let mut msgs = vec![(msg, 0u64)];
        let mut mws = std::mem::take(&mut self.nodes[slot].middleware);
        for mw in mws.iter_mut() {
            let mut ctx = MwCtx {
                now: self.now,
                me,
                n,
                identity: &identity,
                rng: &mut self.rng,
            };
            msgs = msgs
                .into_iter()
                .flat_map(|(m, d)| mw.outgoing(&mut ctx, to, m).into_iter().map(move |(m, e)| (m, d + e)))
                .collect();
        }
        self.nodes[slot].middleware = mws;
        msgs
    }
}

/// A message in one line: kind and the fields that place it.
pub(crate) fn describe(m: &Msg) -> String {
    match m {
        Msg::Request(r) => format!("request {} #{}", r.body.client, r.body.first_id),
        Msg::PrePrepare(p) => format!("pre-prepare v{} s{}", p.body.view, p.body.seq),
        Msg::Prepare(p) => format!("prepare v{} s{}", p.body.0.view, p.body.0.seq),
        Msg::Commit(c) => format!("commit v{} s{}", c.0.view, c.0.seq),
        Msg::Order(o) => format!("order app{} s{}", o.app.0, o.seq),
        Msg::ExecReply(r) => format!("exec-reply {} s{}", r.replica, r.seq),
        Msg::Wake(w) => format!("WAKE app{} s{} {}", w.body.app.0, w.body.seq, w.body.kind.as_str()),
        Msg::Fault(x) => format!(
            "FAULT {} s{} ({})",
            x.body.replica,
            x.body.seq,
            if x.body.their_digest.is_some() {
                "wrong answer"
            } else {
                "silent"
            }
        ),
        Msg::Resolved(x) => format!("RESOLVED app{} s{}", x.body.app.0, x.body.seq),
        Msg::Control(c) => format!("control {:?}", c.body.cmd),
        Msg::Heartbeat(h) => format!(
            "heartbeat executed {} checkpoint {} stale {}",
            h.body.last_executed, h.body.last_checkpoint, h.body.stale_objects
        ),
        Msg::ViewChange(v) => format!("view-change app{} to v{}", v.body.app.0, v.body.new_view),
        Msg::NewView(v) => format!("new-view app{} v{}", v.body.app.0, v.body.view),
        other => other.kind().to_string(),
    }
}
