//! Wake-up and catch-up with in-process peers.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use zz_agent::merkle::Shape;
use zz_agent::source::{FetchError, LocalPeers, StateSource};
use zz_agent::{Out, Replica};
use zz_wire::*;

const OBJECTS: usize = 100_000;

fn value(rng: &mut ChaCha8Rng) -> Vec<u8> {
    (0..64).map(|_| rng.gen()).collect()
}

fn key(i: usize) -> String {
    format!("obj{i}")
}

/// Executes on every replica in `rs`; returns the outputs of the first.
fn run_all(rs: &mut [&mut Replica], seq: Seq, p: &Proposal) -> Vec<Out> {
    let mut first = Vec::new();
    for (i, r) in rs.iter_mut().enumerate() {
        let out = feed(r, seq, p);
        if i == 0 {
            first = out;
        }
    }
    first
}

fn cert_from(outs: &[Vec<Out>]) -> Option<CheckpointCert> {
    let sigs: Vec<_> = outs.iter().flat_map(|o| checkpoints(o)).collect();
    (!sigs.is_empty()).then(|| cert(sigs))
}

/// Wakes `c` with the certificate and the orders after it; returns its replies.
fn wake(
    c: &mut Replica,
    peers: &mut dyn StateSource,
    cert: &CheckpointCert,
    log: &[(Seq, Proposal)],
) -> Vec<ExecReply> {
    wake_at(5_000, c, peers, cert, log)
}

/// `wake` at `now_ms` (after earlier messages, so its retry timers run on).
fn wake_at(
    now_ms: u64,
    c: &mut Replica,
    peers: &mut dyn StateSource,
    cert: &CheckpointCert,
    log: &[(Seq, Proposal)],
) -> Vec<ExecReply> {
    let mut out = c.on_msg(now_ms, from_node(), Msg::CheckpointCert(cert.clone()), peers);
    out.extend(feed_after(now_ms, c, peers, log, cert.seq));
    replies(&out)
}

/// Hands `c` the orders of every seq in `log` above `after`.
fn feed_after(
    now_ms: u64,
    c: &mut Replica,
    peers: &mut dyn StateSource,
    log: &[(Seq, Proposal)],
    after: Seq,
) -> Vec<Out> {
    let mut out = Vec::new();
    for (seq, p) in log.iter().filter(|(s, _)| *s > after) {
        for m in Orderer::orders(*seq, p) {
            out.extend(c.on_msg(now_ms, link_of(&m), m, peers));
        }
    }
    out
}

