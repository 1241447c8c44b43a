//! A woken standby that cannot fetch the state its replay touches says
//! nothing for that seq (it is behind), never a failed answer the agreement
//! nodes would count as a fault (issue 25, item 2). Once its peers serve
//! again it answers, and answers right.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use zz_agent::app::wasm::object_key;
use zz_agent::merkle::Shape;
use zz_agent::source::{FetchError, LocalPeers, StateSource};
use zz_wire::*;

const OBJECTS: usize = 2_000;

fn value(rng: &mut ChaCha8Rng) -> Vec<u8> {
    (0..32).map(|_| rng.gen()).collect()
}

fn key(i: usize) -> String {
    format!("obj{i}")
}

/// Peers that serve the tree but no object: the fetch a replay needs fails
/// (peers gone, or dropped the checkpoint, or too slow).
struct TreeOnly<'a>(LocalPeers<'a>);

impl StateSource for TreeOnly<'_> {
    fn fetch(&mut self, peer: ReplicaId, checkpoint: Seq, want: StateWant) -> Result<StateGive, FetchError> {
        match want {
            StateWant::Objects(_) => Ok(StateGive::Unavailable),
            want => self.0.fetch(peer, checkpoint, want),
        }
    }
}

#[test]
fn a_woken_replica_that_cannot_fetch_says_nothing_then_answers_right() {
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
    // c sleeps through seqs 1..=20; what 1..=16 write is stale for it.
    let mut written = Vec::new();
    let mut want: BTreeMap<Seq, Digest> = BTreeMap::new();
    let mut last_cert = None;
    for round in 0..20 {
        let ops: Vec<AppRequest> = (0..4)
            .map(|_| {
                if round < 16 {
                    let k = key(rng.gen_range(0..OBJECTS));
                    written.push(k.clone());
                    put(&k, &value(&mut rng))
                } else {
                    // The replay after the checkpoint reads what changed.
                    get(&written[rng.gen_range(0..written.len())])
                }
            })
            .collect();
        let (s, p) = ord.propose(ops);
        let outs = [feed(&mut a, s, &p), feed(&mut b, s, &p)];
        for r in replies(&outs[0]) {
            want.insert(r.seq, r.result_digest());
        }
        let sigs: Vec<_> = outs.iter().flat_map(|o| checkpoints(o)).collect();
        if !sigs.is_empty() {
            last_cert = Some(cert(sigs));
        }
    }
    let cert = last_cert.unwrap();
    assert_eq!(cert.seq, 16);
    for r in [&mut a, &mut b] {
        r.on_msg(
            0,
            from_node(),
            Msg::CheckpointCert(cert.clone()),
            &mut zz_agent::source::NoPeers,
        );
    }
    let want_root = a.root();
    // c is woken: the tree walk succeeds, every object fetch fails.
    let mut out = {
        let mut peers = TreeOnly(LocalPeers::new(vec![&a, &b]));
        let mut out = c.on_msg(5_000, from_node(), Msg::CheckpointCert(cert.clone()), &mut peers);
        for (seq, p) in ord.log.iter().filter(|(s, _)| *s > cert.seq) {
            for m in Orderer::orders(*seq, p) {
                out.extend(c.on_msg(5_000, link_of(&m), m, &mut peers));
            }
        }
        for t in 1..20 {
            out.extend(c.on_tick(5_000 + t * 100, &mut peers));
        }
        out
    };
    for r in replies(&out) {
        assert_eq!(
            Some(&r.result_digest()),
            want.get(&r.seq),
            "seed {seed}: the woken replica answered seq {} though it could not fetch its state: {:?}",
            r.seq,
            r.responses()
                .map(|rs| rs.into_iter().map(|(_, _, x)| x.status).collect::<Vec<_>>())
        );
    }
    assert!(c.last_executed() < 20, "seed {seed}: it ran without the objects");
    // Peers serve again: on a tick it fetches, runs and answers like a.
    let mut peers = LocalPeers::new(vec![&a, &b]);
    for t in 0..20 {
        out.extend(c.on_tick(10_000 + t * 1_000, &mut peers));
    }
    assert_eq!(c.last_executed(), 20, "seed {seed}");
    assert_eq!(c.root(), want_root, "seed {seed}: the replica diverges");
    let got: BTreeMap<Seq, Digest> = replies(&out).iter().map(|r| (r.seq, r.result_digest())).collect();
    let want_after: BTreeMap<Seq, Digest> = want.into_iter().filter(|(s, _)| *s > cert.seq).collect();
    assert_eq!(got, want_after, "seed {seed}");
}
