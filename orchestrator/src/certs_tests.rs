use super::*;
use zz_wire::{Digest, Heartbeat, Identity, IncidentKind, Signed};

const APP: AppId = AppId(0);
/// The nodes' log window in these tests.
const WINDOW: u64 = 1000;

/// Whether the decisions fence a replica.
fn fences(d: &[Decision]) -> bool {
    d.iter().any(|d| matches!(d, Decision::Fence { .. }))
}

fn node_ids(n: u16) -> (Vec<Identity>, Keyring) {
    let ids: Vec<Identity> = (0..n)
        .map(|i| Identity::from_seed(Principal::Node(NodeId(i)), [u8::try_from(i).unwrap() + 1; 32]))
        .collect();
    let mut ring = Keyring::new();
    for id in &ids {
        ring.insert(id.who, id.public());
    }
    (ids, ring)
}

fn wake(node: u16, seq: Seq) -> Wake {
    Wake {
        node: NodeId(node),
        app: APP,
        seq,
        kind: IncidentKind::Mismatch,
    }
}

fn fault(node: u16, index: u16, seq: Seq) -> Fault {
    Fault {
        node: NodeId(node),
        replica: ReplicaId { app: APP, index },
        seq,
        certified_digest: Digest::ZERO,
        their_digest: None,
    }
}

fn resolved(node: u16, seq: Seq) -> Resolved {
    Resolved {
        node: NodeId(node),
        app: APP,
        seq,
    }
}

#[test]
fn wake_needs_f_plus_one_distinct_nodes() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    assert!(t.on_wake(&wake(0, 10), 100).is_empty());
    let d = t.on_wake(&wake(1, 10), 150);
    assert_eq!(d, vec![Decision::Opened { incident: 1 }]);
    let i = t.incident(1).unwrap();
    // Detected when the certificate's first WAKE arrived.
    assert_eq!(i.detected_at, 100);
    assert_eq!((i.seq, i.app), (10, APP));
}

#[test]
fn duplicate_wakes_from_one_node_do_not_count() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    for at in 0..10 {
        assert!(t.on_wake(&wake(3, 10), at).is_empty());
    }
    assert_eq!(t.incidents().count(), 0);
}

#[test]
fn a_single_faulty_node_changes_nothing() {
    // f = 2: two colluding nodes are still a minority.
    let mut t = Tracker::new(2, WINDOW, Vec::new());
    for seq in 0..500 {
        assert!(t.on_wake(&wake(0, seq), seq).is_empty());
        assert!(t.on_wake(&wake(1, seq), seq).is_empty());
        assert!(!fences(&t.on_fault(&fault(0, 1, seq), seq)));
        assert!(!fences(&t.on_fault(&fault(1, 1, seq), seq)));
    }
    assert_eq!(t.incidents().count(), 0);
    // Their pending votes stay bounded.
    assert!(t.wakes.votes.len() <= MAX_PENDING_PER_NODE);
    // A third, distinct node completes a certificate for a recent seq.
    assert_eq!(t.on_wake(&wake(2, 499), 600), vec![Decision::Opened { incident: 1 }]);
}

#[test]
fn wakes_for_different_seqs_do_not_combine() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    assert!(t.on_wake(&wake(0, 10), 0).is_empty());
    assert!(t.on_wake(&wake(1, 11), 0).is_empty());
    assert_eq!(t.incidents().count(), 0);
}

#[test]
fn later_certificate_joins_the_open_incident() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    t.on_wake(&wake(0, 10), 0);
    t.on_wake(&wake(1, 10), 0);
    t.on_wake(&wake(2, 12), 5);
    let d = t.on_wake(&wake(3, 12), 6);
    assert_eq!(d, vec![Decision::Joined { incident: 1, seq: 12 }]);
    assert_eq!(t.incidents().count(), 1);
    assert_eq!(t.incident(1).unwrap().last_seq, 12);
}

#[test]
fn wakes_for_a_seq_inside_a_closed_incident_are_ignored() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    t.on_wake(&wake(0, 10), 0);
    t.on_wake(&wake(1, 10), 0);
    t.on_wake(&wake(0, 12), 0);
    t.on_wake(&wake(1, 12), 0);
    t.on_resolved(&resolved(0, 10), 50);
    assert_eq!(
        t.on_resolved(&resolved(2, 10), 70),
        vec![Decision::Certified { incident: 1 }]
    );
    // Late WAKEs for seqs 10..=12 belong to incident 1.
    assert!(t.on_wake(&wake(2, 11), 80).is_empty());
    assert!(t.on_wake(&wake(3, 11), 80).is_empty());
    assert_eq!(t.incidents().count(), 1);
    // A new seq once it has been quiet opens a new one.
    t.on_wake(&wake(2, 20), 70 + DEFAULT_QUIET_MS);
    assert_eq!(
        t.on_wake(&wake(3, 20), 70 + DEFAULT_QUIET_MS),
        vec![Decision::Opened { incident: 2 }]
    );
}

