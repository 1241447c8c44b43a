//! Step tables for the node machine: one input, the outs it must (not) give.

use super::*;
use crate::core::RecordKind;
use crate::node::orders::FETCH_ORDERS_BURST;
use crate::node::store::MemStore;
use std::net::SocketAddr;
use zz_wire::config::generate;
use zz_wire::{
    AppRequest, ClientBatch, ClientId, Commit, Control, Digest, FetchOrders, GenerateOptions, NonDet, Order,
    PrePrepare, Prepare, Proposal, Signed, Vote,
};

const T0: u64 = 1_000_000;
const APP: AppId = AppId(0);
const CLIENT: ClientId = ClientId(0);

/// A deployment of f = 1 with one app, one client, and batches cut at one
/// client batch (so a request is proposed at once); everyone's identity.
struct Fixture {
    dep: Arc<Deployment>,
    ids: Vec<Identity>,
}

impl Fixture {
    fn new() -> Self {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let opts = GenerateOptions {
            f: 1,
            apps: vec![("kv".into(), "kv".into())],
            clients: vec!["client".into()],
            node_addrs: (1..=4).map(addr).collect(),
            orchestrator_addr: addr(5),
            checkpoint_interval: 4,
            wasm_slots: 0,
        };
        let (mut dep, ids) = generate(&opts).expect("a valid deployment");
        dep.timing.batch_max = 1;
        Fixture {
            dep: Arc::new(dep),
            ids,
        }
    }

    fn id(&self, who: Principal) -> &Identity {
        self.ids
            .iter()
            .find(|i| i.who == who)
            .expect("an identity for everyone")
    }

    fn node(&self, i: u16) -> &Identity {
        self.id(Principal::Node(NodeId(i)))
    }

    /// Node `i`'s machine, started at `T0`.
    fn machine(&self, i: u16) -> NodeMachine {
        self.restored(i, BTreeMap::new())
    }

    fn restored(&self, i: u16, restored: BTreeMap<AppId, (Durable, Vec<Record>)>) -> NodeMachine {
        let mut m = NodeMachine::new(self.dep.clone(), self.node(i).clone(), restored, 42).expect("a node identity");
        m.start(T0);
        m
    }

    fn request(&self, first_id: u64) -> Msg {
        let ops = [AppRequest::new("PUT", "/kv/x", vec![1])];
        let batch = ClientBatch::new(CLIENT, APP, first_id, &ops).expect("packs");
        Msg::Request(self.id(Principal::Client(CLIENT)).sign(batch))
    }

    fn control(&self, node: u16, nonce: u64, cmd: ControlCmd) -> Msg {
        Msg::Control(self.id(Principal::Orchestrator).sign(Control {
            target: Principal::Node(NodeId(node)),
            nonce,
            cmd,
        }))
    }

    fn prepare(&self, from: u16, seq: Seq, digest: Digest) -> Msg {
        Msg::Prepare(self.node(from).sign(Prepare(vote(from, seq, digest))))
    }
}

fn vote(from: u16, seq: Seq, digest: Digest) -> Vote {
    Vote {
        node: NodeId(from),
        app: APP,
        view: 0,
        seq,
        digest,
    }
}

fn commit(from: u16, seq: Seq, digest: Digest) -> Msg {
    Msg::Commit(Commit(vote(from, seq, digest)))
}

fn is_send(out: &NodeOut) -> bool {
    out.is_send()
}

fn writes(outs: &[NodeOut]) -> Vec<&Write> {
    outs.iter()
        .filter_map(|o| match o {
            NodeOut::Write(w) => Some(w),
            _ => None,
        })
        .collect()
}

fn pre_prepare(outs: &[NodeOut]) -> Option<&Signed<PrePrepare>> {
    outs.iter().find_map(|o| match o {
        NodeOut::ToPeers(Msg::PrePrepare(pp)) => Some(pp),
        _ => None,
    })
}

