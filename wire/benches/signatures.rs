//! Cost of one signature check: alone (ZIP 215, and ed25519-dalek's own for
//! comparison) and in batches from a few signers, as a node's link checker
//! sees them. Run: `cargo bench -p zz-wire --bench signatures`.
#![allow(clippy::unwrap_used)] // a benchmark harness: a failed setup should stop it loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use zz_wire::crypto::{Batch, Signature};
use zz_wire::{Digest, Identity, Keyring, NodeId, Principal};

fn setup(signers: usize, count: usize) -> (Keyring, Vec<(Principal, Digest, Signature)>) {
    let ids: Vec<Identity> = (0..signers)
        .map(|i| Identity::from_seed(Principal::Node(NodeId(i as u16)), [i as u8 + 1; 32]))
        .collect();
    let mut keys = Keyring::new();
    for id in &ids {
        keys.insert(id.who, id.public());
    }
    let sigs = (0..count)
        .map(|i| {
            let id = &ids[i % signers];
            let d = zz_wire::Hasher::new("zz/bench/v1").u64(i as u64).finish();
            (id.who, d, id.sign_digest(&d))
        })
        .collect();
    (keys, sigs)
}

fn signatures(c: &mut Criterion) {
    let mut g = c.benchmark_group("signature check");
    let (keys, sigs) = setup(4, 64);
    g.throughput(Throughput::Elements(1));
    g.bench_function("alone, ZIP 215", |b| {
        let (who, d, s) = &sigs[0];
        b.iter(|| keys.verify_digest(*who, d, s).unwrap());
    });
    g.bench_function("alone, ed25519-dalek verify", |b| {
        let (who, d, s) = &sigs[0];
        let key = keys.get(who).unwrap().0;
        b.iter(|| key.verify_strict(&d.0, s).unwrap());
    });
    for n in [2usize, 4, 8, 16, 32, 64] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("batch of {n} from 4 signers"), |b| {
            b.iter_batched(
                || Batch::new(&keys),
                |mut batch| {
                    for (who, d, s) in &sigs[..n] {
                        batch.queue(*who, d, s).unwrap();
                    }
                    assert!(batch.verify());
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, signatures);
criterion_main!(benches);
