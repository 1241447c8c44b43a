//! Execution throughput of one kv replica: 64-byte values, batches of 100
//! ops, ordered by f+1 signed ORDERs (signature checks and reply signing
//! included). Run: `cargo bench -p zz-agent --bench exec`.
#![allow(clippy::unwrap_used)] // a benchmark harness: a failed setup should stop it loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

use criterion::{criterion_group, Criterion, Throughput};
use std::time::{Duration, Instant};
use zz_agent::merkle::Shape;
use zz_agent::source::NoPeers;
use zz_agent::{app, Config, Replica};
use zz_wire::*;

const OPS: usize = 100;

fn node(i: u16) -> Identity {
    Identity::from_seed(Principal::Node(NodeId(i)), [i as u8 + 1; 32])
}

fn setup() -> (Replica, Identity, Vec<Identity>) {
    let me = ReplicaId {
        app: AppId(0),
        index: 0,
    };
    let rid = Identity::from_seed(Principal::Replica(me), [50; 32]);
    let client = Identity::from_seed(Principal::Client(ClientId(0)), [90; 32]);
    let nodes: Vec<Identity> = (0..4).map(node).collect();
    let mut keys = Keyring::new();
    for id in nodes.iter().chain([&rid, &client]) {
        keys.insert(id.who, id.public());
    }
    let cfg = Config {
        me,
        f: 1,
        checkpoint_interval: 128,
        nodes: (0..4).map(NodeId).collect(),
        peers: vec![],
        shape: Shape::default(),
        admin: None,
    };
    let r = Replica::new(cfg, rid, keys, app::build("kv", "kv").unwrap());
    (r, client, nodes)
}

fn orders(seq: Seq, client: &Identity, keyspace: u64) -> Vec<Msg> {
    let ops: Vec<AppRequest> = (0..OPS as u64)
        .map(|i| {
            let k = (seq * 7919 + i * 104_729) % keyspace;
            AppRequest::new("PUT", &format!("/kv/key{k}"), vec![(seq + i) as u8; 64])
        })
        .collect();
    let b = client.sign(ClientBatch::new(ClientId(0), AppId(0), seq * OPS as u64, &ops).expect("pack"));
    let p = Proposal {
        requests: vec![b],
        nondet: NonDet {
            timestamp_ms: seq,
            seed: seq,
        },
    };
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

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv-exec");
    g.throughput(Throughput::Elements(OPS as u64));
    g.measurement_time(Duration::from_secs(10));
    let (mut r, client, _) = setup();
    let mut seq = 0;
    g.bench_function("batch-of-100-puts-64B", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<Vec<Msg>> = (0..iters).map(|i| orders(seq + 1 + i, &client, 100_000)).collect();
            let t = Instant::now();
            for msgs in batches {
                for m in msgs {
                    r.on_msg(0, m.author().unwrap(), m, &mut NoPeers);
                }
            }
            seq += iters;
            t.elapsed()
        })
    });
    assert_eq!(r.last_executed(), seq);
    g.finish();
}

/// On-CPU time of this thread (the machine may be shared, so wall time
/// understates what one core does).
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok().map(Duration::from_nanos)
}

/// Prints ops per wall second and per CPU second over 2,000 batches.
fn cpu_figure() {
    let (mut r, client, _) = setup();
    let batches: Vec<Vec<Msg>> = (1..=2000).map(|s| orders(s, &client, 100_000)).collect();
    let (wall, cpu) = (Instant::now(), thread_cpu());
    for msgs in batches {
        for m in msgs {
            r.on_msg(0, m.author().unwrap(), m, &mut NoPeers);
        }
    }
    let wall = wall.elapsed().as_secs_f64();
    let ops = 2000.0 * OPS as f64;
    match (cpu, thread_cpu()) {
        (Some(a), Some(b)) => println!(
            "kv exec, 200,000 ops: {:.0} ops/s wall, {:.0} ops/s per CPU-second",
            ops / wall,
            ops / (b - a).as_secs_f64()
        ),
        _ => println!("kv exec, 200,000 ops: {:.0} ops/s wall", ops / wall),
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    cpu_figure();
    Criterion::default().configure_from_args().final_summary();
}