fn position(outs: &[NodeOut], what: impl Fn(&NodeOut) -> bool) -> usize {
    outs.iter().position(what).expect("the out is there")
}

/// The primary (node 0) proposes one request, node 1 and 2 prepare it:
/// the outs of each step, and the proposal's digest.
fn prepared_at_primary(fx: &Fixture, m: &mut NodeMachine) -> (Vec<NodeOut>, Digest) {
    let outs = m.on_msg(T0, Principal::Client(CLIENT), fx.request(1));
    let digest = pre_prepare(&outs).expect("proposed").body.digest;
    let mut outs = m.on_msg(T0, Principal::Node(NodeId(1)), fx.prepare(1, 1, digest));
    outs.extend(m.on_msg(T0, Principal::Node(NodeId(2)), fx.prepare(2, 1, digest)));
    (outs, digest)
}

#[test]
fn start_arms_the_heartbeat_and_the_cores_timers() {
    let fx = Fixture::new();
    let mut m = NodeMachine::new(fx.dep.clone(), fx.node(1).clone(), BTreeMap::new(), 42).expect("a node");
    let outs = m.start(T0);
    assert_eq!(outs[0], NodeOut::SetTimer(NodeTimer::Heartbeat, HEARTBEAT_MS));
    assert!(outs
        .iter()
        .any(|o| matches!(o, NodeOut::SetTimer(NodeTimer::Core(APP, TimerId::Retransmit), _))));
    assert!(outs.iter().all(|o| matches!(o, NodeOut::SetTimer(..))), "{outs:?}");
}

#[test]
fn only_an_agreement_node_identity_makes_a_machine() {
    let fx = Fixture::new();
    let client = fx.id(Principal::Client(CLIENT)).clone();
    assert!(NodeMachine::new(fx.dep.clone(), client, BTreeMap::new(), 42).is_err());
}

#[test]
fn a_request_to_the_primary_is_pre_prepared_to_every_peer_without_a_write() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let outs = m.on_msg(T0, Principal::Client(CLIENT), fx.request(1));
    let pp = pre_prepare(&outs).expect("a pre-prepare broadcast");
    assert_eq!((pp.body.view, pp.body.seq), (0, 1));
    assert!(writes(&outs).is_empty(), "{outs:?}");
}

#[test]
fn a_request_to_a_backup_is_forwarded_to_the_primary() {
    let fx = Fixture::new();
    let mut m = fx.machine(1);
    let outs = m.on_msg(T0, Principal::Client(CLIENT), fx.request(1));
    assert!(outs
        .iter()
        .any(|o| matches!(o, NodeOut::ToPeer(NodeId(0), Msg::Request(_)))));
    assert!(pre_prepare(&outs).is_none());
}

#[test]
fn the_prepared_certificate_is_written_before_the_commit_it_guards() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let (outs, _) = prepared_at_primary(&fx, &mut m);
    let write = position(
        &outs,
        |o| matches!(o, NodeOut::Write(Write::Record(APP, r)) if r.key() == (1, RecordKind::Prepared)),
    );
    let commit = position(&outs, |o| matches!(o, NodeOut::ToPeers(Msg::Commit(_))));
    assert!(write < commit, "{outs:?}");
}

#[test]
fn a_delivery_is_written_before_its_order_goes_to_the_replicas() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let (_, digest) = prepared_at_primary(&fx, &mut m);
    let mut outs = m.on_msg(T0, Principal::Node(NodeId(1)), commit(1, 1, digest));
    outs.extend(m.on_msg(T0, Principal::Node(NodeId(2)), commit(2, 1, digest)));
    let write = position(
        &outs,
        |o| matches!(o, NodeOut::Write(Write::Record(APP, r)) if r.key() == (1, RecordKind::Committed)),
    );
    let order = position(&outs, |o| matches!(o, NodeOut::ToReplicas(APP, Msg::Order(_))));
    assert!(write < order, "{outs:?}");
    assert!(
        outs.iter()
            .any(|o| matches!(o, NodeOut::SetTimer(NodeTimer::Reply(APP, 1), _))),
        "the voter waits for the replicas' replies: {outs:?}"
    );
    assert_eq!(m.core(APP).map(Core::last_committed), Some(1));
}

