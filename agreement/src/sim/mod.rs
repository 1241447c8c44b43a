//! A deterministic, seeded discrete-event simulator running the real
//! [`Core`] for n = 3f+1 nodes: virtual clock and timers, a network with
//! loss, duplication, reordering (random delays) and partitions, Byzantine
//! middleware on outgoing messages, crashes and restarts from `Durable`.
//! Every random choice comes from one `ChaCha8Rng` seeded by `SimConfig::seed`.
//!
//! The simulator checks safety as it runs: every correct node delivers each
//! seq once, in order, with the same digest as every other correct node, and
//! no client batch twice. Violations are collected in `violations()`.

pub mod byz;
mod client;
mod net;
pub mod seeds;

use crate::core::{Action, Config, Core, Durable, Input, Record, RecordKey, TimerId};
use crate::node::links::{allowed, authorised, verify_client_requests};
use byz::{Middleware, MwCtx};
use client::{InFlight, SimClient};
pub use net::NetStats;
use net::{Event, Queued};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use zz_wire::{AppId, ClientId, Digest, Identity, Keyring, Msg, NodeFault, NodeId, Principal, Seq, Timing, View};

/// Knobs of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub f: usize,
    pub seed: u64,
    /// Chance that a message is lost.
    pub loss: f64,
    /// Chance that a message is delivered twice.
    pub duplicate: f64,
    /// Each message takes a uniform delay in this range: reordering.
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub timing: Timing,
    pub checkpoint_interval: u64,
    pub clients: usize,
    /// Batches each client submits in total.
    pub batches_per_client: u64,
    pub ops_per_batch: usize,
    /// Batches a client keeps in flight.
    pub outstanding: usize,
    /// How often clients submit and check for late answers.
    pub client_tick_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            f: 1,
            seed: 0,
            loss: 0.0,
            duplicate: 0.0,
            min_delay_ms: 1,
            max_delay_ms: 5,
            timing: Timing {
                batch_max: 4,
                batch_max_ops: 64,
                batch_delay_us: 2_000,
                pipeline: 4,
                view_change_timeout_ms: 300,
                reply_timeout_ms: 300,
                client_retry_ms: 150,
                max_clock_skew_ms: 1_000,
                log_window: 64,
                archive_max_mb: 64,
            },
            checkpoint_interval: 8,
            clients: 3,
            batches_per_client: 10,
            ops_per_batch: 2,
            outstanding: 2,
            client_tick_ms: 5,
        }
    }
}

/// One simulated agreement node.
pub struct SimNode {
    core: Option<Core>,
    config: Config,
    identity: Identity,
    durable: Option<Durable>,
    /// The write-ahead records not yet covered by `durable`, keyed as the
    /// node's store keys them: a later certificate for a seq replaces one.
    records: BTreeMap<RecordKey, Record>,
    timers: BTreeMap<TimerId, u64>,
    middleware: Vec<Box<dyn Middleware>>,
    /// Excluded from the safety checks (its outgoing messages are rewritten).
    byzantine: bool,
    /// (seq, digest) in delivery order, over all incarnations.
    pub delivered: Vec<(Seq, Digest)>,
    next_deliver: Seq,
    /// Client batch -> seq it was delivered at.
    batches: BTreeMap<(ClientId, u64), Seq>,
    /// Highest proposal timestamp delivered.
    pub max_timestamp: u64,
    /// Largest |timestamp - local clock| seen in a delivered proposal.
    pub max_skew_seen: u64,
    /// Virtual time of the node's first delivery of a client batch while in
    /// each view: when a new view started serving clients.
    pub first_commit_in_view: BTreeMap<View, u64>,
}

pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    counter: u64,
    timer_gen: u64,
    events: BinaryHeap<Reverse<Queued>>,
    keys: Keyring,
    nodes: Vec<SimNode>,
    clients: Vec<SimClient>,
    cut: BTreeSet<(usize, usize)>,
    /// The agreed log as seen by correct nodes.
    agreed: BTreeMap<Seq, Digest>,
    violations: Vec<String>,
    pub net: NetStats,
}

const APP: AppId = AppId(0);
/// Node index as a `NodeId` (simulations stay far below u16::MAX nodes).
pub fn node_id(i: usize) -> NodeId {
    NodeId(u16::try_from(i).unwrap_or(u16::MAX))
}