#[test]
fn replica_10k_behind_on_100k_objects_fetches_only_what_it_touches() {
    let seed = seed();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let o = Opts {
        interval: 16,
        shape: Shape::default(),
        ..Opts::default()
    };
    let (mut a, mut b, mut c) = (replica(0, &o), replica(1, &o), replica(2, &o));
    // The same initial state on every replica.
    for i in 0..OBJECTS {
        let v = value(&mut rng);
        for r in [&mut a, &mut b, &mut c] {
            r.state_mut().write(key(i).into_bytes(), Some(v.clone())).unwrap();
        }
    }
    let mut ord = Orderer::default();
    // Everyone executes a little, then c is paused.
    for _ in 0..20 {
        let ops = (0..10)
            .map(|_| put(&key(rng.gen_range(0..OBJECTS)), &value(&mut rng)))
            .collect();
        let (s, p) = ord.propose(ops);
        run_all(&mut [&mut a, &mut b, &mut c], s, &p);
    }
    let c_root_at_pause = c.root();
    // 10,000 requests while c sleeps: 100 batches of 100 writes and reads.
    let mut written = BTreeSet::new();
    let mut last_cert = None;
    let mut a_replies = Vec::new();
    for _ in 0..100 {
        let ops: Vec<AppRequest> = (0..100)
            .map(|_| {
                let k = key(rng.gen_range(0..OBJECTS));
                if rng.gen_bool(0.8) {
                    written.insert(k.clone());
                    put(&k, &value(&mut rng))
                } else {
                    get(&k)
                }
            })
            .collect();
        let (s, p) = ord.propose(ops);
        let outs = vec![feed(&mut a, s, &p), feed(&mut b, s, &p)];
        a_replies.extend(replies(&outs[0]));
        if let Some(ct) = cert_from(&outs) {
            last_cert = Some((ct, written.clone()));
        }
    }
    let (cert, stale_expected) = last_cert.unwrap();
    assert_eq!(cert.seq, 112);
    for r in [&mut a, &mut b] {
        r.on_msg(
            0,
            from_node(),
            Msg::CheckpointCert(cert.clone()),
            &mut zz_agent::source::NoPeers,
        );
    }
    // The keys the replayed requests (113..=120) touch that changed while c slept.
    let mut touched = BTreeSet::new();
    for (_, p) in ord.log.iter().filter(|(s, _)| *s > cert.seq) {
        for op in p.requests[0].body.ops.unpack().unwrap() {
            let k = op.path.trim_start_matches("/kv/").to_string();
            if stale_expected.contains(&k) {
                touched.insert(k);
            }
        }
    }
    let want_root = a.root();

    let mut peers = LocalPeers::new(vec![&a, &b]);
    let got = wake(&mut c, &mut peers, &cert, &ord.log);
    assert_eq!(c.last_executed(), 120);
    assert_eq!(c.root(), want_root, "woken replica diverges");
    assert_eq!(got.len(), 8);
    assert!(got.iter().all(|r| r.root != c_root_at_pause));
    let fetched = c.stats().fetched_objects;
    println!(
        "stale after walk: {} of {OBJECTS}; replay touched {} stale; fetched {fetched}; requests {}; nodes asked {}",
        stale_expected.len(),
        touched.len(),
        peers.requests,
        peers.nodes_asked
    );
    assert_eq!(fetched, touched.len() as u64, "fetched more than the replay touched");
    assert!(fetched < 1_000);
    assert_eq!(
        c.state().stale_count() as u64,
        stale_expected.len() as u64 - fetched,
        "the walk marked other objects stale than those that changed"
    );
    assert_eq!(peers.objects_asked, fetched);
    // The replies match an active replica's (same results, same roots).
    let want: Vec<Digest> = a_replies
        .iter()
        .filter(|r| r.seq > cert.seq)
        .map(|r| r.result_digest())
        .collect();
    let have: Vec<Digest> = got.iter().map(|r| r.result_digest()).collect();
    assert_eq!(have, want);
    // Background sync brings in the rest.
    let mut rounds = 0;
    while c.state().stale_count() > 0 {
        c.background_sync(256, &mut peers).unwrap();
        rounds += 1;
        assert!(rounds < 10_000);
    }
    assert_eq!(c.stats().fetched_objects as usize, stale_expected.len());
    for k in stale_expected.iter().take(200) {
        assert_eq!(
            c.state().get(k.as_bytes()).unwrap(),
            a.state().get(k.as_bytes()).unwrap()
        );
    }
    assert_eq!(c.root(), want_root);
}

/// Objects of the two large-state tests: far more non-empty buckets (of
/// 2^16) than one request's worth, so a fresh replica adopts them opaque.
const N: usize = 20_000;

/// Replicas 0 and 1 holding the same `N` random objects on the default
/// shape, the rng that made them, and their options.
fn large_pair(seed: u64) -> (Replica, Replica, ChaCha8Rng, Opts) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let o = Opts {
        interval: 16,
        shape: Shape::default(),
        ..Opts::default()
    };
    let (mut a, mut b) = (replica(0, &o), replica(1, &o));
    for i in 0..N {
        let v = value(&mut rng);
        for r in [&mut a, &mut b] {
            r.state_mut().write(key(i).into_bytes(), Some(v.clone())).unwrap();
        }
    }
    (a, b, rng, o)
}

