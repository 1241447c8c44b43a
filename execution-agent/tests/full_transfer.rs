//! The full-transfer baseline (`CatchupMode::Full`): a fresh replica fetches
//! every object of the certified checkpoint before its first reply, while an
//! on-demand one replies after fetching only what the replay touches.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zz_agent::catchup::{CatchupMode, FULL_BUCKETS_PER_STEP};
use zz_agent::merkle::Shape;
use zz_agent::source::{LocalPeers, NoPeers};
use zz_agent::{Out, Replica};
use zz_wire::*;

/// More non-empty buckets than one `drive` transfers, so holding spans calls.
const OBJECTS: usize = 60_000;

struct World {
    a: Replica,
    b: Replica,
    cert: CheckpointCert,
    /// The seq after the checkpoint: a PUT and a GET.
    next: (Seq, Proposal),
    want_root: Digest,
}

fn world(seed: u64) -> World {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let o = Opts {
        interval: 4,
        shape: Shape::default(),
        ..Opts::default()
    };
    let (mut a, mut b) = (replica(0, &o), replica(1, &o));
    for i in 0..OBJECTS {
        let v: Vec<u8> = (0..32).map(|_| rng.gen()).collect();
        for r in [&mut a, &mut b] {
            r.state_mut()
                .write(format!("obj{i}").into_bytes(), Some(v.clone()))
                .unwrap();
        }
    }
    let mut ord = Orderer::default();
    let mut sigs = Vec::new();
    for _ in 0..4 {
        let k = rng.gen_range(0..OBJECTS);
        let (s, p) = ord.propose(vec![put(&format!("obj{k}"), b"changed")]);
        for r in [&mut a, &mut b] {
            sigs.extend(checkpoints(&feed(r, s, &p)));
        }
    }
    let cert = cert(sigs);
    assert_eq!(cert.seq, 4);
    for r in [&mut a, &mut b] {
        r.on_msg(0, from_node(), Msg::CheckpointCert(cert.clone()), &mut NoPeers);
    }
    let next = ord.propose(vec![put("obj1", b"after"), get("obj2")]);
    for r in [&mut a, &mut b] {
        feed(r, next.0, &next.1);
    }
    let want_root = a.root();
    World {
        a,
        b,
        cert,
        next,
        want_root,
    }
}

/// Wakes a fresh replica 2 with the certificate and the next seq's orders,
/// then ticks until it replies. Returns (calls until the reply, objects it
/// had fetched when it replied, the replica).
fn wake_fresh(w: &World, mode: CatchupMode) -> (usize, u64, Replica) {
    let mut c = replica(
        2,
        &Opts {
            interval: 4,
            shape: Shape::default(),
            ..Opts::default()
        },
    );
    c.set_catchup_mode(mode);
    let mut peers = LocalPeers::new(vec![&w.a, &w.b]);
    let mut out: Vec<Out> = c.on_msg(5_000, from_node(), Msg::CheckpointCert(w.cert.clone()), &mut peers);
    let mut calls = 1;
    if mode == CatchupMode::Full {
        assert!(
            c.state().stale_count() > 0,
            "{OBJECTS} objects over {FULL_BUCKETS_PER_STEP} buckets a step should span several calls"
        );
    }
    for m in Orderer::orders(w.next.0, &w.next.1) {
        out.extend(c.on_msg(5_000, link_of(&m), m, &mut peers));
        calls += 1;
    }
    while replies(&out).is_empty() {
        if mode == CatchupMode::Full {
            assert!(c.state().stale_count() > 0, "not replying with nothing left to fetch");
        }
        assert_eq!(c.last_executed(), w.cert.seq, "executed without replying");
        out = c.on_tick(5_000 + calls as u64 * 50, &mut peers);
        calls += 1;
        assert!(calls < 1_000, "never replied");
    }
    let fetched = c.stats().fetched_objects;
    assert_eq!(c.last_executed(), w.next.0);
    (calls, fetched, c)
}

#[test]
fn full_mode_fetches_every_object_before_the_first_reply() {
    let seed = seed();
    let w = world(seed);
    let (calls, fetched, mut c) = wake_fresh(&w, CatchupMode::Full);
    println!("full transfer: {fetched} objects, first reply on call {calls}");
    assert_eq!(fetched, OBJECTS as u64, "replied before the whole checkpoint was here");
    assert_eq!(c.state().stale_count(), 0);
    assert_eq!(c.root(), w.want_root);
}

#[test]
fn on_demand_mode_replies_after_fetching_only_what_it_touches() {
    let seed = seed();
    let w = world(seed);
    let (calls, fetched, mut c) = wake_fresh(&w, CatchupMode::OnDemand);
    assert_eq!(calls, 3, "the cert and the two orders: the reply comes with the last");
    // At most the objects of the two buckets the replayed PUT and GET touch
    // (a fresh replica holds no bucket, so it fetches touched ones whole).
    let shape = Shape::default();
    let touched: std::collections::BTreeSet<u64> = ["obj1", "obj2"]
        .iter()
        .map(|k| shape.bucket_of(&zz_agent::merkle::key_hash(k.as_bytes())))
        .collect();
    let in_touched: u64 = touched
        .iter()
        .map(|b| w.a.state().tree().bucket(*b).map_or(0, |bk| bk.entries.len() as u64))
        .sum();
    assert!(
        fetched <= in_touched,
        "on demand fetched {fetched} (touched buckets hold {in_touched})"
    );
    assert!(c.state().stale_count() > 0);
    assert_eq!(c.root(), w.want_root);
}

#[test]
fn catchup_mode_parses_and_defaults_to_on_demand() {
    assert_eq!(CatchupMode::parse("full"), Some(CatchupMode::Full));
    assert_eq!(CatchupMode::parse("on-demand"), Some(CatchupMode::OnDemand));
    assert_eq!(CatchupMode::parse("Full"), None);
    assert_eq!(CatchupMode::default(), CatchupMode::OnDemand);
}