#[test]
fn resolved_needs_f_plus_one_and_sets_recovery() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    t.on_wake(&wake(0, 10), 1000);
    t.on_wake(&wake(1, 10), 1010);
    assert!(t.on_resolved(&resolved(0, 10), 1100).is_empty());
    assert!(t.on_resolved(&resolved(0, 10), 1150).is_empty());
    assert_eq!(
        t.on_resolved(&resolved(3, 10), 1234),
        vec![Decision::Certified { incident: 1 }]
    );
    let i = t.incident(1).unwrap();
    assert_eq!(i.certified_at, Some(1234));
    assert_eq!(i.recovery_ms(), Some(234));
    // Further notices change nothing.
    assert!(t.on_resolved(&resolved(2, 10), 2000).is_empty());
    assert_eq!(t.incident(1).unwrap().certified_at, Some(1234));
}

#[test]
fn fault_certificate_fences_once_and_certifies_an_open_incident() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    t.on_wake(&wake(0, 10), 0);
    t.on_wake(&wake(1, 10), 0);
    assert!(t.on_fault(&fault(0, 1, 10), 20).is_empty());
    assert!(t.on_fault(&fault(0, 1, 10), 21).is_empty());
    let d = t.on_fault(&fault(2, 1, 11), 30);
    let e1 = ReplicaId { app: APP, index: 1 };
    assert_eq!(
        d,
        vec![
            Decision::Fence {
                seq: 10,
                replica: e1,
                incident: Some(1)
            },
            Decision::Certified { incident: 1 }
        ]
    );
    assert_eq!(t.incident(1).unwrap().faulty, vec![e1]);
    // Stragglers about the fenced instance do not fence its replacement.
    assert_eq!(
        t.on_fault(&fault(1, 1, 10), 40),
        vec![Decision::Refused {
            replica: e1,
            seq: 10,
            why: Refusal::EarlierInstance
        }]
    );
    assert!(t.on_fault(&fault(3, 1, 11), 41).is_empty());
    // Faults about later seqs concern the new instance and need f+1 again.
    let quiet = 30 + DEFAULT_QUIET_MS;
    assert!(t.on_fault(&fault(1, 1, 50), quiet).is_empty());
    assert_eq!(
        t.on_fault(&fault(3, 1, 50), quiet + 1),
        vec![Decision::Fence {
            seq: 50,
            replica: e1,
            // Incident 1 is certified, ended at seq 10 and has been quiet.
            incident: None
        }]
    );
}

#[test]
fn faults_naming_different_replicas_do_not_combine() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    assert!(t.on_fault(&fault(0, 1, 10), 0).is_empty());
    assert!(t.on_fault(&fault(1, 2, 10), 0).is_empty());
}

#[test]
fn check_accepts_signed_messages_from_their_author() {
    let (ids, ring) = node_ids(4);
    let msg = Msg::Wake(ids[1].sign(wake(1, 7)));
    assert_eq!(check(ids[1].who, &msg, &ring), Ok(()));
}

#[test]
fn check_rejects_bad_signatures() {
    let (ids, ring) = node_ids(4);
    let mut signed = ids[1].sign(wake(1, 7));
    signed.body.seq = 8;
    assert_eq!(
        check(ids[1].who, &Msg::Wake(signed), &ring),
        Err(DropReason::BadSignature)
    );
    // Signed with a key that is not a1's.
    let forged: Signed<Wake> = Signed {
        body: wake(1, 7),
        sig: ids[2].sign_digest(&zz_wire::Signable::digest(&wake(1, 7))),
    };
    assert_eq!(
        check(ids[1].who, &Msg::Wake(forged), &ring),
        Err(DropReason::BadSignature)
    );
}

#[test]
fn check_rejects_messages_relayed_for_another_author() {
    let (ids, ring) = node_ids(4);
    // a0 relays a1's perfectly signed WAKE: it must not count as a0's vote,
    // nor may one link carry several nodes' votes.
    let msg = Msg::Wake(ids[1].sign(wake(1, 7)));
    assert_eq!(check(ids[0].who, &msg, &ring), Err(DropReason::WrongAuthor));
}