#[test]
fn a_fresh_replica_walks_no_leaf_level_and_fetches_only_the_buckets_it_touches() {
    let seed = seed();
    let (mut a, mut b, mut rng, o) = large_pair(seed);
    let mut ord = Orderer::default();
    let mut last_cert = None;
    let mut a_replies = Vec::new();
    for _ in 0..20 {
        let ops = (0..10)
            .map(|_| put(&key(rng.gen_range(0..N)), &value(&mut rng)))
            .collect();
        let (s, p) = ord.propose(ops);
        let outs = vec![feed(&mut a, s, &p), feed(&mut b, s, &p)];
        a_replies.extend(replies(&outs[0]));
        if let Some(ct) = cert_from(&outs) {
            last_cert = Some(ct);
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

    let mut fresh = replica(2, &o);
    let mut peers = LocalPeers::new(vec![&a, &b]);
    let got = wake(&mut fresh, &mut peers, &cert, &ord.log);
    assert_eq!(fresh.last_executed(), 20);
    assert_eq!(fresh.root(), want_root, "the fresh replica diverges");
    let want: Vec<Digest> = a_replies
        .iter()
        .filter(|r| r.seq > cert.seq)
        .map(|r| r.result_digest())
        .collect();
    assert_eq!(got.iter().map(|r| r.result_digest()).collect::<Vec<_>>(), want);
    let shape = Shape::default();
    let inner: u64 = (0..shape.depth()).map(|l| shape.level_len(l)).sum();
    println!(
        "seed {seed}: nodes asked {} (inner nodes {inner}), buckets asked {}, objects fetched {}, stale left {}",
        peers.nodes_asked,
        peers.buckets_asked,
        fresh.stats().fetched_objects,
        fresh.state().stale_count()
    );
    assert!(
        peers.nodes_asked <= inner,
        "the walk asked for bucket entries: {} paths",
        peers.nodes_asked
    );
    // Seqs 17..=20 write 40 keys: only their buckets are fetched.
    assert!(peers.buckets_asked <= 40, "{} buckets", peers.buckets_asked);
    assert!(fresh.stats().fetched_objects < 200);
    assert!(
        fresh.state().stale_count() > 10_000,
        "the rest waits for the background"
    );
    // Background sync brings in every other bucket.
    let mut rounds = 0;
    while fresh.state().stale_count() > 0 {
        fresh.background_sync(512, &mut peers).unwrap();
        rounds += 1;
        assert!(rounds < 1_000);
    }
    assert_eq!(fresh.root(), want_root);
    assert_eq!(fresh.state().object_count(), a.state().object_count());
    for i in (0..N).step_by(97) {
        let k = key(i);
        assert_eq!(
            fresh.state().get(k.as_bytes()).unwrap(),
            a.state().get(k.as_bytes()).unwrap()
        );
    }
}

/// Corrupts one kind of answer from one peer (Byzantine middleware).
struct Tamper<'a> {
    inner: LocalPeers<'a>,
    bad: ReplicaId,
    kind: &'static str,
}

impl StateSource for Tamper<'_> {
    fn fetch(&mut self, peer: ReplicaId, cp: Seq, want: StateWant) -> Result<StateGive, FetchError> {
        let mut g = self.inner.fetch(peer, cp, want)?;
        if peer == self.bad {
            match (&mut g, self.kind) {
                (StateGive::Nodes(ns), "nodes") => {
                    if let Some((_, ds)) = ns.last_mut() {
                        if let Some(d) = ds.last_mut() {
                            d.0[3] ^= 4;
                        }
                    }
                }
                (StateGive::Objects(os), "objects") => {
                    if let Some((_, Some(v))) = os.first_mut() {
                        v[0] ^= 1;
                    }
                }
                (StateGive::Buckets(bs), "buckets") => {
                    if let Some((_, objs)) = bs.first_mut() {
                        if let Some((_, v)) = objs.first_mut() {
                            v.push(0);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(g)
    }
}

/// A small scenario: three replicas, c misses 40 seqs, then wakes.
fn small_scenario() -> (Replica, Replica, Replica, CheckpointCert, Orderer) {
    let [a, b, c] = scenario_pausing(2);
    let (c, ct, ord) = c;
    (a.0, b.0, c, ct, ord)
}

type Slot = (Replica, CheckpointCert, Orderer);

/// Replica `paused` misses 40 seqs of 20 writes; the others run them.
fn scenario_pausing(paused: u16) -> [Slot; 3] {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let o = Opts::default();
    let mut rs = [replica(0, &o), replica(1, &o), replica(2, &o)];
    let mut ord = Orderer::default();
    for _ in 0..5 {
        let ops = (0..20)
            .map(|_| put(&key(rng.gen_range(0..300)), &value(&mut rng)))
            .collect();
        let (s, p) = ord.propose(ops);
        for r in rs.iter_mut() {
            feed(r, s, &p);
        }
    }
    let mut last = None;
    for _ in 0..40 {
        let ops = (0..20)
            .map(|_| put(&key(rng.gen_range(0..300)), &value(&mut rng)))
            .collect();
        let (s, p) = ord.propose(ops);
        let outs: Vec<Vec<Out>> = rs
            .iter_mut()
            .filter(|r| r.me().index != paused)
            .map(|r| feed(r, s, &p))
            .collect();
        last = cert_from(&outs).or(last);
    }
    let ct = last.unwrap();
    rs.map(|r| {
        (
            r,
            ct.clone(),
            Orderer {
                seq: ord.seq,
                next_req: ord.next_req,
                log: ord.log.clone(),
            },
        )
    })
}

#[test]
fn a_peer_still_catching_up_is_passed_over_without_blame() {
    let [(mut r0, ct, ord), (r1, _, _), (r2, _, _)] = scenario_pausing(0);
    {
        let mut src = LocalPeers::new(vec![&r1, &r2]);
        wake(&mut r0, &mut src, &ct, &ord.log);
    }
    assert!(r0.state().stale_count() > 0, "r0 should still lack objects");
    // A replacement for r1 asks r0 first (it has no reports against it).
    let mut fresh = replica(1, &Opts::default());
    let mut src = LocalPeers::new(vec![&r0, &r2]);
    wake(&mut fresh, &mut src, &ct, &ord.log);
    while fresh.state().stale_count() > 0 {
        fresh.background_sync(8, &mut src).unwrap();
    }
    let mut r2 = r2;
    assert_eq!(fresh.root(), r2.root());
    assert_eq!(fresh.stats().bad_state_from_peers, 0);
}

#[test]
fn peer_serving_bad_nodes_objects_or_buckets_is_detected_and_skipped() {
    for kind in ["nodes", "objects", "buckets"] {
        let (a, b, mut c, ct, ord) = small_scenario();
        let mut src = Tamper {
            inner: LocalPeers::new(vec![&a, &b]),
            bad: a.me(),
            kind,
        };
        wake(&mut c, &mut src, &ct, &ord.log);
        while c.state().stale_count() > 0 {
            c.background_sync(8, &mut src).unwrap();
        }
        let mut a2 = a;
        assert_eq!(c.last_executed(), 45, "{kind}");
        assert_eq!(c.root(), a2.root(), "{kind}");
        assert!(c.stats().bad_state_from_peers >= 1, "{kind}: bad peer not reported");
    }
}

#[test]
fn peer_in_serve_bad_state_mode_is_skipped() {
    let (mut a, b, mut c, ct, ord) = small_scenario();
    a.on_msg(
        0,
        from_node(),
        control(0, 1, ControlCmd::SetFault(ReplicaFault::ServeBadState)),
        &mut zz_agent::source::NoPeers,
    );
    let mut src = LocalPeers::new(vec![&a, &b]);
    wake(&mut c, &mut src, &ct, &ord.log);
    assert!(c.stats().bad_state_from_peers >= 1);
    assert_eq!(c.last_executed(), 45);
    let mut b2 = b;
    assert_eq!(c.root(), b2.root());
}

#[test]
fn fresh_replacement_with_empty_state_uses_the_same_path() {
    let (a, b, _, ct, ord) = small_scenario();
    let mut fresh = replica(2, &Opts::default());
    let mut src = LocalPeers::new(vec![&a, &b]);
    let replies = wake(&mut fresh, &mut src, &ct, &ord.log);
    assert_eq!(replies.len(), 45 - ct.seq as usize);
    while fresh.state().stale_count() > 0 {
        fresh.background_sync(8, &mut src).unwrap();
    }
    let mut a2 = a;
    assert_eq!(fresh.root(), a2.root());
    assert_eq!(fresh.state().object_count(), a2.state().object_count());
}

#[test]
fn without_any_peer_the_replica_waits_instead_of_diverging() {
    let (_, _, mut c, ct, ord) = small_scenario();
    wake(&mut c, &mut zz_agent::source::NoPeers, &ct, &ord.log);
    assert_eq!(
        c.last_executed(),
        5,
        "must not execute past a checkpoint it cannot reach"
    );
}

/// `seqs` batches of 4 random PUTs on `rs`; every certificate they make is
/// delivered to them and kept in `certs`.
fn run_seqs(
    rs: &mut [&mut Replica],
    ord: &mut Orderer,
    rng: &mut ChaCha8Rng,
    seqs: usize,
    objects: usize,
    certs: &mut Vec<CheckpointCert>,
) {
    for _ in 0..seqs {
        let ops = (0..4)
            .map(|_| put(&key(rng.gen_range(0..objects)), &value(rng)))
            .collect();
        let (s, p) = ord.propose(ops);
        let outs: Vec<Vec<Out>> = rs.iter_mut().map(|r| feed(r, s, &p)).collect();
        if let Some(ct) = cert_from(&outs) {
            for r in rs.iter_mut() {
                r.on_msg(
                    0,
                    from_node(),
                    Msg::CheckpointCert(ct.clone()),
                    &mut zz_agent::source::NoPeers,
                );
            }
            certs.push(ct);
        }
    }
}

/// A fresh replica `c` that adopted checkpoint 16 (buckets opaque) and
/// replayed to 20, left behind while `a` and `b` ran on for many intervals:
/// checkpoint 16, which its stale objects come from, is long gone there.
struct LeftBehind {
    a: Replica,
    b: Replica,
    c: Replica,
    ord: Orderer,
    newest: CheckpointCert,
    /// Where the orders `c` has not seen start in `ord.log`.
    resume_from: usize,
}

fn left_behind_a_dropped_checkpoint() -> LeftBehind {
    let seed = seed();
    let (mut a, mut b, mut rng, o) = large_pair(seed);
    let mut ord = Orderer::default();
    let mut certs = Vec::new();
    run_seqs(&mut [&mut a, &mut b], &mut ord, &mut rng, 20, N, &mut certs);
    let first = certs[0].clone();
    let mut c = replica(2, &o);
    {
        let mut peers = LocalPeers::new(vec![&a, &b]);
        wake(&mut c, &mut peers, &first, &ord.log);
    }
    assert_eq!(c.last_executed(), 20);
    assert!(c.state().stale_count() > 0);
    let resume_from = ord.log.len();
    run_seqs(&mut [&mut a, &mut b], &mut ord, &mut rng, 16 * 12, N, &mut certs);
    let newest = certs.last().unwrap().clone();
    LeftBehind {
        a,
        b,
        c,
        ord,
        newest,
        resume_from,
    }
}

#[test]
fn a_fresh_replica_whose_checkpoint_peers_dropped_asks_the_nodes_and_catches_up_to_a_newer_one() {
    let LeftBehind {
        a,
        b,
        mut c,
        ord,
        newest,
        resume_from,
    } = left_behind_a_dropped_checkpoint();
    let mut peers = LocalPeers::new(vec![&a, &b]);
    let mut out = Vec::new();
    for (seq, p) in ord.log[resume_from..].iter() {
        for m in Orderer::orders(*seq, p) {
            out.extend(c.on_msg(10_000, link_of(&m), m, &mut peers));
        }
        if c.last_executed() < *seq {
            break;
        }
    }
    assert!(
        c.last_executed() < newest.seq,
        "stuck behind the dropped checkpoint, as expected"
    );
    assert!(
        out.iter().any(|o| matches!(o, Out::ToNode(_, Msg::FetchOrders(_)))),
        "it must ask the nodes (whose answer carries the newest certificate)"
    );
    // The nodes' newest certificate and the orders after it get it going.
    wake_at(11_000, &mut c, &mut peers, &newest, &ord.log);
    assert_eq!(c.last_executed(), ord.log.last().unwrap().0);
    let mut a2 = a;
    assert_eq!(c.root(), a2.root());
}

#[test]
fn a_replica_that_cannot_replay_from_a_dropped_checkpoint_catches_up_to_a_newer_one_whose_orders_it_holds() {
    let LeftBehind {
        a,
        b,
        mut c,
        ord,
        newest,
        resume_from,
    } = left_behind_a_dropped_checkpoint();
    let mut peers = LocalPeers::new(vec![&a, &b]);
    // Every order up to the newest checkpoint arrives (a woken replica reads
    // them from its links' backlog) before that checkpoint's certificate:
    // replaying them would need checkpoint 16, which the peers dropped.
    for (seq, p) in ord.log[resume_from..].iter().filter(|(s, _)| *s <= newest.seq) {
        for m in Orderer::orders(*seq, p) {
            c.on_msg(10_000, link_of(&m), m, &mut peers);
        }
    }
    assert!(
        c.last_executed() < newest.seq,
        "replay is blocked on the dropped checkpoint"
    );
    c.on_msg(10_001, from_node(), Msg::CheckpointCert(newest.clone()), &mut peers);
    assert!(
        c.last_executed() >= newest.seq,
        "with every order at hand it must still catch up to the newer certificate (at {})",
        c.last_executed()
    );
    feed_after(11_000, &mut c, &mut peers, &ord.log, newest.seq);
    assert_eq!(c.last_executed(), ord.log.last().unwrap().0);
    let mut a2 = a;
    assert_eq!(c.root(), a2.root());
}
