//! Each fault mode produces the misbehaviour it names; controls that are not
//! the orchestrator's, not for me, or replayed, are ignored.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

mod common;

use common::*;
use zz_agent::source::{LocalPeers, NoPeers};
use zz_agent::{Out, Replica};
use zz_wire::*;

fn pair() -> (Replica, Replica) {
    let o = Opts::default();
    (replica(0, &o), replica(1, &o))
}

fn set(r: &mut Replica, nonce: u64, k: ReplicaFault) -> Vec<Out> {
    let i = r.me().index;
    r.on_msg(0, from_node(), control(i, nonce, ControlCmd::SetFault(k)), &mut NoPeers)
}

fn batch(ord: &mut Orderer, n: usize) -> (Seq, Proposal) {
    let s = ord.seq;
    ord.propose((0..n).map(|i| put(&format!("k{s}-{i}"), b"v")).collect())
}

#[test]
fn crash_exits_with_101() {
    let (mut r, _) = pair();
    assert_eq!(set(&mut r, 1, ReplicaFault::Crash), vec![Out::Exit(101)]);
}

#[test]
fn corrupt_reply_signs_responses_that_differ() {
    let (mut bad, mut good) = pair();
    set(&mut bad, 1, ReplicaFault::CorruptReply);
    let mut ord = Orderer::default();
    let (s, p) = batch(&mut ord, 3);
    let (rb, rg) = (replies(&feed(&mut bad, s, &p)), replies(&feed(&mut good, s, &p)));
    assert_eq!(rb[0].root, rg[0].root, "state is still right");
    assert_ne!(rb[0].result_digest(), rg[0].result_digest());
    let (xs, ys) = (rb[0].responses().unwrap(), rg[0].responses().unwrap());
    assert_eq!(xs.len(), 3);
    assert!(xs.iter().zip(&ys).all(|(x, y)| x.2 != y.2));
    // A null request still gets a reply that differs.
    let (s, p) = ord.propose(vec![]);
    let (rb, rg) = (replies(&feed(&mut bad, s, &p)), replies(&feed(&mut good, s, &p)));
    assert_ne!(rb[0].result_digest(), rg[0].result_digest());
    // Cleared: replies agree again.
    bad.on_msg(0, from_node(), control(0, 2, ControlCmd::ClearFaults), &mut NoPeers);
    let (s, p) = batch(&mut ord, 2);
    let (rb, rg) = (replies(&feed(&mut bad, s, &p)), replies(&feed(&mut good, s, &p)));
    assert_eq!(rb[0].result_digest(), rg[0].result_digest());
}

#[test]
fn corrupt_state_makes_the_root_diverge() {
    let (mut bad, mut good) = pair();
    let mut ord = Orderer::default();
    let (s, p) = batch(&mut ord, 3);
    feed(&mut bad, s, &p);
    feed(&mut good, s, &p);
    assert_eq!(bad.root(), good.root());
    set(&mut bad, 1, ReplicaFault::CorruptState);
    assert_ne!(bad.root(), good.root());
    let (s, p) = batch(&mut ord, 1);
    let (rb, rg) = (replies(&feed(&mut bad, s, &p)), replies(&feed(&mut good, s, &p)));
    assert_ne!(rb[0].root, rg[0].root);
}

#[test]
fn bad_checkpoint_signs_a_root_that_differs_from_the_true_one() {
    let (mut bad, mut good) = pair();
    set(&mut bad, 1, ReplicaFault::BadCheckpoint);
    let mut ord = Orderer::default();
    let (mut cb, mut cg) = (vec![], vec![]);
    for _ in 0..16 {
        let (s, p) = batch(&mut ord, 2);
        cb.extend(checkpoints(&feed(&mut bad, s, &p)));
        cg.extend(checkpoints(&feed(&mut good, s, &p)));
    }
    assert_eq!((cb.len(), cg.len()), (1, 1));
    assert_eq!(cg[0].body.root, good.root());
    assert_eq!(bad.root(), good.root(), "the state itself is fine");
    assert_ne!(cb[0].body.root, cg[0].body.root);
    assert!(cb[0].verify(&keyring()).is_ok(), "it is properly signed");
}

#[test]
fn serve_bad_state_serves_objects_that_do_not_verify() {
    let (mut bad, mut good) = pair();
    let mut ord = Orderer::default();
    for _ in 0..16 {
        let (s, p) = batch(&mut ord, 2);
        feed(&mut bad, s, &p);
        feed(&mut good, s, &p);
    }
    set(&mut bad, 1, ReplicaFault::ServeBadState);
    let want = StateWant::Objects(vec![b"k0-0".to_vec()]);
    assert_ne!(bad.serve(16, &want), good.serve(16, &want));
    let nodes = StateWant::Nodes(vec![TreePath { level: 0, index: 0 }]);
    assert_ne!(bad.serve(16, &nodes), good.serve(16, &nodes));
}