#[test]
fn check_rejects_kinds_a_role_may_not_send() {
    let (ids, mut ring) = node_ids(4);
    let r = Identity::from_seed(Principal::Replica(ReplicaId { app: APP, index: 0 }), [77; 32]);
    ring.insert(r.who, r.public());
    // Only agreement nodes send WAKE; a replica cannot even sign one as itself.
    let msg = Msg::Wake(ids[0].sign(wake(0, 1)));
    assert_eq!(check(r.who, &msg, &ring), Err(DropReason::Unexpected));
    let hb = Heartbeat {
        from: r.who,
        app: APP,
        view: 0,
        last_executed: 3,
        last_checkpoint: 0,
        fetched_objects: 0,
        stale_objects: 0,
        time_ms: 0,
    };
    assert_eq!(check(r.who, &Msg::Heartbeat(r.sign(hb)), &ring), Ok(()));
    let order = zz_wire::Order {
        node: NodeId(0),
        app: APP,
        seq: 1,
        digest: Digest::ZERO,
        proposal: None,
    };
    assert_eq!(
        check(ids[0].who, &Msg::Order(order), &ring),
        Err(DropReason::Unexpected)
    );
}

// Issue 25 item 3: FAULT votes count only with votes about the same
// instance and the same incident (or, outside incidents, the same seq).

fn e1() -> ReplicaId {
    ReplicaId { app: APP, index: 1 }
}

#[test]
fn faults_about_different_seqs_do_not_combine() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    assert!(t.on_fault(&fault(0, 1, 10), 0).is_empty());
    // Another node about another seq, no incident joining them: one vote each.
    assert!(t.on_fault(&fault(1, 1, 500), 1).is_empty());
    // The same seq from a second node is a certificate.
    assert_eq!(
        t.on_fault(&fault(2, 1, 10), 2),
        vec![Decision::Fence {
            seq: 10,
            replica: e1(),
            incident: None
        }]
    );
}

#[test]
fn faults_from_different_incidents_do_not_combine() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    t.on_wake(&wake(0, 10), 0);
    t.on_wake(&wake(1, 10), 0);
    t.on_resolved(&resolved(0, 10), 5);
    t.on_resolved(&resolved(1, 10), 5);
    assert!(t.on_fault(&fault(0, 1, 10), 6).is_empty());
    // Incident 1 has been quiet: another episode.
    let later = 5 + DEFAULT_QUIET_MS;
    t.on_wake(&wake(2, 90), later);
    assert_eq!(t.on_wake(&wake(3, 90), later), vec![Decision::Opened { incident: 2 }]);
    // a3 about incident 2 and a0 about incident 1 are two half votes.
    assert!(t.on_fault(&fault(3, 1, 90), later + 10).is_empty());
    // Within one incident, votes about its seqs combine.
    let d = t.on_fault(&fault(2, 1, 90), later + 20);
    assert_eq!(
        d[0],
        Decision::Fence {
            seq: 90,
            replica: e1(),
            incident: Some(2)
        }
    );
}

#[test]
fn a_fault_about_a_seq_no_node_can_have_reached_is_refused_and_poisons_nothing() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    // a3 (faulty) names seq u64::MAX; a0 (correct) names seq 10.
    assert_eq!(
        t.on_fault(&fault(3, 1, u64::MAX), 0),
        vec![Decision::Refused {
            replica: e1(),
            seq: u64::MAX,
            why: Refusal::BeyondHorizon
        }]
    );
    assert!(t.on_fault(&fault(0, 1, 10), 1).is_empty(), "u64::MAX counted as a vote");
    assert!(fences(&t.on_fault(&fault(1, 1, 10), 2)));
    // The replacement misbehaves much later: a certificate still fences it.
    assert!(t.on_fault(&fault(0, 1, 200), 10_000).is_empty());
    assert!(
        fences(&t.on_fault(&fault(2, 1, 200), 10_001)),
        "the slot can never be fenced again"
    );
}

