//! The simulated deployment: every key drawn from the run's seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use zz_wire::config::{AppEntry, ClientEntry, NodeEntry, OrchestratorEntry};
use zz_wire::{AppId, ClientId, Deployment, Identity, NodeId, Principal, ReplicaId, Timing};

/// A key derived from the run's seed for `who`.
fn identity(seed: u64, who: Principal) -> Identity {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_7973);
    let tag = match who {
        Principal::Node(n) => u64::from(n.0),
        Principal::Replica(r) => 1_000 + u64::from(r.app.0) * 100 + u64::from(r.index),
        Principal::Client(c) => 10_000 + u64::from(c.0),
        Principal::Orchestrator => 99_999,
    };
    rng.set_stream(tag);
    Identity::from_seed(who, rng.gen())
}

pub(super) fn deployment(
    seed: u64,
    f: usize,
    clients_per_app: usize,
    checkpoint_interval: u64,
) -> (Deployment, BTreeMap<Principal, Identity>) {
    let mut ids = BTreeMap::new();
    let addr = |i: u16| std::net::SocketAddr::from(([127, 0, 0, 1], 10_000 + i));
    let mut key = |who: Principal| {
        let id = identity(seed, who);
        let pk = id.public();
        ids.insert(who, id);
        pk
    };
    let nodes = (0..(3 * f + 1) as u16)
        .map(|i| NodeEntry {
            id: i,
            addr: addr(i),
            public_key: key(Principal::Node(NodeId(i))),
        })
        .collect();
    let apps = [("kv", "kv"), ("bank", "bank")]
        .iter()
        .enumerate()
        .map(|(a, (name, kind))| AppEntry {
            name: name.to_string(),
            kind: kind.to_string(),
            replicas: (0..(2 * f + 1) as u16)
                .map(|index| {
                    key(Principal::Replica(ReplicaId {
                        app: AppId(a as u16),
                        index,
                    }))
                })
                .collect(),
        })
        .collect();
    let clients = (0..(2 * clients_per_app) as u16)
        .map(|c| ClientEntry {
            id: c,
            name: format!("client{c}"),
            public_key: key(Principal::Client(ClientId(c))),
        })
        .collect();
    let orchestrator = OrchestratorEntry {
        addr: addr(999),
        public_key: key(Principal::Orchestrator),
    };
    let dep = Deployment {
        f,
        checkpoint_interval,
        timing: Timing::default(),
        nodes,
        apps,
        clients,
        orchestrator,
    };
    (dep, ids)
}
