//! One request through a tenant's Wasm app against the built-in kv it
//! imitates: `examples/kv` (kv's HTTP API over wasi:keyvalue) and `kv`,
//! each a 64-byte PUT to one of 100,000 keys applied to the Merkle state.
//! The difference is what a component costs per request: a fresh store
//! and instance from the pre-linked component, fuel, the host calls.
//! Run: `cargo bench -p zz-agent --bench wasm`.
#![allow(clippy::unwrap_used)] // a benchmark harness: a failed setup should stop it loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

use criterion::{criterion_group, Criterion, Throughput};
use std::path::Path;
use std::time::{Duration, Instant};
use zz_agent::app::wasm::WasmApp;
use zz_agent::app::{self, App, Ctx};
use zz_agent::merkle::Shape;
use zz_agent::state::State;
use zz_wire::{AppRequest, NonDet};

const KEYS: u64 = 100_000;

fn ctx(seq: u64) -> Ctx {
    Ctx {
        seq,
        nondet: NonDet {
            timestamp_ms: 1_750_000_000_000 + seq,
            seed: seq,
        },
        op: 0,
        admin: false,
    }
}

fn put(seq: u64) -> AppRequest {
    let k = seq.wrapping_mul(104_729) % KEYS;
    AppRequest::new("PUT", &format!("/kv/key{k}"), vec![seq as u8; 64])
}

fn apps() -> Vec<(&'static str, Box<dyn App>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kv/kv.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    vec![
        ("builtin-kv", app::build("kv", "kv").unwrap()),
        ("wasm-kv", Box::new(WasmApp::new("kv", &bytes).unwrap())),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("put-64B");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    for (name, a) in apps() {
        let mut state = State::new(Shape::default());
        let mut seq = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                seq += 1;
                let r = app::run(a.as_ref(), &mut state, &ctx(seq), &put(seq)).unwrap();
                assert_eq!(r.status, 200);
            })
        });
    }
    g.finish();
}

/// Prints each app's requests per second and the Wasm app's cost per
/// request over the built-in one, over 20,000 PUTs.
fn figures() {
    let mut per_op = Vec::new();
    for (name, a) in apps() {
        let mut state = State::new(Shape::default());
        let t = Instant::now();
        for seq in 1..=20_000 {
            app::run(a.as_ref(), &mut state, &ctx(seq), &put(seq)).unwrap();
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / 20_000.0;
        println!("{name}: {:.0} PUTs/s, {us:.1} µs per PUT", 1e6 / us);
        per_op.push(us);
    }
    if let [builtin, wasm] = per_op[..] {
        println!(
            "wasm-kv runs at {:.2}× built-in kv; a component costs {:.1} µs more per request",
            builtin / wasm,
            wasm - builtin
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    figures();
    Criterion::default().configure_from_args().final_summary();
}