#[test]
fn the_horizon_is_what_f_plus_one_nodes_committed_plus_two_windows() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    assert_eq!(t.horizon(APP), 2 * WINDOW);
    // One node alone, however far ahead it claims to be, moves nothing.
    t.on_progress(APP, NodeId(3), u64::MAX, 0);
    assert_eq!(t.horizon(APP), 2 * WINDOW);
    t.on_progress(APP, NodeId(0), 5_000, 0);
    assert_eq!(t.vouched(APP), 5_000);
    assert_eq!(t.horizon(APP), 7_000);
    let refused = t.on_fault(&fault(0, 1, 7_001), 1);
    assert!(matches!(
        refused[..],
        [Decision::Refused {
            why: Refusal::BeyondHorizon,
            ..
        }]
    ));
    assert!(t.on_fault(&fault(0, 1, 7_000), 2).is_empty());
    assert!(fences(&t.on_fault(&fault(1, 1, 7_000), 3)));
}

#[test]
fn late_faults_about_a_fenced_instance_do_not_fence_its_replacement() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    // e1 lied at seqs 10..=12; a0 and a1 fence it on seq 10.
    t.on_fault(&fault(0, 1, 10), 0);
    assert!(fences(&t.on_fault(&fault(1, 1, 10), 1)));
    // a2 and a3 were slower: their votes about seqs 11 and 12 (the old
    // instance's lies) arrive after the fence, each alone for its seq.
    assert!(t.on_fault(&fault(2, 1, 11), 50).is_empty());
    // The nodes' next heartbeats report seq 12 committed (it was, before
    // the fence): votes up to it concern the fenced instance.
    for n in 0..3 {
        t.on_progress(APP, NodeId(n), 12, 500);
    }
    for (n, seq) in [(3, 12), (2, 12), (3, 11)] {
        assert!(!fences(&t.on_fault(&fault(n, 1, seq), 600)), "fenced the replacement");
    }
    // Once the replacement has settled, heartbeats no longer move its
    // boundary: it is fenced for what it does after seq 12.
    for n in 0..3 {
        t.on_progress(APP, NodeId(n), 100, 3_000);
    }
    assert!(t.on_fault(&fault(0, 1, 13), 3_100).is_empty());
    assert!(fences(&t.on_fault(&fault(3, 1, 13), 3_101)));
}

#[test]
fn a_replacement_for_any_reason_drops_votes_about_the_old_instance() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    for n in 0..3 {
        t.on_progress(APP, NodeId(n), 40, 0);
    }
    // a0 voted about seq 30; then the instance exited and was replaced.
    assert!(t.on_fault(&fault(0, 1, 30), 1).is_empty());
    t.new_instance(e1(), 2);
    // The pending vote is gone, and a vote about seq 30 is refused.
    assert!(matches!(
        t.on_fault(&fault(1, 1, 30), 3)[..],
        [Decision::Refused {
            why: Refusal::EarlierInstance,
            ..
        }]
    ));
    assert!(t.on_fault(&fault(1, 1, 41), 4).is_empty());
    assert!(fences(&t.on_fault(&fault(2, 1, 41), 5)));
}

// Issue 25 item 9: one fault episode is one incident. A faulty replica keeps
// answering wrong (or late) until it is fenced, and the replacement phase
// brings more late replies, so the nodes raise a WAKE certificate per seq
// as each of their incidents is certified; they join the episode's incident.

fn wake_kind(node: u16, seq: Seq, kind: IncidentKind) -> Wake {
    Wake {
        kind,
        ..wake(node, seq)
    }
}

/// f+1 (f = 1) nodes' WAKEs for `seq`; the decisions of the second.
fn wake_cert(t: &mut Tracker, seq: Seq, kind: IncidentKind, now: u64) -> Vec<Decision> {
    t.on_wake(&wake_kind(0, seq, kind), now);
    t.on_wake(&wake_kind(1, seq, kind), now)
}

fn resolved_cert(t: &mut Tracker, seq: Seq, now: u64) -> Vec<Decision> {
    t.on_resolved(&resolved(2, seq), now);
    t.on_resolved(&resolved(3, seq), now)
}

