//! The execution replica as a state machine: verified messages and ticks go
//! in, messages to send come out. It does no I/O of its own except through
//! the `StateSource` it is handed, which fetches checkpoint state from peers
//! (over the network in the agent, from in-memory replicas in tests).

use crate::app::{self, App, Ctx};
use crate::catchup::CatchupMode;
use crate::faults::Faults;
use crate::merkle::Shape;
use crate::orders::OrderBook;
use crate::source::StateSource;
use crate::state::State;
use std::collections::BTreeMap;
use std::time::Duration;
use zz_wire::{
    AppId, AppResponse, BatchResult, CheckpointCert, ClientId, ControlCmd, Deployment, Digest, ExecCheckpoint,
    ExecReply, FetchOrders, Heartbeat, Identity, Keyring, Msg, NodeId, Packed, Principal, ReplicaFault, ReplicaId, Seq,
    Signed,
};

pub use zz_wire::config::ADMIN_CLIENT;
/// Exit code of the `crash` fault.
pub const CRASH_EXIT: i32 = 101;
/// How long the `slow` fault delays each batch.
pub const SLOW_DELAY: Duration = Duration::from_millis(100);
/// Least time between two FETCH_ORDERS for the same gap.
const REFETCH_MS: u64 = 300;
/// Wait before retrying a catch-up (or a prefetch) that failed for the
/// same seq; it doubles with each further failure, up to
/// `CATCH_UP_RETRY_MAX_MS`, so a checkpoint no peer serves costs little.
const CATCH_UP_RETRY_MS: u64 = 50;
const CATCH_UP_RETRY_MAX_MS: u64 = 1_000;
/// How many ready seqs one prefetch looks ahead.
const PREFETCH_SEQS: u64 = 64;
/// Most runs of one op that each stop at an undeclared stale key.
const MAX_STALE_RUNS: usize = 4096;
/// Most orders one FETCH_ORDERS asks for (nodes answer at most 512).
const FETCH_SPAN: u64 = 512;

/// A state fetch that failed for `seq` at `at`, the `tries`-th time in a row.
#[derive(Clone, Copy, Debug)]
struct Failed {
    seq: Seq,
    at: u64,
    tries: u32,
}

impl Failed {
    /// `prev` followed by a failure for `seq` at `now`.
    fn after(prev: Option<Failed>, seq: Seq, now: u64) -> Failed {
        let tries = prev.filter(|f| f.seq == seq).map_or(1, |f| f.tries.saturating_add(1));
        Failed { seq, at: now, tries }
    }

    fn wait_ms(&self) -> u64 {
        CATCH_UP_RETRY_MS
            .saturating_mul(1 << self.tries.saturating_sub(1).min(8))
            .min(CATCH_UP_RETRY_MAX_MS)
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Send to every agreement node.
    Broadcast(Msg),
    ToNode(NodeId, Msg),
    ToOrchestrator(Msg),
    /// Wait this long before carrying out the actions after it.
    Delay(Duration),
    /// Exit the process at once with this code.
    Exit(i32),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub me: ReplicaId,
    pub f: usize,
    pub checkpoint_interval: u64,
    pub nodes: Vec<NodeId>,
    pub peers: Vec<ReplicaId>,
    pub shape: Shape,
    /// The client whose ops may install apps (`admin` in the deployment).
    pub admin: Option<ClientId>,
}

impl Config {
    pub fn from_deployment(d: &Deployment, me: ReplicaId) -> Self {
        Config {
            me,
            f: d.f,
            checkpoint_interval: d.checkpoint_interval,
            nodes: d.node_ids().collect(),
            peers: d.replicas(me.app).filter(|r| *r != me).collect(),
            shape: Shape::default(),
            admin: d
                .clients
                .iter()
                .find(|c| c.name == ADMIN_CLIENT)
                .map(|c| ClientId(c.id)),
        }
    }
}

/// Counters the heartbeat, the logs and the tests read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub executed_seqs: u64,
    pub executed_ops: u64,
    pub fetched_objects: u64,
    pub fetched_nodes: u64,
    pub state_requests: u64,
    pub bad_state_from_peers: u64,
    pub dropped_msgs: u64,
    pub catchups: u64,
    pub diverged_checkpoints: u64,
}

