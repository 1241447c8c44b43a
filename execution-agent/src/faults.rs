//! Fault modes the orchestrator switches on for demos and tests. Each one
//! makes the replica misbehave in the way its name says; `ClearFaults` ends
//! all but `crash` (which has already exited).

use crate::state::State;
use std::collections::BTreeSet;
use zz_wire::{AppResponse, Digest, ReplicaFault, StateGive};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults(BTreeSet<ReplicaFault>);

impl Faults {
    pub fn has(&self, k: ReplicaFault) -> bool {
        !self.0.is_empty() && self.0.contains(&k)
    }

    pub fn set(&mut self, k: ReplicaFault) {
        self.0.insert(k);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn active(&self) -> Vec<ReplicaFault> {
        self.0.iter().copied().collect()
    }
}

/// A different digest (one bit flipped).
pub fn flip(mut d: Digest) -> Digest {
    d.0[0] ^= 1;
    d
}

fn flip_bytes(v: &mut Vec<u8>) {
    match v.first_mut() {
        Some(b) => *b ^= 0xff,
        None => v.push(0xff),
    }
}

/// `corrupt-reply`: every response differs from the true one; a reply with
/// no responses (null request) carries a wrong root instead.
pub fn corrupt_results(batches: &mut [Vec<AppResponse>], root: &mut Digest) {
    if batches.iter().all(Vec::is_empty) {
        *root = flip(*root);
    }
    for r in batches.iter_mut().flatten() {
        r.status = if r.status == 200 { 201 } else { 200 };
        r.body.extend_from_slice(b" (corrupt)");
    }
}

/// `corrupt-state`: silently overwrite one stored object (or plant one in an
/// empty state) so the Merkle root diverges from the other replicas'.
pub fn corrupt_state(state: &mut State) {
    let key = state.any_key().unwrap_or_else(|| b"zz-corrupt".to_vec());
    let mut value = state.get(&key).ok().flatten().map(<[u8]>::to_vec).unwrap_or_default();
    flip_bytes(&mut value);
    if state.write(key, Some(value)).is_err() {
        tracing::warn!("corrupt-state picked a stale object; nothing changed");
    }
}

/// `serve-bad-state`: damage whatever is served to a peer.
pub fn corrupt_give(give: &mut StateGive) {
    match give {
        StateGive::Nodes(ns) => {
            for (_, ds) in ns.iter_mut() {
                match ds.first_mut() {
                    Some(d) => *d = flip(*d),
                    None => ds.push(Digest([0xee; 32])),
                }
            }
        }
        StateGive::Objects(os) => {
            for (_, v) in os.iter_mut() {
                match v {
                    Some(v) => flip_bytes(v),
                    None => *v = Some(b"bogus".to_vec()),
                }
            }
        }
        StateGive::Buckets(bs) => {
            for (_, objs) in bs.iter_mut() {
                for (_, v) in objs.iter_mut() {
                    flip_bytes(v);
                }
            }
        }
        StateGive::Unavailable => {}
    }
}