#[test]
fn one_fault_episode_is_one_incident_and_a_quiet_period_ends_it() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    assert_eq!(
        wake_cert(&mut t, 100, IncidentKind::Mismatch, 1_000),
        vec![Decision::Opened { incident: 1 }]
    );
    // While it is open, another seq's certificate joins it.
    assert_eq!(
        wake_cert(&mut t, 101, IncidentKind::Mismatch, 1_050),
        vec![Decision::Joined { incident: 1, seq: 101 }]
    );
    assert_eq!(
        resolved_cert(&mut t, 100, 1_100),
        vec![Decision::Certified { incident: 1 }]
    );
    t.on_fault(&fault(0, 1, 100), 1_110);
    assert!(fences(&t.on_fault(&fault(1, 1, 101), 1_120)));
    // Just certified, the replacement phase: later seqs time out, a checkpoint
    // mismatches. Each certificate joins incident 1 (the controller still
    // wakes standbys for it), it is open again until answers are certified.
    for (seq, kind, at) in [
        (103, IncidentKind::Mismatch, 1_300),
        (110, IncidentKind::Timeout, 1_900),
        (128, IncidentKind::Checkpoint, 2_500),
    ] {
        assert_eq!(
            wake_cert(&mut t, seq, kind, at),
            vec![Decision::Joined { incident: 1, seq }],
            "seq {seq} at {at} ms"
        );
    }
    // A straggling RESOLVED for a seq before the last wake is no answer to it.
    assert!(t.on_resolved(&resolved(0, 100), 2_600).is_empty());
    assert!(t.on_resolved(&resolved(1, 100), 2_600).is_empty());
    assert_eq!(
        resolved_cert(&mut t, 128, 2_700),
        vec![Decision::Certified { incident: 1 }]
    );
    assert_eq!(t.incidents().count(), 1, "one fault episode made several incidents");
    // Quiet (no WAKE or FAULT certificate) for less than the window: still it.
    assert_eq!(
        wake_cert(&mut t, 140, IncidentKind::Timeout, 2_700 + DEFAULT_QUIET_MS - 1),
        vec![Decision::Joined { incident: 1, seq: 140 }]
    );
    let healed = 2_700 + DEFAULT_QUIET_MS + 100;
    assert_eq!(
        resolved_cert(&mut t, 140, healed),
        vec![Decision::Certified { incident: 1 }]
    );
    assert_eq!(t.incidents().count(), 1);
    let i = t.incident(1).unwrap();
    assert_eq!((i.seq, i.last_seq), (100, 140));
    assert_eq!(i.coalesced, 5);
    assert_eq!(
        i.kinds,
        vec![IncidentKind::Mismatch, IncidentKind::Timeout, IncidentKind::Checkpoint]
    );
    assert_eq!(i.faulty, vec![e1()]);
    // From the first detection to the answer after the last wake it absorbed.
    assert_eq!(i.recovery_ms(), Some(healed - 1_000));
    // Healthy for the whole window after that: a new episode, a new incident.
    assert_eq!(
        wake_cert(&mut t, 400, IncidentKind::Mismatch, healed + DEFAULT_QUIET_MS),
        vec![Decision::Opened { incident: 2 }]
    );
    assert_eq!(t.incident(2).unwrap().coalesced, 0);
}

#[test]
fn the_quiet_window_counts_from_the_last_fence_too() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    wake_cert(&mut t, 10, IncidentKind::Timeout, 0);
    resolved_cert(&mut t, 10, 100);
    // The hung replica is named after the incident was certified.
    t.on_fault(&fault(0, 1, 10), 1_500);
    assert!(fences(&t.on_fault(&fault(1, 1, 10), 1_500)));
    // More than the window after certification, less after the fence.
    assert_eq!(
        wake_cert(&mut t, 20, IncidentKind::Timeout, 100 + DEFAULT_QUIET_MS + 500),
        vec![Decision::Joined { incident: 1, seq: 20 }]
    );
}

#[test]
fn a_shorter_quiet_window_separates_episodes_sooner() {
    let mut t = Tracker::new(1, WINDOW, Vec::new()).with_quiet_ms(100);
    wake_cert(&mut t, 10, IncidentKind::Timeout, 0);
    resolved_cert(&mut t, 10, 50);
    assert_eq!(
        wake_cert(&mut t, 20, IncidentKind::Timeout, 150),
        vec![Decision::Opened { incident: 2 }]
    );
}

#[test]
fn a_checkpoint_wake_below_the_first_seq_reopens_and_its_answer_certifies() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    wake_cert(&mut t, 100, IncidentKind::Mismatch, 0);
    resolved_cert(&mut t, 100, 50);
    assert_eq!(
        wake_cert(&mut t, 96, IncidentKind::Checkpoint, 300),
        vec![Decision::Joined { incident: 1, seq: 96 }]
    );
    assert!(t.open_incident(APP).is_some());
    assert_eq!(
        resolved_cert(&mut t, 96, 400),
        vec![Decision::Certified { incident: 1 }]
    );
    assert_eq!(t.incident(1).unwrap().recovery_ms(), Some(400));
}