#[test]
fn hang_stops_executing_replying_and_serving_until_cleared() {
    let (mut r, _) = pair();
    set(&mut r, 1, ReplicaFault::Hang);
    let mut ord = Orderer::default();
    let (s, p) = batch(&mut ord, 2);
    assert!(feed(&mut r, s, &p).is_empty());
    assert_eq!(r.last_executed(), 0);
    assert!(r.heartbeat(1).is_none());
    assert!(r.serve(0, &StateWant::Buckets(vec![0])).is_none());
    r.on_msg(0, from_node(), control(0, 2, ControlCmd::ClearFaults), &mut NoPeers);
    assert!(r.heartbeat(1).is_some());
    // The orders sent while hung were not kept: it asks for them again.
    let out = r.on_tick(1_000, &mut NoPeers);
    let _ = out;
    let (s2, p2) = batch(&mut ord, 1);
    let out = feed(&mut r, s2, &p2);
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::ToNode(_, Msg::FetchOrders(f)) if f.body.from == 1)));
    feed(&mut r, s, &p);
    feed(&mut r, s2, &p2);
    assert_eq!(r.last_executed(), 2);
}

#[test]
fn slow_delays_each_batch() {
    let (mut r, _) = pair();
    set(&mut r, 1, ReplicaFault::Slow);
    let mut ord = Orderer::default();
    let (s, p) = batch(&mut ord, 1);
    let out = feed(&mut r, s, &p);
    assert_eq!(out.first(), Some(&Out::Delay(zz_agent::replica::SLOW_DELAY)));
    assert_eq!(replies(&out).len(), 1);
}

#[test]
fn controls_must_be_signed_by_the_orchestrator_for_me_with_a_fresh_nonce() {
    let (mut r, _) = pair();
    // Someone else's signature.
    let forged = Msg::Control(Signed {
        body: Control {
            target: Principal::Replica(replica_name(0)),
            nonce: 5,
            cmd: ControlCmd::SetFault(ReplicaFault::Crash),
        },
        sig: node_id(0).sign_digest(&Digest::ZERO),
    });
    assert!(r.on_msg(0, from_node(), forged, &mut NoPeers).is_empty());
    // Aimed at another replica.
    assert!(r
        .on_msg(
            0,
            from_node(),
            control(1, 6, ControlCmd::SetFault(ReplicaFault::Crash)),
            &mut NoPeers
        )
        .is_empty());
    // A fresh one works; replaying its nonce does not.
    set(&mut r, 7, ReplicaFault::Slow);
    assert!(r.faults().has(ReplicaFault::Slow));
    r.on_msg(0, from_node(), control(0, 8, ControlCmd::ClearFaults), &mut NoPeers);
    assert!(set(&mut r, 7, ReplicaFault::Crash).is_empty());
    assert!(!r.faults().has(ReplicaFault::Slow));
}

#[test]
fn forged_or_foreign_orders_are_not_executed() {
    let (mut r, _) = pair();
    let mut ord = Orderer::default();
    let (s, p) = batch(&mut ord, 1);
    // Two orders signed by the same node count once.
    let one = Orderer::orders(s, &p).remove(0);
    r.on_msg(0, link_of(&one), one.clone(), &mut NoPeers);
    r.on_msg(0, link_of(&one), one, &mut NoPeers);
    assert_eq!(r.last_executed(), 0);
    // A second vote naming another node than the link it came on is dropped.
    let forged = Order {
        node: NodeId(3),
        app: AppId(0),
        seq: s,
        digest: p.digest(),
        proposal: None,
    };
    r.on_msg(0, Principal::Node(NodeId(2)), Msg::Order(forged), &mut NoPeers);
    assert_eq!(r.last_executed(), 0);
    assert!(r.stats().dropped_msgs >= 1);
    feed(&mut r, s, &p);
    assert_eq!(r.last_executed(), 1);
}

#[test]
fn state_requests_are_answered_through_the_relaying_node() {
    let (mut a, mut b) = pair();
    let mut ord = Orderer::default();
    for _ in 0..16 {
        let (s, p) = batch(&mut ord, 1);
        feed(&mut a, s, &p);
        feed(&mut b, s, &p);
    }
    let req = replica_id(1).sign(StateRequest {
        from: replica_name(1),
        to: replica_name(0),
        id: 9,
        checkpoint: 16,
        want: StateWant::Objects(vec![b"k0-0".to_vec()]),
    });
    let out = a.on_msg(
        0,
        Principal::Node(NodeId(2)),
        Msg::StateRequest(req),
        &mut LocalPeers::new(vec![]),
    );
    match out.as_slice() {
        [Out::ToNode(NodeId(2), Msg::StateResponse(resp))] => {
            assert_eq!(resp.body.id, 9);
            assert_eq!(
                resp.body.give,
                StateGive::Objects(vec![(b"k0-0".to_vec(), Some(b"v".to_vec()))])
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}