/// Virtual time at start: far enough from zero for clock-skew checks.
pub const EPOCH_MS: u64 = 1_000_000;

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let n = 3 * cfg.f + 1;
        let mut keys = Keyring::new();
        let node_ids: Vec<Identity> = (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                Identity::from_seed(Principal::Node(node_id(i)), seed)
            })
            .collect();
        let clients: Vec<SimClient> = (0..cfg.clients)
            .map(|c| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(c as u64 + 1000).to_le_bytes());
                let cid = ClientId(u16::try_from(c).unwrap_or(u16::MAX));
                SimClient::new(Identity::from_seed(Principal::Client(cid), seed), cid)
            })
            .collect();
        for id in &node_ids {
            keys.insert(id.who, id.public());
        }
        for c in &clients {
            keys.insert(c.id.who, c.id.public());
        }
        let nodes = node_ids
            .into_iter()
            .enumerate()
            .map(|(i, identity)| {
                let config = Config {
                    me: node_id(i),
                    app: APP,
                    f: cfg.f,
                    timing: cfg.timing.clone(),
                    checkpoint_interval: cfg.checkpoint_interval,
                    seed_source: cfg.seed ^ 0x5eed,
                    keys: keys.clone(),
                };
                SimNode {
                    core: Some(Core::new(config.clone(), identity.clone())),
                    config,
                    identity,
                    durable: None,
                    records: BTreeMap::new(),
                    timers: BTreeMap::new(),
                    middleware: Vec::new(),
                    byzantine: false,
                    delivered: Vec::new(),
                    next_deliver: 1,
                    batches: BTreeMap::new(),
                    max_timestamp: 0,
                    max_skew_seen: 0,
                    first_commit_in_view: BTreeMap::new(),
                }
            })
            .collect();
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            now: EPOCH_MS,
            counter: 0,
            timer_gen: 0,
            events: BinaryHeap::new(),
            keys,
            nodes,
            clients,
            cut: BTreeSet::new(),
            agreed: BTreeMap::new(),
            violations: Vec::new(),
            net: NetStats::default(),
        };
        for i in 0..n {
            if let Some(core) = sim.nodes[i].core.as_mut() {
                let acts = core.start(EPOCH_MS);
                sim.apply(i, acts);
            }
        }
        for c in 0..sim.clients.len() {
            let at = EPOCH_MS + sim.rng.gen_range(0..sim.cfg.client_tick_ms.max(1));
            sim.push(at, Event::ClientTick { client: c });
        }
        sim
    }

    // ------------------------------------------------------------ scenario API

    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The node stops: its core and timers are gone, messages to it are lost.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].core = None;
        self.nodes[i].timers.clear();
    }

    /// The node comes back from what it had on stable storage: its last
    /// `Durable` snapshot and the records written after it (or fresh).
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let records: Vec<Record> = node.records.values().cloned().collect();
        let mut core = match (node.durable.clone(), records.is_empty()) {
            (None, true) => Core::new(node.config.clone(), node.identity.clone()),
            (d, _) => Core::restore(
                node.config.clone(),
                node.identity.clone(),
                d.unwrap_or_default(),
                records,
            ),
        };
        node.next_deliver = core.last_committed() + 1;
        let acts = core.start(self.now);
        node.core = Some(core);
        self.apply(i, acts);
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].core.is_some()
    }

    /// Cuts every link between the two sets, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&mut self, i: usize) {
        let others: Vec<usize> = (0..self.n()).filter(|j| *j != i).collect();
        self.partition(&[i], &others);
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Rewrites node `i`'s outgoing messages; the node no longer counts as correct.
    pub fn add_middleware(&mut self, i: usize, m: Box<dyn Middleware>) {
        self.nodes[i].middleware.push(m);
        self.nodes[i].byzantine = true;
    }

    /// Injects a node fault through the core (`Equivocate`, `Mute`).
    pub fn set_fault(&mut self, i: usize, fault: Option<NodeFault>) {
        if fault.is_some() {
            self.nodes[i].byzantine = true;
        }
        self.step(i, Input::SetFault(fault));
    }

    pub fn core(&self, i: usize) -> Option<&Core> {
        self.nodes[i].core.as_ref()
    }

    pub fn node(&self, i: usize) -> &SimNode {
        &self.nodes[i]
    }

    /// Safety violations found so far (empty when all is well).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    pub fn correct_nodes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.n()).filter(|i| !self.nodes[*i].byzantine)
    }

    pub fn all_clients_done(&self) -> bool {
        self.clients.iter().all(|c| c.done >= self.cfg.batches_per_client)
    }

    pub fn client_batches_done(&self) -> u64 {
        self.clients.iter().map(|c| c.done).sum()
    }

    pub fn client_retries(&self) -> u64 {
        self.clients.iter().map(|c| c.retries).sum()
    }

    /// Virtual time at which `need` correct nodes had delivered a client
    /// batch in a view of at least `view`: when clients can get f+1 answers
    /// from that view.
    pub fn commit_in_view_at(&self, view: View, need: usize) -> Option<u64> {
        let mut at: Vec<u64> = self
            .correct_nodes()
            .filter_map(|i| self.nodes[i].first_commit_in_view.range(view..).map(|(_, t)| *t).min())
            .collect();
        at.sort_unstable();
        at.get(need.checked_sub(1)?).copied()
    }

    /// Highest seq delivered by every node in `nodes`.
    pub fn min_committed(&self, nodes: &[usize]) -> Seq {
        nodes.iter().map(|i| self.nodes[*i].next_deliver - 1).min().unwrap_or(0)
    }

    /// Runs until `pred` holds (true) or `max_ms` of virtual time passed (false).
    pub fn run_until(&mut self, mut pred: impl FnMut(&Sim) -> bool, max_ms: u64) -> bool {
        let max_ms = self.now + max_ms;
        loop {
            if pred(self) {
                return true;
            }
            let Some(Reverse(q)) = self.events.pop() else {
                return false;
            };
            if q.at > max_ms {
                self.events.push(Reverse(q));
                self.now = max_ms;
                return pred(self);
            }
            self.now = q.at;
            self.handle(q.ev);
        }
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(|_| false, ms);
    }

    // ------------------------------------------------------------ machinery

    fn push(&mut self, at: u64, ev: Event) {
        self.counter += 1;
        self.events.push(Reverse(Queued {
            at,
            n: self.counter,
            ev,
        }));
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::ToNode { from, to, msg } => {
                if self.nodes[to].core.is_none() {
                    return;
                }
                // What the driver does before the core sees anything: the
                // link's peer must be the author (the link's frame tags
                // prove who the peer is), then signatures.
                if !allowed(from, &msg) || !authorised(&msg, self.nodes.len()) {
                    self.net.rejected_authors += 1;
                    return;
                }
                if msg.verify(&self.keys).is_err() || verify_client_requests(&msg, &self.keys).is_err() {
                    self.net.rejected_signatures += 1;
                    return;
                }
                let input = match msg {
                    Msg::Request(r) => Input::Request(r),
                    m => Input::Peer(m),
                };
                self.step(to, input);
            }
            Event::Timer { node, id, gen } => {
                if self.nodes[node].timers.get(&id) == Some(&gen) {
                    self.nodes[node].timers.remove(&id);
                    self.step(node, Input::Timer(id));
                }
            }
            Event::ClientTick { client } => {
                self.client_tick(client);
                let next = self.now + self.cfg.client_tick_ms.max(1);
                self.push(next, Event::ClientTick { client });
            }
        }
    }

    fn step(&mut self, i: usize, input: Input) {
        let now = self.now;
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        let acts = core.step(now, input);
        self.apply(i, acts);
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(to, m) => self.route(i, usize::from(to.0), m),
                Action::Broadcast(m) => {
                    for j in 0..self.n() {
                        if j != i {
                            self.route(i, j, m.clone());
                        }
                    }
                }
                Action::SetTimer(id, ms) => {
                    self.timer_gen += 1;
                    let gen = self.timer_gen;
                    self.nodes[i].timers.insert(id, gen);
                    self.push(self.now + ms, Event::Timer { node: i, id, gen });
                }
                Action::CancelTimer(id) => {
                    self.nodes[i].timers.remove(&id);
                }
                Action::Persist(d) => {
                    let node = &mut self.nodes[i];
                    node.records.retain(|_, r| !r.covered_by(&d));
                    node.durable = Some(d);
                }
                Action::Record(r) => {
                    self.nodes[i].records.insert(r.key(), r);
                }
                Action::Deliver { seq, digest, proposal } => self.on_deliver(i, seq, digest, &proposal),
                Action::ViewChanged(_) => {}
            }
        }
    }

    /// Byzantine middleware, then the network.
    fn route(&mut self, from: usize, to: usize, msg: Msg) {
        if to >= self.n() {
            return;
        }
        let mut msgs = vec![(msg, 0u64)];
        let node = &mut self.nodes[from];
        for mw in node.middleware.iter_mut() {
            let mut ctx = MwCtx {
                now: self.now,
                me: node_id(from),
                n: 3 * self.cfg.f + 1,
                identity: &node.identity,
                rng: &mut self.rng,
            };
            msgs = msgs
                .into_iter()
                .flat_map(|(m, d)| {
                    mw.outgoing(&mut ctx, node_id(to), m)
                        .into_iter()
                        .map(move |(m, e)| (m, d + e))
                })
                .collect();
        }
        for (m, extra) in msgs {
            if self.cut.contains(&(from, to)) {
                self.net.cut += 1;
                continue;
            }
            self.transmit(Principal::Node(node_id(from)), to, m, extra);
        }
    }

    fn transmit(&mut self, from: Principal, to: usize, msg: Msg, extra_ms: u64) {
        self.net.sent += 1;
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss) {
            self.net.lost += 1;
            return;
        }
        let d = self
            .rng
            .gen_range(self.cfg.min_delay_ms..=self.cfg.max_delay_ms.max(self.cfg.min_delay_ms));
        if self.cfg.duplicate > 0.0 && self.rng.gen_bool(self.cfg.duplicate) {
            self.net.duplicated += 1;
            let d2 = self
                .rng
                .gen_range(self.cfg.min_delay_ms..=self.cfg.max_delay_ms.max(self.cfg.min_delay_ms) * 2);
            self.push(
                self.now + d2 + extra_ms,
                Event::ToNode {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
        self.push(self.now + d + extra_ms, Event::ToNode { from, to, msg });
    }

    fn on_deliver(&mut self, i: usize, seq: Seq, digest: Digest, p: &zz_wire::Proposal) {
        let view = self.nodes[i].core.as_ref().map_or(0, Core::view);
        let node = &mut self.nodes[i];
        node.delivered.push((seq, digest));
        if !p.requests.is_empty() {
            node.first_commit_in_view.entry(view).or_insert(self.now);
        }
        if !node.byzantine {
            if seq != node.next_deliver {
                self.violations
                    .push(format!("a{i} delivered seq {seq}, expected {}", node.next_deliver));
            }
            if p.digest() != digest {
                self.violations
                    .push(format!("a{i} seq {seq}: digest does not match proposal"));
            }
            match self.agreed.get(&seq) {
                Some(d) if *d != digest => self
                    .violations
                    .push(format!("a{i} seq {seq}: delivered {digest:?}, others {d:?}")),
                Some(_) => {}
                None => {
                    self.agreed.insert(seq, digest);
                }
            }
            for r in &p.requests {
                let key = (r.body.client, r.body.first_id);
                if let Some(prev) = node.batches.insert(key, seq) {
                    if prev != seq {
                        self.violations
                            .push(format!("a{i}: batch {key:?} at seq {prev} and {seq}"));
                    }
                }
            }
            if !p.requests.is_empty() {
                let ts = p.nondet.timestamp_ms;
                node.max_timestamp = node.max_timestamp.max(ts);
                node.max_skew_seen = node.max_skew_seen.max(ts.abs_diff(self.now));
            }
        }
        node.next_deliver = node.next_deliver.max(seq + 1);
        let need = self.cfg.f + 1;
        for r in &p.requests {
            let c = usize::from(r.body.client.0);
            if let Some(client) = self.clients.get_mut(c) {
                client.on_delivered(r.body.first_id, i, view, need);
            }
        }
    }

    fn client_tick(&mut self, c: usize) {
        let n = self.n();
        let (ops, outstanding, total, retry) = (
            self.cfg.ops_per_batch,
            self.cfg.outstanding,
            self.cfg.batches_per_client,
            self.cfg.timing.client_retry_ms,
        );
        let mut sends: Vec<(usize, Msg)> = Vec::new();
        let client = &mut self.clients[c];
        while client.inflight.len() < outstanding && client.submitted < total {
            let b = client.make_batch(APP, ops);
            let to = usize::try_from(client.view_hint % n as View).unwrap_or(0);
            sends.push((to, Msg::Request(b.clone())));
            client.inflight.insert(
                b.body.first_id,
                InFlight {
                    batch: b,
                    sent_ms: self.now,
                    replies: BTreeSet::new(),
                },
            );
        }
        for f in client.inflight.values_mut() {
            if self.now >= f.sent_ms + retry {
                f.sent_ms = self.now;
                client.retries += 1;
                for to in 0..n {
                    sends.push((to, Msg::Request(f.batch.clone())));
                }
            }
        }
        let me = Principal::Client(client.client);
        for (to, m) in sends {
            self.transmit(me, to, m, 0);
        }
    }
}