pub struct Replica {
    pub(crate) cfg: Config,
    pub(crate) identity: Identity,
    keys: Keyring,
    pub(crate) app: Box<dyn App>,
    pub(crate) state: State,
    book: OrderBook,
    pub(crate) last_executed: Seq,
    pub(crate) stable: Option<CheckpointCert>,
    /// A certified checkpoint above `last_executed` not yet caught up to.
    pending_cert: Option<CheckpointCert>,
    /// The checkpoint a catch-up last failed for, and when: it is retried
    /// on a tick, never on a message, so a woken replica reading a backlog
    /// reaches the newer certificates in it quickly. (A failed fetch may
    /// have blocked for its peers' timeouts, longer than any retry wait.)
    catch_up_failed: Option<Failed>,
    /// The checkpoint no peer could serve the next batch's stale objects
    /// from (peers keep only the last stable ones): replaying on from it is
    /// impossible, so a newer certified checkpoint is caught up to instead,
    /// even when its orders are at hand.
    replay_blocked_at: Option<Seq>,
    /// The seq whose stale objects could not be fetched last, and when: as
    /// for a failed catch-up, retried on a tick, never on a message.
    prefetch_failed: Option<Failed>,
    pub(crate) faults: Faults,
    last_nonce: u64,
    last_fetch_orders_ms: Option<u64>,
    /// The incomplete next seq and since when it has been waited for.
    waiting: Option<(Seq, u64)>,
    fetch_rr: usize,
    pub(crate) now_ms: u64,
    /// Bad data served by each peer; peers with fewer reports are asked first.
    pub(crate) bad_peers: BTreeMap<ReplicaId, u64>,
    /// Fetches each peer left unanswered since its last answer (paused,
    /// fenced or gone); such peers are asked last.
    pub(crate) silent_peers: BTreeMap<ReplicaId, u64>,
    pub(crate) stats: Stats,
    pub(crate) catchup: CatchupMode,
    /// A full transfer is holding execution back (for its one log line).
    pub(crate) transferring: bool,
}