#[test]
fn an_injected_crash_is_an_exit_with_code_3() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let crash = fx.control(0, 1, ControlCmd::SetNodeFault(NodeFault::Crash));
    assert_eq!(m.on_msg(T0, Principal::Orchestrator, crash), vec![NodeOut::Exit(3)]);
}

#[test]
fn a_control_for_another_node_or_with_a_spent_nonce_is_ignored() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let other = fx.control(1, 1, ControlCmd::SetNodeFault(NodeFault::Crash));
    assert!(m.on_msg(T0, Principal::Orchestrator, other).is_empty());
    let slow = fx.control(0, 5, ControlCmd::SetNodeFault(NodeFault::Slow));
    m.on_msg(T0, Principal::Orchestrator, slow);
    assert_eq!(m.fault(), Some(NodeFault::Slow));
    let replayed = fx.control(0, 5, ControlCmd::SetNodeFault(NodeFault::Crash));
    assert!(m.on_msg(T0, Principal::Orchestrator, replayed).is_empty());
}

#[test]
fn a_muted_node_sends_nothing_but_still_writes_and_arms_timers() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let mute = fx.control(0, 1, ControlCmd::SetNodeFault(NodeFault::Mute));
    assert!(m.on_msg(T0, Principal::Orchestrator, mute).is_empty());
    assert_eq!(m.fault(), Some(NodeFault::Mute));

    // The proposal is made, only not sent; an unmuted twin shows its digest.
    let outs = m.on_msg(T0, Principal::Client(CLIENT), fx.request(1));
    assert!(!outs.iter().any(is_send), "{outs:?}");
    let twin = fx.machine(0).on_msg(T0, Principal::Client(CLIENT), fx.request(1));
    let digest = pre_prepare(&twin).expect("proposed").body.digest;
    let mut outs = m.on_msg(T0, Principal::Node(NodeId(1)), fx.prepare(1, 1, digest));
    outs.extend(m.on_msg(T0, Principal::Node(NodeId(2)), fx.prepare(2, 1, digest)));
    assert_eq!(writes(&outs).len(), 1, "the certificate is still recorded: {outs:?}");
    assert!(!outs.iter().any(is_send), "{outs:?}");

    let outs = m.on_timer(T0 + 500, NodeTimer::Heartbeat);
    assert_eq!(outs, vec![NodeOut::SetTimer(NodeTimer::Heartbeat, HEARTBEAT_MS)]);

    let clear = fx.control(0, 2, ControlCmd::ClearFaults);
    m.on_msg(T0, Principal::Orchestrator, clear);
    let outs = m.on_timer(T0 + 1000, NodeTimer::Heartbeat);
    assert!(outs.iter().any(is_send), "cleared, it speaks again: {outs:?}");
}

#[test]
fn a_heartbeat_reports_each_app_to_the_orchestrator_and_rearms() {
    let fx = Fixture::new();
    let mut m = fx.machine(2);
    let outs = m.on_timer(T0 + 500, NodeTimer::Heartbeat);
    match outs.as_slice() {
        [NodeOut::ToOrchestrator(Msg::Heartbeat(h)), NodeOut::SetTimer(NodeTimer::Heartbeat, HEARTBEAT_MS)] => {
            assert_eq!(h.body.from, Principal::Node(NodeId(2)));
            assert_eq!(h.body.time_ms, T0 + 500);
        }
        other => panic!("unexpected outs {other:?}"),
    }
}

