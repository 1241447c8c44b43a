//! Becoming correct again after a pause, and serving peers that do.
//!
//! Catch-up to a certified checkpoint `c` (root `R`):
//! 1. walk the tree against a peer's copy of `c`, level by level, asking only
//!    for the children of nodes whose hash differs from ours; every answer is
//!    checked against the hash its parent (ultimately `R`) promised;
//! 2. adopt the differing buckets' entries: objects whose leaf differs become
//!    stale, no value is copied;
//! 3. the replica then replays orders after `c`, fetching each stale object a
//!    request touches before it runs (`fetch_objects`), and the rest in the
//!    background (`background_sync`), each checked against its certified leaf.
//!
//! A peer that serves anything that does not verify is reported (log and
//! counter) and the next peer is asked.
//!
//! `CatchupMode::Full` is the classic baseline ZZ is measured against: the
//! replica transfers every stale object of the checkpoint (for a fresh
//! instance, the whole checkpoint) before it executes anything.

use crate::faults::corrupt_give;
use crate::merkle::{bucket_hash, entries_of, inner_hash, unflatten, Entry};
use crate::replica::{Out, Replica};
use crate::source::StateSource;
use std::collections::BTreeSet;
use zz_wire::{
    CheckpointCert, Digest, Msg, Principal, ReplicaFault, ReplicaId, Seq, Signed, StateGive, StateRequest,
    StateResponse, StateWant, TreePath,
};

/// Most tree paths asked in one request.
pub const NODES_PER_REQUEST: usize = 4096;
/// Most objects asked in one request.
pub const OBJECTS_PER_REQUEST: usize = 1024;
/// A server stops adding to an answer past this many bytes (frames are ≤ 16 MiB).
const MAX_SERVE_BYTES: usize = 8 << 20;
/// Buckets asked per request by a full transfer (answers are capped by bytes).
pub const FULL_BUCKETS_PER_STEP: usize = 4096;
/// Requests of a full transfer per `drive`, so heartbeats and messages are
/// still handled between them and a long transfer is not taken for silence.
const FULL_STEPS_PER_DRIVE: usize = 4;
/// Names the environment variable the agent reads its catch-up mode from.
pub const CATCHUP_ENV: &str = "ZZ_AGENT_CATCHUP";

/// How a replica behind a certified checkpoint gets the state it lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CatchupMode {
    /// Fetch what the replayed requests touch first, the rest in the background.
    #[default]
    OnDemand,
    /// Fetch every stale object before executing (the full-transfer baseline).
    Full,
}