impl Replica {
    /// The catch-up mode comes from `ZZ_AGENT_CATCHUP` (see `CatchupMode::from_env`).
    pub fn new(cfg: Config, identity: Identity, keys: Keyring, app: Box<dyn App>) -> Self {
        let f = cfg.f;
        let shape = cfg.shape;
        Replica {
            cfg,
            identity,
            keys,
            app,
            state: State::new(shape),
            book: OrderBook::new(f),
            last_executed: 0,
            stable: None,
            pending_cert: None,
            catch_up_failed: None,
            replay_blocked_at: None,
            prefetch_failed: None,
            faults: Faults::default(),
            last_nonce: 0,
            last_fetch_orders_ms: None,
            waiting: None,
            fetch_rr: 0,
            now_ms: 0,
            bad_peers: BTreeMap::new(),
            silent_peers: BTreeMap::new(),
            stats: Stats::default(),
            catchup: CatchupMode::from_env(),
            transferring: false,
        }
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    pub fn me(&self) -> ReplicaId {
        self.cfg.me
    }

    pub fn app_id(&self) -> AppId {
        self.cfg.me.app
    }

    pub fn last_executed(&self) -> Seq {
        self.last_executed
    }

    pub fn catchup_mode(&self) -> CatchupMode {
        self.catchup
    }

    pub fn set_catchup_mode(&mut self, mode: CatchupMode) {
        self.catchup = mode;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    pub fn root(&mut self) -> Digest {
        self.state.root()
    }

    pub fn stable_seq(&self) -> Seq {
        self.stable.as_ref().map_or(0, |c| c.seq)
    }

    /// The newest stable checkpoint this replica has reached: the certified
    /// one once it executed that far, else the last checkpoint boundary it
    /// executed past. A certificate it has only heard of (a catch-up still
    /// failing) does not count: the orchestrator pauses a standby as ready,
    /// possibly the only copy after the next fencing, on this figure.
    pub fn held_checkpoint(&self) -> Seq {
        let stable = self.stable_seq();
        if stable <= self.last_executed {
            stable
        } else {
            let k = self.cfg.checkpoint_interval.max(1);
            self.last_executed / k * k
        }
    }

    /// On start or resume: ask for the orders (and the stable checkpoint) we miss.
    pub fn start(&mut self, now_ms: u64) -> Vec<Out> {
        self.now_ms = now_ms;
        self.last_fetch_orders_ms = None;
        self.fetch_orders(self.last_executed + 1)
    }

    /// Handles one message from `from` (the link it came on).
    pub fn on_msg(&mut self, now_ms: u64, from: Principal, msg: Msg, src: &mut dyn StateSource) -> Vec<Out> {
        self.now_ms = now_ms;
        if let Msg::Control(c) = msg {
            return self.on_control(c);
        }
        if self.faults.has(ReplicaFault::Hang) {
            return Vec::new();
        }
        match msg {
            Msg::Order(o) => {
                if !self.accept_order(from, o) {
                    self.stats.dropped_msgs += 1;
                }
                self.drive(src, false)
            }
            Msg::OrdersReply(r) => {
                let by = Principal::Node(r.body.node);
                if r.verify(&self.keys).is_err() || r.body.app != self.app_id() || by != from {
                    self.stats.dropped_msgs += 1;
                    return Vec::new();
                }
                let mut out = Vec::new();
                if let Some(c) = r.body.stable {
                    out.extend(self.on_cert(c));
                }
                for o in r.body.orders {
                    if !self.accept_order(by, o) {
                        self.stats.dropped_msgs += 1;
                    }
                }
                out.extend(self.drive(src, false));
                out
            }
            Msg::CheckpointCert(c) => {
                let mut out = self.on_cert(c);
                out.extend(self.drive(src, false));
                out
            }
            Msg::StateRequest(r) => self.on_state_request(from, r),
            _ => {
                self.stats.dropped_msgs += 1;
                Vec::new()
            }
        }
    }

    /// Time passes: re-ask for missing orders, retry a pending catch-up.
    pub fn on_tick(&mut self, now_ms: u64, src: &mut dyn StateSource) -> Vec<Out> {
        self.now_ms = now_ms;
        if self.faults.has(ReplicaFault::Hang) {
            return Vec::new();
        }
        self.drive(src, true)
    }

    /// An order is unsigned: it counts only as the vote of the node whose
    /// link (or signed orders reply) it came on.
    fn accept_order(&mut self, from: Principal, o: zz_wire::Order) -> bool {
        if o.app != self.app_id() || Principal::Node(o.node) != from {
            return false;
        }
        if o.seq <= self.last_executed {
            return true;
        }
        self.book.add(o, self.last_executed + 1) == crate::orders::Added::Held
    }

    /// A stable checkpoint certificate arrived (pushed, or in an ORDERS_REPLY).
    fn on_cert(&mut self, c: CheckpointCert) -> Vec<Out> {
        if c.app != self.app_id() || c.seq <= self.stable_seq() || c.verify(&self.keys, self.cfg.f + 1).is_err() {
            return Vec::new();
        }
        if let Some(root) = self.state.snapshot_root(c.seq) {
            if root == c.root {
                self.state.stabilize(c.seq);
            } else {
                self.stats.diverged_checkpoints += 1;
                tracing::warn!(seq = c.seq, "my checkpoint differs from the certified one");
            }
        }
        if c.seq > self.last_executed {
            self.pending_cert = Some(c.clone());
        }
        self.stable = Some(c);
        Vec::new()
    }

    /// Executes every seq that is ready, catching up state first when the
    /// next seq is below a certified checkpoint we have not reached.
    /// `tick`: time passed (no message), so failed fetches may be retried.
    fn drive(&mut self, src: &mut dyn StateSource, tick: bool) -> Vec<Out> {
        let mut out = Vec::new();
        loop {
            if let Some(c) = self.pending_cert.clone() {
                if c.seq <= self.last_executed {
                    self.pending_cert = None;
                } else if !self.ready_through(c.seq)
                    || self.mid_full_transfer()
                    || self.replay_blocked_at.is_some_and(|at| c.seq > at)
                {
                    if self.backing_off(self.catch_up_failed, c.seq, tick) {
                        return out;
                    }
                    match self.catch_up(&c, src) {
                        Ok(()) => {
                            self.catch_up_failed = None;
                            self.replay_blocked_at = None;
                            self.pending_cert = None;
                            self.book.prune_below(self.last_executed + 1);
                            self.last_fetch_orders_ms = None;
                            out.extend(self.fetch_orders(self.last_executed + 1));
                        }
                        Err(e) => {
                            tracing::warn!(seq = c.seq, "catch-up failed: {e}");
                            self.catch_up_failed = Some(Failed::after(self.catch_up_failed, c.seq, self.now_ms));
                            // The nodes' answer carries their newest stable
                            // certificate, which peers may still serve.
                            out.extend(self.fetch_orders(self.last_executed + 1));
                            return out;
                        }
                    }
                }
            }
            if self.holding_for_full_transfer(src) {
                return out;
            }
            let next = self.last_executed + 1;
            if self.book.ready(next).is_none() {
                break;
            }
            if self.backing_off(self.prefetch_failed, next, tick) {
                return out;
            }
            // Run from a copy: a seq whose state cannot be fetched is taken
            // back and stays in the book for the next try.
            let Some(p) = self.book.ready(next).cloned() else { break };
            let run = self.prefetch(next, src).and_then(|()| self.execute(next, &p, src));
            let Err(e) = run.map(|o| out.extend(o)) else {
                self.book.take(next);
                continue;
            };
            self.prefetch_failed = Some(Failed::after(self.prefetch_failed, next, self.now_ms));
            tracing::warn!(seq = next, "cannot fetch state for the next batch: {e}");
            // Peers may have dropped the checkpoint this replica fetches
            // from (they keep the last stable ones): catch up to a newer
            // certificate instead, one known already or the one the
            // nodes' answer carries.
            if let crate::catchup::CatchupError::NoPeer(at) = e {
                self.replay_blocked_at = Some(at);
                if self.pending_cert.is_none() {
                    self.pending_cert = self.stable.clone().filter(|c| c.seq > at.max(self.last_executed));
                }
                if self.pending_cert.is_some() {
                    continue;
                }
            }
            out.extend(self.fetch_orders(self.last_executed + 1));
            return out;
        }
        if self.gap() {
            out.extend(self.fetch_orders(self.last_executed + 1));
        }
        out
    }

    /// Whether `failed` says to wait before trying `seq` again: until a
    /// tick at least its wait after the failure. Retrying on messages would
    /// pay the failed fetch's peer timeouts once per message of a backlog.
    fn backing_off(&self, failed: Option<Failed>, seq: Seq, tick: bool) -> bool {
        failed.is_some_and(|f| f.seq == seq && (!tick || self.now_ms < f.at.saturating_add(f.wait_ms())))
    }

    /// Orders are missing: some node is past the next seq, a certified
    /// checkpoint is ahead, or the next seq has stayed incomplete too long.
    fn gap(&mut self) -> bool {
        let next = self.last_executed + 1;
        if self.book.highest_seen() > next || self.pending_cert.is_some() {
            return true;
        }
        if self.book.highest_seen() < next {
            self.waiting = None;
            return false;
        }
        match self.waiting {
            Some((s, since)) if s == next => self.now_ms >= since + REFETCH_MS,
            _ => {
                self.waiting = Some((next, self.now_ms));
                false
            }
        }
    }

    /// A full transfer is still under way from an older checkpoint: catch up
    /// to the newer one rather than replay, as peers may drop the older one.
    fn mid_full_transfer(&self) -> bool {
        self.catchup == CatchupMode::Full && self.state.stale_count() > 0
    }

    fn ready_through(&self, seq: Seq) -> bool {
        (self.last_executed + 1..=seq).all(|s| self.book.ready(s).is_some())
    }

    /// Asks f+1 nodes (rotating) for orders from `from`, at most every REFETCH_MS.
    fn fetch_orders(&mut self, from: Seq) -> Vec<Out> {
        if let Some(t) = self.last_fetch_orders_ms {
            if self.now_ms < t + REFETCH_MS {
                return Vec::new();
            }
        }
        self.last_fetch_orders_ms = Some(self.now_ms);
        let req = self.identity.sign(FetchOrders {
            replica: self.cfg.me,
            from,
            to: from + FETCH_SPAN - 1,
        });
        let n = self.cfg.nodes.len();
        let k = (self.cfg.f + 1).min(n);
        let out = (0..k)
            .map(|i| Out::ToNode(self.cfg.nodes[(self.fetch_rr + i) % n], Msg::FetchOrders(req.clone())))
            .collect();
        self.fetch_rr = (self.fetch_rr + 1) % n.max(1);
        out
    }

    /// Runs one committed proposal; replies, and checkpoints on the interval.
    /// If the state an op reads cannot be fetched, or a tenant's component
    /// is not here yet, the seq's writes are taken back and it is not
    /// answered: this replica is behind, which is not a fault, while a
    /// failed answer would disagree and be taken for one.
    fn execute(
        &mut self,
        seq: Seq,
        p: &zz_wire::Proposal,
        src: &mut dyn StateSource,
    ) -> Result<Vec<Out>, crate::catchup::CatchupError> {
        let mut out = Vec::new();
        if self.faults.has(ReplicaFault::Slow) {
            out.push(Out::Delay(SLOW_DELAY));
        }
        // Only a replica with stale objects can meet one it cannot fetch,
        // and only an app that may lack something else (a tenant's
        // component) can stop for that.
        let mut undo = (self.state.stale_count() > 0 || self.app.may_be_unavailable()).then(Vec::new);
        let mut ops = 0;
        let mut ctx = Ctx {
            seq,
            nondet: p.nondet,
            op: 0,
            admin: false,
        };
        let mut responses: Vec<Vec<AppResponse>> = Vec::with_capacity(p.requests.len());
        for batch in &p.requests {
            ctx.admin = Some(batch.body.client) == self.cfg.admin;
            let mut rs = Vec::with_capacity(batch.body.ops.len());
            for op in batch.body.ops.iter() {
                let this = ctx;
                ctx.op += 1;
                rs.push(match op {
                    Ok(op) => match self.run_op(&this, &op, src, undo.as_mut()) {
                        Ok(r) => r,
                        Err(e) => {
                            self.take_back(undo.unwrap_or_default());
                            return Err(e);
                        }
                    },
                    // Every correct replica finds the same bytes undecodable.
                    Err(_) => app::error(400, "malformed request"),
                });
            }
            ops += rs.len() as u64;
            responses.push(rs);
        }
        self.stats.executed_ops += ops;
        self.stats.executed_seqs += 1;
        self.last_executed = seq;
        let mut root = self.state.root();
        if self.faults.has(ReplicaFault::CorruptReply) {
            crate::faults::corrupt_results(&mut responses, &mut root);
        }
        let mut results = Vec::with_capacity(p.requests.len());
        for (batch, rs) in p.requests.iter().zip(&responses) {
            let packed = Packed::pack(rs).unwrap_or_else(|e| {
                // Responses are plain data; this would be a bug, not input.
                tracing::error!("cannot pack responses: {e}");
                Packed::default()
            });
            results.push(BatchResult {
                client: batch.body.client,
                first_id: batch.body.first_id,
                responses: packed,
            });
        }
        let reply = ExecReply {
            replica: self.cfg.me,
            seq,
            results,
            root,
        };
        out.push(Out::Broadcast(Msg::ExecReply(reply)));
        if seq.is_multiple_of(self.cfg.checkpoint_interval) {
            let mut root = self.state.snapshot(seq);
            if self.stable.as_ref().is_some_and(|c| c.seq == seq && c.root == root) {
                self.state.stabilize(seq);
            }
            if self.faults.has(ReplicaFault::BadCheckpoint) {
                root = crate::faults::flip(root);
            }
            let cp = self.identity.sign(ExecCheckpoint {
                replica: self.cfg.me,
                seq,
                root,
            });
            out.push(Out::Broadcast(Msg::ExecCheckpoint(cp)));
        }
        Ok(out)
    }

    /// Undoes the writes of a seq that could not finish, latest first.
    fn take_back(&mut self, undo: app::Undo) {
        for (k, old) in undo.into_iter().rev() {
            if self.state.write(k, old).is_err() {
                // Written moments ago, so not stale: a bug, not input.
                tracing::error!("cannot take back a write");
            }
        }
    }

    /// One op; a stale key it did not declare is fetched and the op re-run.
    /// If no peer can provide it, the error goes back and the seq waits
    /// (`execute`); the log goes on without this replica, which is behind.
    /// With `undo`, each write's old value is noted there.
    fn run_op(
        &mut self,
        ctx: &Ctx,
        op: &zz_wire::AppRequest,
        src: &mut dyn StateSource,
        mut undo: Option<&mut app::Undo>,
    ) -> Result<zz_wire::AppResponse, crate::catchup::CatchupError> {
        // A built-in app declares its keys, so a second miss is rare; a Wasm
        // app finds its stale keys one run at a time. Every round fetches one
        // more object, so the loop ends.
        for _ in 0..MAX_STALE_RUNS {
            let ran = match undo.as_deref_mut() {
                Some(undo) => app::run_logged(self.app.as_ref(), &mut self.state, ctx, op, undo),
                None => app::run(self.app.as_ref(), &mut self.state, ctx, op),
            };
            match ran {
                Ok(r) => return Ok(r),
                Err(app::NotRun::Unavailable(why)) => return Err(crate::catchup::CatchupError::Unavailable(why)),
                Err(app::NotRun::Stale(stale)) => {
                    let mut keys = self.app.probe(ctx, &self.state, op);
                    keys.push(stale.0);
                    keys.sort();
                    keys.dedup();
                    if let Err(e) = self.fetch_objects(keys, src) {
                        tracing::warn!(seq = ctx.seq, "undeclared stale key could not be fetched: {e}");
                        return Err(e);
                    }
                }
            }
        }
        Ok(app::error(503, "state unavailable"))
    }

    /// Fetches every stale object the ops of `seq` declare, before it runs,
    /// together with those of the ready seqs right after it: one round trip
    /// for a whole replay run. Early is safe: a stale object is untouched
    /// since the checkpoint, so its checkpoint version is its current one.
    fn prefetch(&mut self, seq: Seq, src: &mut dyn StateSource) -> Result<(), crate::catchup::CatchupError> {
        if self.state.stale_count() == 0 {
            return Ok(());
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for s in seq..seq + PREFETCH_SEQS {
            let Some(p) = self.book.ready(s) else { break };
            keys.extend(
                p.requests
                    .iter()
                    .flat_map(|b| b.body.ops.iter())
                    .flat_map(|op| op.map(|op| self.app.keys(&op)).unwrap_or_default())
                    .filter(|k| self.state.is_stale(k)),
            );
        }
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        self.fetch_objects(keys, src)
    }

    /// A signed heartbeat for the orchestrator (none while hung).
    pub fn heartbeat(&mut self, now_ms: u64) -> Option<Msg> {
        if self.faults.has(ReplicaFault::Hang) {
            return None;
        }
        let hb = Heartbeat {
            from: Principal::Replica(self.cfg.me),
            app: self.app_id(),
            view: 0,
            last_executed: self.last_executed,
            last_checkpoint: self.held_checkpoint(),
            fetched_objects: self.stats.fetched_objects,
            stale_objects: self.state.stale_count() as u64,
            time_ms: now_ms,
        };
        Some(Msg::Heartbeat(self.identity.sign(hb)))
    }

    /// An orchestrator command: signed by it, aimed at me, with a fresh nonce.
    fn on_control(&mut self, c: Signed<zz_wire::Control>) -> Vec<Out> {
        if c.author() != Principal::Orchestrator
            || c.verify(&self.keys).is_err()
            || c.body.target != Principal::Replica(self.cfg.me)
            || c.body.nonce <= self.last_nonce
        {
            self.stats.dropped_msgs += 1;
            return Vec::new();
        }
        self.last_nonce = c.body.nonce;
        match c.body.cmd {
            ControlCmd::SetFault(ReplicaFault::Crash) => return vec![Out::Exit(CRASH_EXIT)],
            ControlCmd::SetFault(ReplicaFault::CorruptState) => {
                self.faults.set(ReplicaFault::CorruptState);
                crate::faults::corrupt_state(&mut self.state);
            }
            ControlCmd::SetFault(k) => self.faults.set(k),
            ControlCmd::ClearFaults => self.faults.clear(),
            ControlCmd::SetNodeFault(_) => self.stats.dropped_msgs += 1,
        }
        tracing::info!(faults = ?self.faults, "fault modes changed");
        Vec::new()
    }
}
