//! Time from wake to the first correct reply as the state grows, against a
//! full-state-transfer baseline, with in-process peers.
//! Run: `cargo bench -p zz-agent --bench wake` (ZZ_WAKE_MB=10,100 to choose sizes).
#![allow(clippy::unwrap_used)] // a benchmark harness: a failed setup should stop it loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use zz_agent::merkle::Shape;
use zz_agent::source::{LocalPeers, NoPeers};
use zz_agent::{app, Config, Out, Replica};
use zz_wire::*;

const VALUE: usize = 1024;
const INTERVAL: u64 = 16;

fn ids() -> (Vec<Identity>, Vec<Identity>, Identity, Keyring) {
    let nodes: Vec<Identity> = (0..4)
        .map(|i| Identity::from_seed(Principal::Node(NodeId(i)), [i as u8 + 1; 32]))
        .collect();
    let reps: Vec<Identity> = (0..3)
        .map(|i| {
            Identity::from_seed(
                Principal::Replica(ReplicaId {
                    app: AppId(0),
                    index: i,
                }),
                [i as u8 + 50; 32],
            )
        })
        .collect();
    let client = Identity::from_seed(Principal::Client(ClientId(0)), [90; 32]);
    let mut keys = Keyring::new();
    for id in nodes.iter().chain(&reps).chain([&client]) {
        keys.insert(id.who, id.public());
    }
    (nodes, reps, client, keys)
}

fn replica(i: u16, reps: &[Identity], keys: &Keyring) -> Replica {
    let me = ReplicaId {
        app: AppId(0),
        index: i,
    };
    let cfg = Config {
        me,
        f: 1,
        checkpoint_interval: INTERVAL,
        nodes: (0..4).map(NodeId).collect(),
        peers: (0..3)
            .filter(|j| *j != i)
            .map(|index| ReplicaId { app: AppId(0), index })
            .collect(),
        shape: Shape::default(),
        admin: None,
    };
    Replica::new(
        cfg,
        reps[i as usize].clone(),
        keys.clone(),
        app::build("kv", "kv").unwrap(),
    )
}

fn orders(seq: Seq, p: &Proposal) -> Vec<Msg> {
    (0..2u64)
        .map(|k| {
            let n = ((seq + k) % 4) as u16;
            Msg::Order(Order {
                node: NodeId(n),
                app: AppId(0),
                seq,
                digest: p.digest(),
                proposal: (k == 0).then(|| p.clone()),
            })
        })
        .collect()
}

fn run(mb: usize) {
    let (_, reps, client, keys) = ids();
    let objects = mb * 1024 * 1024 / VALUE;
    let mut rng = ChaCha8Rng::seed_from_u64(mb as u64);
    let (mut a, mut b, mut c) = (
        replica(0, &reps, &keys),
        replica(1, &reps, &keys),
        replica(2, &reps, &keys),
    );
    let mut v = vec![0u8; VALUE];
    for i in 0..objects {
        rng.fill(&mut v[..]);
        for r in [&mut a, &mut b, &mut c] {
            r.state_mut()
                .write(format!("obj{i}").into_bytes(), Some(v.clone()))
                .unwrap();
        }
    }
    // c sleeps through 2 checkpoint intervals of 100 writes per seq.
    let mut sigs = Vec::new();
    let mut log = Vec::new();
    for seq in 1..=2 * INTERVAL + 1 {
        let ops: Vec<AppRequest> = (0..100)
            .map(|_| {
                let k = rng.gen_range(0..objects);
                rng.fill(&mut v[..]);
                AppRequest::new("PUT", &format!("/kv/obj{k}"), v.clone())
            })
            .collect();
        let batch = client.sign(ClientBatch::new(ClientId(0), AppId(0), seq * 100, &ops).expect("pack"));
        let p = Proposal {
            requests: vec![batch],
            nondet: NonDet {
                timestamp_ms: seq,
                seed: seq,
            },
        };
        for r in [&mut a, &mut b] {
            for m in orders(seq, &p) {
                for o in r.on_msg(0, m.author().unwrap(), m, &mut NoPeers) {
                    if let Out::Broadcast(Msg::ExecCheckpoint(cp)) = o {
                        if cp.body.seq == 2 * INTERVAL {
                            sigs.push(cp);
                        }
                    }
                }
            }
        }
        log.push((seq, p));
    }
    let cert = CheckpointCert {
        app: AppId(0),
        seq: 2 * INTERVAL,
        root: sigs[0].body.root,
        sigs,
    };
    for r in [&mut a, &mut b] {
        r.on_msg(
            0,
            Principal::Node(NodeId(0)),
            Msg::CheckpointCert(cert.clone()),
            &mut NoPeers,
        );
    }
    let want = a.root();
    // The population above bypassed execution; hash c's tree now, as
    // executing would have, so the timing below sees a settled replica.
    c.root();

    let mut peers = LocalPeers::new(vec![&a, &b]);
    let t = Instant::now();
    c.on_msg(
        0,
        Principal::Node(NodeId(0)),
        Msg::CheckpointCert(cert.clone()),
        &mut peers,
    );
    let (seq, p) = log.last().unwrap();
    for m in orders(*seq, p) {
        c.on_msg(0, m.author().unwrap(), m, &mut peers);
    }
    let first_reply = t.elapsed();
    assert_eq!(c.root(), want);
    let fetched = c.stats().fetched_objects;
    let t = Instant::now();
    while c.state().stale_count() > 0 {
        c.background_sync(256, &mut peers).unwrap();
    }
    let rest = t.elapsed();

    // Baseline: a replica that copies the whole checkpoint before replying.
    let mut fresh = replica(2, &reps, &keys);
    let t = Instant::now();
    fresh.on_msg(
        0,
        Principal::Node(NodeId(0)),
        Msg::CheckpointCert(cert.clone()),
        &mut peers,
    );
    while fresh.state().stale_count() > 0 {
        fresh.background_sync(256, &mut peers).unwrap();
    }
    for m in orders(*seq, p) {
        fresh.on_msg(0, m.author().unwrap(), m, &mut peers);
    }
    let full = t.elapsed();
    assert_eq!(fresh.root(), want);
    println!(
        "state {mb:>4} MB ({objects} objects of {VALUE} B): wake→first reply {:>8.1} ms \
         (fetched {fetched} objects on demand), background rest {:>8.1} ms; \
         full-transfer baseline {:>8.1} ms",
        first_reply.as_secs_f64() * 1e3,
        rest.as_secs_f64() * 1e3,
        full.as_secs_f64() * 1e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes = std::env::var("ZZ_WAKE_MB").unwrap_or_else(|_| "10,100".into());
    for mb in sizes.split(',').filter_map(|s| s.trim().parse().ok()) {
        run(mb);
    }
}