#[test]
fn a_machine_restored_from_its_writes_resumes_at_its_commit_point() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let mut store = MemStore::default();
    let (mut outs, digest) = prepared_at_primary(&fx, &mut m);
    outs.extend(m.on_msg(T0, Principal::Node(NodeId(1)), commit(1, 1, digest)));
    outs.extend(m.on_msg(T0, Principal::Node(NodeId(2)), commit(2, 1, digest)));
    let batch: Vec<Write> = writes(&outs).into_iter().cloned().collect();
    store.commit(&batch);

    let again = fx.restored(0, store.restored());
    assert_eq!(again.core(APP).map(Core::last_committed), Some(1));
    let fresh = fx.restored(0, BTreeMap::new());
    assert_eq!(fresh.core(APP).map(Core::last_committed), Some(0));
}

fn orders_replies(outs: &[NodeOut]) -> usize {
    outs.iter()
        .filter(|o| matches!(o, NodeOut::ToInbound(_, Msg::OrdersReply(_))))
        .count()
}

#[test]
fn fetch_orders_are_served_within_a_budget_per_replica() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let fetch = |index: u16| {
        let rep = ReplicaId { app: APP, index };
        let who = Principal::Replica(rep);
        let req = FetchOrders {
            replica: rep,
            from: 1,
            to: 512,
        };
        (who, Msg::FetchOrders(fx.id(who).sign(req)))
    };
    // One replica asks a thousand times at once: each answer may be 8 MiB.
    let (who, msg) = fetch(1);
    let served: usize = (0..1000)
        .map(|_| orders_replies(&m.on_msg(T0 + 1, who, msg.clone())))
        .sum();
    assert!(
        served as u64 <= FETCH_ORDERS_BURST,
        "{served} answers to one replica's burst"
    );
    // Another replica keeps its own budget, and time refills the first's.
    let (other, other_msg) = fetch(0);
    assert_eq!(orders_replies(&m.on_msg(T0 + 1, other, other_msg)), 1);
    assert_eq!(orders_replies(&m.on_msg(T0 + 1 + 1000, who, msg)), 1);
}

/// Issue 25 item 11 names ORDER bodies per seq: on the node side they are
/// only what the node's own core delivered (one order per seq, truncated at
/// each stable checkpoint). An ORDER sent to a node, with ever new bodies,
/// is dropped and nothing is kept.
#[test]
fn orders_sent_to_a_node_are_dropped_not_kept() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let senders = [
        Principal::Node(NodeId(1)),
        Principal::Replica(ReplicaId { app: APP, index: 0 }),
    ];
    for seq in 1..=64 {
        for (k, from) in senders.iter().enumerate() {
            let p = Proposal {
                requests: vec![],
                nondet: NonDet {
                    timestamp_ms: seq,
                    seed: k as u64,
                },
            };
            let o = Order {
                node: NodeId(1),
                app: APP,
                seq,
                digest: p.digest(),
                proposal: Some(p),
            };
            let outs = m.on_msg(T0, *from, Msg::Order(o));
            assert!(outs.is_empty(), "{outs:?}");
        }
    }
    assert!(m.apps[&APP].orders.is_empty());
}

/// A replica's heartbeat on its own link tells the voter how far it is
/// (a silent replica that is behind is not named); one on another's link
/// is ignored.
#[test]
fn a_replicas_heartbeat_reaches_the_voter_only_from_its_own_link() {
    let fx = Fixture::new();
    let mut m = fx.machine(0);
    let hb = |index: u16, last_executed: Seq| {
        let who = Principal::Replica(ReplicaId { app: APP, index });
        Msg::Heartbeat(fx.id(who).sign(Heartbeat {
            from: who,
            app: APP,
            view: 0,
            last_executed,
            last_checkpoint: 0,
            fetched_objects: 0,
            stale_objects: 0,
            time_ms: 0,
        }))
    };
    let link = |index: u16| Principal::Replica(ReplicaId { app: APP, index });
    m.on_msg(T0 + 5, link(2), hb(1, 9));
    assert_eq!(m.voter(APP).and_then(|v| v.progress(1)), None);
    m.on_msg(T0 + 6, link(1), hb(1, 7));
    assert_eq!(m.voter(APP).and_then(|v| v.progress(1)), Some((T0 + 6, 7)));
}
