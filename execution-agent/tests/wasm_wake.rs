//! A woken standby of a Wasm app (the kv example component) holding a large
//! state fetches only the objects the replayed requests touch: the
//! component cannot declare its keys, so each stale read stops the run, the
//! object is fetched and the request runs again.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use zz_agent::app::wasm::object_key;
use zz_agent::merkle::Shape;
use zz_agent::source::LocalPeers;
use zz_wire::*;

const OBJECTS: usize = 20_000;

fn value(rng: &mut ChaCha8Rng) -> Vec<u8> {
    (0..32).map(|_| rng.gen()).collect()
}

fn key(i: usize) -> String {
    format!("obj{i}")
}

#[test]
fn a_woken_wasm_replica_fetches_only_the_objects_its_replay_touches() {
    let seed = seed();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let o = Opts {
        kind: "wasm-kv",
        interval: 16,
        shape: Shape::default(),
    };
    let (mut a, mut b, mut c) = (replica(0, &o), replica(1, &o), replica(2, &o));
    for i in 0..OBJECTS {
        let v = value(&mut rng);
        for r in [&mut a, &mut b, &mut c] {
            r.state_mut().write(object_key(&[], &key(i)), Some(v.clone())).unwrap();
        }
    }
    let mut ord = Orderer::default();
    for _ in 0..4 {
        let ops = (0..5)
            .map(|_| put(&key(rng.gen_range(0..OBJECTS)), &value(&mut rng)))
            .collect();
        let (s, p) = ord.propose(ops);
        for r in [&mut a, &mut b, &mut c] {
            feed(r, s, &p);
        }
    }
    // c sleeps through 36 batches of writes and reads.
    let mut written = BTreeSet::new();
    let mut last_cert = None;
    let mut a_replies = Vec::new();
    for round in 0..36 {
        // After the checkpoint at 32, half the ops touch objects that
        // changed while c slept: those are what it must fetch.
        let replay = round >= 28;
        let changed: Vec<String> = written.iter().cloned().collect();
        let ops: Vec<AppRequest> = (0..10)
            .map(|i| {
                let k = if replay && i % 2 == 0 {
                    changed[rng.gen_range(0..changed.len())].clone()
                } else {
                    key(rng.gen_range(0..OBJECTS))
                };
                if rng.gen_bool(0.7) {
                    written.insert(k.clone());
                    put(&k, &value(&mut rng))
                } else {
                    get(&k)
                }
            })
            .collect();
        let (s, p) = ord.propose(ops);
        let outs = [feed(&mut a, s, &p), feed(&mut b, s, &p)];
        a_replies.extend(replies(&outs[0]));
        let sigs: Vec<_> = outs.iter().flat_map(|o| checkpoints(o)).collect();
        if !sigs.is_empty() {
            last_cert = Some((cert(sigs), written.clone()));
        }
        if round == 27 {
            assert!(last_cert.as_ref().is_some_and(|(c, _)| c.seq == 32));
        }
    }
    let (cert, stale) = last_cert.unwrap();
    assert_eq!(cert.seq, 32);
    for r in [&mut a, &mut b] {
        r.on_msg(
            0,
            from_node(),
            Msg::CheckpointCert(cert.clone()),
            &mut zz_agent::source::NoPeers,
        );
    }
    // The stale keys the replay (seqs 33..=40) touches.
    let mut touched = BTreeSet::new();
    for (_, p) in ord.log.iter().filter(|(s, _)| *s > cert.seq) {
        for op in p.requests[0].body.ops.unpack().unwrap() {
            let k = op.path.trim_start_matches("/kv/").to_string();
            if stale.contains(&k) {
                touched.insert(k);
            }
        }
    }
    let want_root = a.root();
    let mut peers = LocalPeers::new(vec![&a, &b]);
    let mut out = c.on_msg(5_000, from_node(), Msg::CheckpointCert(cert.clone()), &mut peers);
    for (seq, p) in ord.log.iter().filter(|(s, _)| *s > cert.seq) {
        for m in Orderer::orders(*seq, p) {
            out.extend(c.on_msg(5_000, link_of(&m), m, &mut peers));
        }
    }
    let got = replies(&out);
    assert_eq!(c.last_executed(), 40);
    assert_eq!(c.root(), want_root, "woken replica diverges");
    let want: Vec<Digest> = a_replies
        .iter()
        .filter(|r| r.seq > cert.seq)
        .map(|r| r.result_digest())
        .collect();
    let have: Vec<Digest> = got.iter().map(|r| r.result_digest()).collect();
    assert_eq!(have, want, "the woken replica answers differently");
    let fetched = c.stats().fetched_objects;
    println!(
        "stale {} of {OBJECTS}; replay touched {} stale; fetched {fetched}",
        stale.len(),
        touched.len()
    );
    assert_eq!(
        fetched,
        touched.len() as u64,
        "fetched other objects than the replay touched"
    );
}
