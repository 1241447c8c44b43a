use super::*;
use zz_wire::{Digest, Heartbeat, Identity, IncidentKind, Signed};

const APP: AppId = AppId(0);

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
    let mut t = Tracker::new(1, Vec::new());
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
    let mut t = Tracker::new(1, Vec::new());
    for at in 0..10 {
        assert!(t.on_wake(&wake(3, 10), at).is_empty());
    }
    assert_eq!(t.incidents().count(), 0);
}

#[test]
fn a_single_faulty_node_changes_nothing() {
    // f = 2: two colluding nodes are still a minority.
    let mut t = Tracker::new(2, Vec::new());
    for seq in 0..500 {
        assert!(t.on_wake(&wake(0, seq), seq).is_empty());
        assert!(t.on_wake(&wake(1, seq), seq).is_empty());
        assert!(t.on_fault(&fault(0, 1, seq), seq).is_empty());
        assert!(t.on_fault(&fault(1, 1, seq), seq).is_empty());
    }
    assert_eq!(t.incidents().count(), 0);
    // Their pending votes stay bounded.
    assert!(t.wakes.votes.len() <= MAX_PENDING_PER_NODE);
    // A third, distinct node completes a certificate for a recent seq.
    assert_eq!(t.on_wake(&wake(2, 499), 600), vec![Decision::Opened { incident: 1 }]);
}

#[test]
fn wakes_for_different_seqs_do_not_combine() {
    let mut t = Tracker::new(1, Vec::new());
    assert!(t.on_wake(&wake(0, 10), 0).is_empty());
    assert!(t.on_wake(&wake(1, 11), 0).is_empty());
    assert_eq!(t.incidents().count(), 0);
}

#[test]
fn later_certificate_joins_the_open_incident() {
    let mut t = Tracker::new(1, Vec::new());
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
    let mut t = Tracker::new(1, Vec::new());
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
    // A new seq after it closed opens a new one.
    t.on_wake(&wake(2, 20), 90);
    assert_eq!(t.on_wake(&wake(3, 20), 95), vec![Decision::Opened { incident: 2 }]);
}

#[test]
fn resolved_needs_f_plus_one_and_sets_recovery() {
    let mut t = Tracker::new(1, Vec::new());
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
    let mut t = Tracker::new(1, Vec::new());
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
                replica: e1,
                incident: Some(1)
            },
            Decision::Certified { incident: 1 }
        ]
    );
    assert_eq!(t.incident(1).unwrap().faulty, vec![e1]);
    // Stragglers about the fenced instance do not fence its replacement.
    assert!(t.on_fault(&fault(1, 1, 10), 40).is_empty());
    assert!(t.on_fault(&fault(3, 1, 11), 41).is_empty());
    // Faults about later seqs concern the new instance and need f+1 again.
    assert!(t.on_fault(&fault(1, 1, 50), 60).is_empty());
    assert_eq!(
        t.on_fault(&fault(3, 1, 51), 61),
        vec![Decision::Fence {
            replica: e1,
            // Incident 1 is certified and ended at seq 10.
            incident: None
        }]
    );
}

#[test]
fn faults_naming_different_replicas_do_not_combine() {
    let mut t = Tracker::new(1, Vec::new());
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
