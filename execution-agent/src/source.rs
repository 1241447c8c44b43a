//! Where checkpoint state comes from. The replica asks one named peer at a
//! time and verifies everything it gets against the certified root, so a
//! source needs no trust: the network source relays through agreement
//! nodes; `LocalPeers` calls in-memory replicas directly (tests, benches).

use crate::replica::Replica;
use zz_wire::{ReplicaId, Seq, StateGive, StateWant};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("no answer from {0} in time")]
    Timeout(ReplicaId),
    #[error("peer {0} is not reachable")]
    Unreachable(ReplicaId),
}

pub trait StateSource {
    /// Asks `peer` for part of its copy of checkpoint `checkpoint`.
    fn fetch(&mut self, peer: ReplicaId, checkpoint: Seq, want: StateWant) -> Result<StateGive, FetchError>;
}

/// No peers at all: every fetch fails (a replica that never needs state).
pub struct NoPeers;

impl StateSource for NoPeers {
    fn fetch(&mut self, peer: ReplicaId, _: Seq, _: StateWant) -> Result<StateGive, FetchError> {
        Err(FetchError::Unreachable(peer))
    }
}

/// In-memory peers, with counters of what was asked.
pub struct LocalPeers<'a> {
    pub peers: Vec<&'a Replica>,
    pub requests: u64,
    pub nodes_asked: u64,
    pub objects_asked: u64,
    pub buckets_asked: u64,
}

impl<'a> LocalPeers<'a> {
    pub fn new(peers: Vec<&'a Replica>) -> Self {
        LocalPeers {
            peers,
            requests: 0,
            nodes_asked: 0,
            objects_asked: 0,
            buckets_asked: 0,
        }
    }
}

impl StateSource for LocalPeers<'_> {
    fn fetch(&mut self, peer: ReplicaId, checkpoint: Seq, want: StateWant) -> Result<StateGive, FetchError> {
        let p = self
            .peers
            .iter()
            .find(|r| r.me() == peer)
            .ok_or(FetchError::Unreachable(peer))?;
        self.requests += 1;
        match &want {
            StateWant::Nodes(ps) => self.nodes_asked += ps.len() as u64,
            StateWant::Objects(ks) => self.objects_asked += ks.len() as u64,
            StateWant::Buckets(bs) => self.buckets_asked += bs.len() as u64,
        }
        p.serve(checkpoint, &want).ok_or(FetchError::Unreachable(peer))
    }
}