impl CatchupMode {
    /// `full` or `on-demand`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(CatchupMode::Full),
            "on-demand" => Some(CatchupMode::OnDemand),
            _ => None,
        }
    }

    /// From `ZZ_AGENT_CATCHUP` (how the process backend's bench reaches its
    /// agents); unset means on-demand, an unknown value is logged and ignored.
    pub fn from_env() -> Self {
        let Ok(v) = std::env::var(CATCHUP_ENV) else {
            return CatchupMode::OnDemand;
        };
        let mode = CatchupMode::parse(&v).unwrap_or_else(|| {
            tracing::warn!(value = %v, "{CATCHUP_ENV} is neither full nor on-demand; using on-demand");
            CatchupMode::OnDemand
        });
        if mode == CatchupMode::Full {
            tracing::info!("{CATCHUP_ENV}=full: the whole checkpoint is fetched before executing");
        }
        mode
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatchupError {
    #[error("no peer could serve checkpoint {0}")]
    NoPeer(Seq),
    #[error("adopted state hashes to {got:?}, certificate says {want:?}")]
    Inconsistent { got: Digest, want: Digest },
    /// Not state: something else the seq needs (a tenant's component).
    #[error("not here yet: {0}")]
    Unavailable(String),
}

impl Replica {
    /// Peers to ask, those that served bad data least often first.
    fn peer_order(&self) -> Vec<ReplicaId> {
        let mut ps = self.cfg.peers.clone();
        ps.retain(|p| *p != self.cfg.me);
        ps.sort_by_key(|p| {
            (
                self.bad_peers.get(p).copied().unwrap_or(0),
                self.silent_peers.get(p).copied().unwrap_or(0),
            )
        });
        ps
    }

    /// Remembers whether `peer` answered, so silent peers are asked last.
    fn note_answer<E>(&mut self, peer: ReplicaId, r: &Result<StateGive, E>) {
        if matches!(r, Ok(g) if !matches!(g, StateGive::Unavailable)) {
            self.silent_peers.remove(&peer);
        } else {
            *self.silent_peers.entry(peer).or_default() += 1;
        }
    }

    fn report_bad(&mut self, peer: ReplicaId, what: &str) {
        self.stats.bad_state_from_peers += 1;
        *self.bad_peers.entry(peer).or_default() += 1;
        tracing::warn!(%peer, "peer served {what} that does not verify; asking another");
    }

    /// The checkpoint to fetch stale objects from: the newest certified one
    /// this replica holds a matching snapshot of (stale objects have not
    /// changed since, or they would not be stale).
    fn fetch_checkpoint(&self) -> Option<Seq> {
        let c = self.stable.as_ref()?;
        if self.state.snapshot_root(c.seq) == Some(c.root) {
            return Some(c.seq);
        }
        self.state.snapshot_seqs().into_iter().rev().find(|s| *s <= c.seq)
    }

    pub(crate) fn catch_up(&mut self, c: &CheckpointCert, src: &mut dyn StateSource) -> Result<(), CatchupError> {
        self.stats.catchups += 1;
        let started = std::time::Instant::now();
        let nodes_before = self.stats.fetched_nodes;
        let shape = self.state.shape();
        let mut differing: Vec<(u64, Vec<Entry>)> = Vec::new();
        let mut opaque: Vec<(u64, Digest)> = Vec::new();
        let mut frontier = Vec::new();
        if self.state.root() != c.root {
            frontier.push((TreePath { level: 0, index: 0 }, c.root));
        }
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for chunk in frontier.chunks(NODES_PER_REQUEST) {
                let answers = self.fetch_nodes(c.seq, chunk, src)?;
                for ((p, _), kids) in chunk.iter().zip(answers) {
                    if p.level == shape.depth() {
                        differing.push((p.index, unflatten(&kids).unwrap_or_default()));
                        continue;
                    }
                    for (child, h) in shape.children_of(*p).zip(kids) {
                        if self.state.tree().node(child) != Some(h) {
                            next.push((child, h));
                        }
                    }
                }
            }
            if next.first().is_some_and(|(p, _)| p.level == shape.depth()) {
                opaque = self.take_opaque(&mut next);
            }
            frontier = next;
        }
        let root = self.state.adopt(c.seq, differing, opaque);
        if root != c.root {
            return Err(CatchupError::Inconsistent {
                got: root,
                want: c.root,
            });
        }
        self.state.stabilize(c.seq);
        self.last_executed = c.seq;
        tracing::info!(
            seq = c.seq,
            stale = self.state.stale_count(),
            tree_nodes = self.stats.fetched_nodes - nodes_before,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "caught up to the certified checkpoint"
        );
        Ok(())
    }

    /// Of the differing buckets the walk reached, those this replica holds
    /// nothing of, when there are more than one request's worth: their
    /// entries would only say that every object in them is stale, so their
    /// hash (verified with its parent) stands in until a request or the
    /// background sync fetches them whole. A fresh replica's walk thus stops
    /// above the leaf level whatever the size of the state, while a replica
    /// woken a little behind still learns which few objects changed.
    fn take_opaque(&self, buckets: &mut Vec<(TreePath, Digest)>) -> Vec<(u64, Digest)> {
        let tree = self.state.tree();
        let empty_here = |p: &TreePath| tree.bucket(p.index).is_some_and(|b| b.entries.is_empty());
        if buckets.iter().filter(|(p, _)| empty_here(p)).count() <= NODES_PER_REQUEST {
            return Vec::new();
        }
        let (opaque, rest): (Vec<_>, Vec<_>) = buckets.drain(..).partition(|(p, _)| empty_here(p));
        *buckets = rest;
        opaque.into_iter().map(|(p, h)| (p.index, h)).collect()
    }

    /// Children of each path, checked against the hash each path must have.
    fn fetch_nodes(
        &mut self,
        seq: Seq,
        chunk: &[(TreePath, Digest)],
        src: &mut dyn StateSource,
    ) -> Result<Vec<Vec<Digest>>, CatchupError> {
        let paths: Vec<TreePath> = chunk.iter().map(|(p, _)| *p).collect();
        for peer in self.peer_order() {
            let r = src.fetch(peer, seq, StateWant::Nodes(paths.clone()));
            self.note_answer(peer, &r);
            let give = match r {
                Ok(StateGive::Nodes(ns)) => ns,
                Ok(StateGive::Unavailable) | Err(_) => continue,
                Ok(_) => {
                    self.report_bad(peer, "an answer of the wrong kind");
                    continue;
                }
            };
            if give.len() == chunk.len()
                && give
                    .iter()
                    .zip(chunk)
                    .all(|((gp, kids), (p, h))| gp == p && self.node_verifies(*p, kids, h))
            {
                self.stats.fetched_nodes += give.len() as u64;
                return Ok(give.into_iter().map(|(_, k)| k).collect());
            }
            self.report_bad(peer, "tree nodes");
        }
        Err(CatchupError::NoPeer(seq))
    }

    fn node_verifies(&self, p: TreePath, kids: &[Digest], want: &Digest) -> bool {
        let shape = self.state.shape();
        if p.level == shape.depth() {
            unflatten(kids).is_some_and(|es| {
                es.iter().all(|e| shape.bucket_of(&e.key_hash) == p.index) && bucket_hash(&es) == *want
            })
        } else {
            kids.len() == shape.fanout() && inner_hash(kids) == *want
        }
    }

    /// Fetches stale objects by key; installs each only if its leaf is the
    /// one the certified tree holds.
    pub(crate) fn fetch_objects(&mut self, keys: Vec<Vec<u8>>, src: &mut dyn StateSource) -> Result<(), CatchupError> {
        let opaque: BTreeSet<u64> = keys.iter().filter_map(|k| self.state.opaque_bucket_of(k)).collect();
        if !opaque.is_empty() {
            self.fetch_buckets(opaque.into_iter().collect(), src)?;
            // An opaque bucket is fetched whole or not at all: its objects
            // cannot be asked for by key.
            if keys.iter().any(|k| self.state.opaque_bucket_of(k).is_some()) {
                return Err(CatchupError::NoPeer(self.fetch_checkpoint().unwrap_or(0)));
            }
        }
        let seq = self.fetch_checkpoint().unwrap_or(0);
        let mut remaining: BTreeSet<Vec<u8>> = keys.into_iter().filter(|k| self.state.is_stale(k)).collect();
        for peer in self.peer_order() {
            while !remaining.is_empty() {
                let ask: Vec<Vec<u8>> = remaining.iter().take(OBJECTS_PER_REQUEST).cloned().collect();
                let r = src.fetch(peer, seq, StateWant::Objects(ask.clone()));
                self.note_answer(peer, &r);
                let got = match r {
                    Ok(StateGive::Objects(os)) => os,
                    Ok(StateGive::Unavailable) | Err(_) => break,
                    Ok(_) => {
                        self.report_bad(peer, "an answer of the wrong kind");
                        break;
                    }
                };
                let before = remaining.len();
                let mut bad = false;
                for (k, v) in got {
                    if !remaining.contains(&k) {
                        continue;
                    }
                    match v {
                        Some(v) if self.state.install(&k, &v) => {
                            self.stats.fetched_objects += 1;
                            remaining.remove(&k);
                        }
                        _ => bad = true,
                    }
                }
                if bad {
                    self.report_bad(peer, "objects");
                    break;
                }
                if remaining.len() == before {
                    break;
                }
            }
            if remaining.is_empty() {
                return Ok(());
            }
        }
        if remaining.is_empty() {
            Ok(())
        } else {
            Err(CatchupError::NoPeer(seq))
        }
    }

    /// One step of the background sync: up to `max` stale objects this
    /// replica knows by key are fetched by key; once none are left, up to
    /// `max` buckets holding objects known only by hash are fetched whole.
    /// Everything is installed only if it verifies. Returns how many objects
    /// were installed; call it when idle so it never starves execution.
    pub fn background_sync(&mut self, max: usize, src: &mut dyn StateSource) -> Result<usize, CatchupError> {
        let known = self.state.stale_known_keys(max);
        if !known.is_empty() {
            let before = self.state.stale_count();
            let res = self.fetch_objects(known, src);
            let installed = before - self.state.stale_count();
            return match res {
                Err(e) if installed == 0 => Err(e),
                _ => Ok(installed),
            };
        }
        let buckets = self.state.stale_buckets(max);
        if buckets.is_empty() {
            return Ok(0);
        }
        self.fetch_buckets(buckets, src)
    }

    /// Fetches whole buckets from a peer's checkpoint: an opaque bucket is
    /// installed whole if it hashes to the bucket hash its parent vouched
    /// for; in any other, the stale objects whose leaves match are installed.
    /// A peer still catching up omits buckets it lacks; the next is asked
    /// for those. Returns how many objects were installed.
    fn fetch_buckets(&mut self, buckets: Vec<u64>, src: &mut dyn StateSource) -> Result<usize, CatchupError> {
        let Some(seq) = self.fetch_checkpoint() else {
            return Ok(0);
        };
        let mut want = buckets;
        let mut total = 0;
        for peer in self.peer_order() {
            want.retain(|b| self.state.bucket_is_stale(*b));
            if want.is_empty() {
                break;
            }
            let r = src.fetch(peer, seq, StateWant::Buckets(want.clone()));
            self.note_answer(peer, &r);
            let got = match r {
                Ok(StateGive::Buckets(bs)) => bs,
                Ok(StateGive::Unavailable) | Err(_) => continue,
                Ok(_) => {
                    self.report_bad(peer, "an answer of the wrong kind");
                    continue;
                }
            };
            let mut installed = 0;
            let mut bad = false;
            for (b, objs) in got {
                if self.state.tree().is_opaque(b) {
                    if self.state.install_bucket(b, &objs) {
                        installed += objs.len();
                    } else {
                        bad = true;
                    }
                    continue;
                }
                if !self.bucket_verifies(seq, b, &objs) {
                    bad = true;
                    continue;
                }
                for (k, v) in &objs {
                    if self.state.install(k, v) {
                        installed += 1;
                    }
                }
            }
            self.stats.fetched_objects += installed as u64;
            total += installed;
            if bad {
                self.report_bad(peer, "buckets");
            }
        }
        want.retain(|b| self.state.bucket_is_stale(*b));
        if total > 0 || want.is_empty() {
            Ok(total)
        } else {
            Err(CatchupError::NoPeer(seq))
        }
    }

    /// In `Full` mode, fetches stale objects (a few requests per call);
    /// true while some are left, so execution must wait.
    pub(crate) fn holding_for_full_transfer(&mut self, src: &mut dyn StateSource) -> bool {
        if self.catchup != CatchupMode::Full {
            return false;
        }
        for _ in 0..FULL_STEPS_PER_DRIVE {
            if self.state.stale_count() == 0 {
                break;
            }
            self.transferring = true;
            match self.background_sync(FULL_BUCKETS_PER_STEP, src) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("full transfer: {e}");
                    break;
                }
            }
        }
        let left = self.state.stale_count();
        if left == 0 && std::mem::take(&mut self.transferring) {
            tracing::info!(
                fetched = self.stats.fetched_objects,
                "full transfer complete; executing"
            );
        }
        left > 0
    }

    fn bucket_verifies(&self, seq: Seq, b: u64, objs: &[(Vec<u8>, Vec<u8>)]) -> bool {
        let Some(want) = self.state.bucket_at(seq, b) else {
            return false;
        };
        bucket_hash(&entries_of(objs)) == want.hash
    }

    /// Answers a peer from checkpoint `seq`; `None` when hung (no answer).
    pub fn serve(&self, seq: Seq, want: &StateWant) -> Option<StateGive> {
        if self.faults.has(ReplicaFault::Hang) {
            return None;
        }
        let mut give = self.serve_true(seq, want);
        if self.faults.has(ReplicaFault::ServeBadState) {
            corrupt_give(&mut give);
        }
        Some(give)
    }

    fn serve_true(&self, seq: Seq, want: &StateWant) -> StateGive {
        if !self.state.has_snapshot(seq) {
            return StateGive::Unavailable;
        }
        let mut bytes = 0usize;
        match want {
            StateWant::Nodes(ps) => {
                let mut out = Vec::new();
                for p in ps {
                    let Some(kids) = self.state.children_at(seq, *p) else {
                        continue;
                    };
                    bytes += 32 * kids.len() + 16;
                    out.push((*p, kids));
                    if bytes > MAX_SERVE_BYTES {
                        break;
                    }
                }
                StateGive::Nodes(out)
            }
            StateWant::Objects(ks) => {
                let mut out = Vec::new();
                for k in ks {
                    use crate::state::AtCheckpoint::*;
                    match self.state.object_at(seq, k) {
                        Some(Present(_, v)) => {
                            bytes += k.len() + v.len();
                            out.push((k.clone(), Some(v.to_vec())));
                        }
                        Some(Absent) => out.push((k.clone(), None)),
                        Some(Unknown) | None => return StateGive::Unavailable,
                    }
                    if bytes > MAX_SERVE_BYTES {
                        break;
                    }
                }
                StateGive::Objects(out)
            }
            StateWant::Buckets(bs) => {
                let mut out = Vec::new();
                for b in bs {
                    let Some(objs) = self.state.bucket_objects_at(seq, *b) else {
                        continue;
                    };
                    bytes += objs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                    out.push((*b, objs));
                    if bytes > MAX_SERVE_BYTES {
                        break;
                    }
                }
                StateGive::Buckets(out)
            }
        }
    }

    /// A peer's request relayed by agreement node `via`; the answer goes back
    /// the same way.
    pub(crate) fn on_state_request(&mut self, via: Principal, r: Signed<StateRequest>) -> Vec<Out> {
        let Principal::Node(node) = via else {
            self.stats.dropped_msgs += 1;
            return Vec::new();
        };
        let b = &r.body;
        if b.to != self.cfg.me || b.from.app != self.app_id() || b.from == self.cfg.me || r.verify(self.keys()).is_err()
        {
            self.stats.dropped_msgs += 1;
            return Vec::new();
        }
        self.stats.state_requests += 1;
        let Some(give) = self.serve(b.checkpoint, &b.want) else {
            return Vec::new();
        };
        let resp = self.identity.sign(StateResponse {
            from: self.cfg.me,
            to: b.from,
            id: b.id,
            checkpoint: b.checkpoint,
            give,
        });
        vec![Out::ToNode(node, Msg::StateResponse(resp))]
    }
}
