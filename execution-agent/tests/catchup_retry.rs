//! A woken replica whose first certificate names a checkpoint its peers no
//! longer keep, while another peer (with f=2, the other woken standby, still
//! catching up itself) leaves each state request to time out. Reading its
//! backlog must not pay that timeout again on every message: the catch-up is
//! retried on a timer, so the newer certificate further down the backlog is
//! reached at once. (Issue 25: an f=2 incident took ~20 s, about 130 backlog
//! messages × a 150 ms state request to the other standby.)
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers (the shared harness)

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::Cell;
use zz_agent::source::{FetchError, LocalPeers, StateSource};
use zz_agent::{Out, Replica};
use zz_wire::*;

/// What one request to a peer that never answers blocks the replica for
/// (the agent's `UNKNOWN_PEER_TIMEOUT`).
const TIMEOUT_MS: u64 = 150;

/// In-memory peers on a clock that requests move on: 1 ms per answered
/// request, `TIMEOUT_MS` per request to `silent`, which never answers.
struct Clocked<'a> {
    inner: LocalPeers<'a>,
    silent: ReplicaId,
    clock: &'a Cell<u64>,
    timeouts: u64,
}

impl StateSource for Clocked<'_> {
    fn fetch(&mut self, peer: ReplicaId, cp: Seq, want: StateWant) -> Result<StateGive, FetchError> {
        if peer == self.silent {
            self.timeouts += 1;
            self.clock.set(self.clock.get() + TIMEOUT_MS);
            return Err(FetchError::Timeout(peer));
        }
        self.clock.set(self.clock.get() + 1);
        self.inner.fetch(peer, cp, want)
    }
}

/// Replicas 0 and 1 run `seqs` batches of random PUTs; the certificates up
/// to `stable` are delivered to them (so they drop older snapshots), as
/// when an open incident holds the later ones. Returns replica 0, the log
/// and the certificates up to `stable`.
fn run(seqs: usize, stable: Seq, seed: u64) -> (Replica, Orderer, Vec<CheckpointCert>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let o = Opts::default();
    let (mut a, mut b) = (replica(0, &o), replica(1, &o));
    let mut ord = Orderer::default();
    let mut certs = Vec::new();
    for _ in 0..seqs {
        let ops = (0..4)
            .map(|_| put(&format!("k{}", rng.gen_range(0..200)), &[rng.gen::<u8>(); 16]))
            .collect();
        let (s, p) = ord.propose(ops);
        let sigs: Vec<_> = [&mut a, &mut b]
            .into_iter()
            .flat_map(|r| checkpoints(&feed(r, s, &p)))
            .collect();
        if !sigs.is_empty() && s <= stable {
            let ct = cert(sigs);
            for r in [&mut a, &mut b] {
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
    (a, ord, certs)
}

#[test]
fn a_failed_catch_up_is_retried_on_a_tick_not_on_every_backlog_message() {
    let seed = seed();
    // Checkpoints 16, 32, 48 stable: replica 0 keeps only 32 and 48.
    let (a, ord, certs) = run(48 + 64, 48, seed);
    let (oldest, newest) = (certs[0].clone(), certs[2].clone());
    assert!(!a.state().has_snapshot(oldest.seq));
    let clock = Cell::new(10_000);
    let mut src = Clocked {
        inner: LocalPeers::new(vec![&a]),
        silent: replica_name(1),
        clock: &clock,
        timeouts: 0,
    };
    let mut c = replica(2, &Opts::default());
    let woken_at = clock.get();
    // The backlog a paused replica reads on waking: an old certificate,
    // orders it cannot run yet (its nodes dropped the orders below their
    // stable checkpoint), then the nodes' answer with the newest certificate.
    c.on_msg(clock.get(), from_node(), Msg::CheckpointCert(oldest.clone()), &mut src);
    let mut out: Vec<Out> = Vec::new();
    for (seq, p) in ord.log.iter().filter(|(s, _)| *s > newest.seq) {
        for m in Orderer::orders(*seq, p) {
            out.extend(c.on_msg(clock.get(), link_of(&m), m, &mut src));
        }
    }
    assert_eq!(c.last_executed(), 0, "nothing can run before the catch-up");
    c.on_msg(clock.get(), from_node(), Msg::CheckpointCert(newest.clone()), &mut src);
    let took = clock.get() - woken_at;
    assert_eq!(
        c.last_executed(),
        ord.seq,
        "the newest certificate and the orders after it bring it up to date"
    );
    assert!(
        took < 1_000,
        "reaching the newest certificate took {took} ms of state requests ({} timed out); \
         seed {seed}",
        src.timeouts
    );
}

#[test]
fn ticks_retry_a_failing_catch_up_less_and_less_often() {
    let seed = seed();
    let (a, _, certs) = run(48, 48, seed);
    let clock = Cell::new(10_000);
    let mut src = Clocked {
        inner: LocalPeers::new(vec![&a]),
        silent: replica_name(1),
        clock: &clock,
        timeouts: 0,
    };
    let mut c = replica(2, &Opts::default());
    let start = clock.get();
    c.on_msg(start, from_node(), Msg::CheckpointCert(certs[0].clone()), &mut src);
    assert_eq!(src.timeouts, 1);
    // Two seconds of 10 ms ticks with nothing newer to catch up to: waits
    // of 50, 100, 200, 400, 800 ms after each failed try, not a try per tick.
    while clock.get() < start + 2_000 {
        c.on_tick(clock.get(), &mut src);
        clock.set(clock.get() + 10);
    }
    assert_eq!(c.last_executed(), 0);
    assert!(
        (2..=7).contains(&src.timeouts),
        "{} tries in 2 s; seed {seed}",
        src.timeouts
    );
}

/// The checkpoint in a heartbeat is one the replica holds, not one it has
/// only heard of: the orchestrator pauses a new standby as ready once its
/// heartbeat reaches the stable checkpoint with nothing stale. A standby
/// whose catch-up kept failing (its peers' state requests timed out under
/// emulation) reported the certificate it had received, with no stale
/// objects yet, and was paused holding nothing; woken by the next incident,
/// it took 16–26 s to answer (`zz bench recovery --backend libvirt`).
#[test]
fn a_heartbeat_reports_the_checkpoint_held_not_one_only_heard_of() {
    let seed = seed();
    let (a, _, certs) = run(48, 48, seed);
    let newest = certs.last().cloned().unwrap();
    let last_checkpoint = |r: &mut Replica| match r.heartbeat(0) {
        Some(Msg::Heartbeat(h)) => (h.body.last_checkpoint, h.body.stale_objects),
        other => panic!("no heartbeat: {other:?}"),
    };
    let mut c = replica(2, &Opts::default());
    c.on_msg(
        0,
        from_node(),
        Msg::CheckpointCert(newest.clone()),
        &mut zz_agent::source::NoPeers,
    );
    assert_eq!(c.last_executed(), 0, "no peer answered: nothing caught up");
    assert_eq!(
        last_checkpoint(&mut c),
        (0, 0),
        "a replica holding no state reports no checkpoint; seed {seed}"
    );
    // Once a peer serves it, the catch-up lands on the certificate.
    let mut src = LocalPeers::new(vec![&a]);
    c.on_tick(10_000, &mut src);
    assert_eq!(c.last_executed(), newest.seq);
    assert_eq!(last_checkpoint(&mut c).0, newest.seq, "seed {seed}");
}