/// One injected fault after another (a benchmark's rounds, a demo): each is
/// its own episode, however soon it follows the last one's answer.
#[test]
fn a_fault_injected_after_an_incident_was_answered_opens_a_new_one() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    wake_cert(&mut t, 10, IncidentKind::Mismatch, 0);
    // Injected while the first incident is still open: it joins.
    t.on_injected(AppId(0), 50);
    assert_eq!(
        wake_cert(&mut t, 11, IncidentKind::Mismatch, 60),
        vec![Decision::Joined { incident: 1, seq: 11 }]
    );
    resolved_cert(&mut t, 11, 100);
    t.on_injected(AppId(0), 300);
    assert_eq!(
        wake_cert(&mut t, 20, IncidentKind::Mismatch, 400),
        vec![Decision::Opened { incident: 2 }]
    );
    // Another app's injection does not split this app's episode.
    resolved_cert(&mut t, 20, 500);
    t.on_injected(AppId(1), 600);
    assert_eq!(
        wake_cert(&mut t, 21, IncidentKind::Timeout, 700),
        vec![Decision::Joined { incident: 2, seq: 21 }]
    );
}

/// Found by the whole-system simulator (seed 39, f=2): with 2f+1 nodes
/// voting, the WAKEs for one checkpoint seq make two certificates. The
/// second came after the first had joined the incident and the seq's
/// answer had certified it, and reopened the incident for good (nothing
/// answers that seq again): the app never settled back to f+1 active.
#[test]
fn a_second_certificate_for_a_seq_already_joined_changes_nothing() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    wake_cert(&mut t, 100, IncidentKind::Mismatch, 0);
    resolved_cert(&mut t, 100, 50);
    wake_cert(&mut t, 96, IncidentKind::Checkpoint, 60);
    assert_eq!(resolved_cert(&mut t, 96, 70), vec![Decision::Certified { incident: 1 }]);
    assert!(wake_cert(&mut t, 96, IncidentKind::Checkpoint, 80).is_empty());
    assert!(t.open_incident(APP).is_none(), "still answered");
}

/// Found by the whole-system simulator (seed 5, f=2): one of the f+1 nodes
/// that timed out crashed right after sending RESOLVED, which was lost with
/// its link; the nodes that had certified the seq in time never send one.
/// The incident stayed open and the app never settled back to f+1 active.
#[test]
fn f_plus_one_nodes_with_a_checkpoint_past_an_open_incident_certify_it() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    wake_cert(&mut t, 33, IncidentKind::Timeout, 0);
    t.on_resolved(&resolved(0, 33), 10);
    assert!(t.on_node_stable(APP, NodeId(0), 48, 20).is_empty());
    assert!(
        t.on_node_stable(APP, NodeId(1), 32, 30).is_empty(),
        "not past the incident"
    );
    assert_eq!(
        t.on_node_stable(APP, NodeId(2), 48, 40),
        vec![Decision::Certified { incident: 1 }]
    );
    assert!(t.open_incident(APP).is_none());
    // One node alone (it may be faulty) certifies nothing.
    wake_cert(&mut t, 60, IncidentKind::Timeout, 5_000);
    assert!(t.on_node_stable(APP, NodeId(3), 1_000_000, 5_010).is_empty());
    assert!(t.open_incident(APP).is_some());
}

/// Found by the whole-system simulator (seed 2096, f=2): the nodes' RESOLVED
/// votes for a seq, sent as soon as each saw its answer, all arrived before
/// the WAKE certificate for that seq had formed here; they were dropped,
/// and the incident the certificate then joined stayed open for good.
#[test]
fn a_resolved_certificate_that_came_before_its_incident_ends_it_when_it_opens() {
    let mut t = Tracker::new(1, WINDOW, Vec::new());
    assert!(resolved_cert(&mut t, 40, 10).is_empty(), "no incident yet");
    assert_eq!(
        wake_cert(&mut t, 40, IncidentKind::Mismatch, 20),
        vec![Decision::Opened { incident: 1 }, Decision::Certified { incident: 1 }]
    );
    assert!(t.open_incident(APP).is_none());
    // Split across the certificate: one vote before, one after.
    t.on_resolved(&resolved(0, 90), 5_000);
    assert_eq!(
        wake_cert(&mut t, 90, IncidentKind::Timeout, 5_010),
        vec![Decision::Opened { incident: 2 }]
    );
    assert_eq!(
        t.on_resolved(&resolved(1, 90), 5_020),
        vec![Decision::Certified { incident: 2 }]
    );
}
