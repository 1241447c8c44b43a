use super::*;
use zz_wire::{AppResponse, BatchResult, ClientId, Identity, Packed, Principal};

const APP: AppId = AppId(0);

fn ids() -> Vec<Identity> {
    (0..5u8)
        .map(|i| {
            Identity::from_seed(
                Principal::Replica(ReplicaId {
                    app: APP,
                    index: i.into(),
                }),
                [i + 7; 32],
            )
        })
        .collect()
}

fn voter(f: usize) -> Voter {
    Voter::new(VoterConfig {
        app: APP,
        f,
        replicas: 2 * f + 1,
        reply_timeout_ms: 100,
        checkpoint_interval: 4,
    })
}

fn reply(idx: u16, seq: Seq, body: &str) -> ExecReply {
    ExecReply {
        replica: ReplicaId { app: APP, index: idx },
        seq,
        results: vec![BatchResult {
            client: ClientId(0),
            first_id: seq,
            responses: Packed::pack(&[AppResponse::new(200, body.as_bytes().to_vec())]).expect("pack"),
        }],
        root: Digest::ZERO,
    }
}

fn ckpt(ids: &[Identity], idx: u16, seq: Seq, root: u8) -> Signed<ExecCheckpoint> {
    ids[usize::from(idx)].sign(ExecCheckpoint {
        replica: ReplicaId { app: APP, index: idx },
        seq,
        root: Digest([root; 32]),
    })
}

fn client_replies(a: &[VoteAction]) -> Vec<Vec<u8>> {
    a.iter()
        .filter_map(|x| match x {
            VoteAction::ClientReply { results, .. } => {
                Some(results[0].responses.unpack().expect("unpack")[0].body.clone())
            }
            _ => None,
        })
        .collect()
}

fn faults(a: &[VoteAction]) -> Vec<u16> {
    a.iter()
        .filter_map(|x| match x {
            VoteAction::Fault { replica, .. } => Some(replica.index),
            _ => None,
        })
        .collect()
}

fn wakes(a: &[VoteAction]) -> Vec<(Seq, IncidentKind)> {
    a.iter()
        .filter_map(|x| match x {
            VoteAction::Wake { seq, kind } => Some((*seq, *kind)),
            _ => None,
        })
        .collect()
}

#[test]
fn f_plus_one_matching_replies_certify_the_result() {
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Committed { seq: 1 });
    all.extend(v.step(1, VoteInput::Reply(reply(0, 1, "ok"))));
    assert!(client_replies(&all).is_empty(), "one reply is not enough");
    all.extend(v.step(2, VoteInput::Reply(reply(1, 1, "ok"))));
    assert_eq!(client_replies(&all), vec![b"ok".to_vec()]);
    assert!(wakes(&all).is_empty());
    assert!(faults(&all).is_empty());
}

#[test]
fn the_same_replica_twice_does_not_certify() {
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Committed { seq: 1 });
    all.extend(v.step(1, VoteInput::Reply(reply(0, 1, "ok"))));
    all.extend(v.step(2, VoteInput::Reply(reply(0, 1, "ok"))));
    assert!(client_replies(&all).is_empty());
}

#[test]
fn mismatch_raises_incident_and_names_exactly_the_disagreeing_replica() {
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Committed { seq: 1 });
    all.extend(v.step(1, VoteInput::Reply(reply(0, 1, "ok"))));
    all.extend(v.step(1, VoteInput::Reply(reply(1, 1, "evil"))));
    assert_eq!(wakes(&all), vec![(1, IncidentKind::Mismatch)]);
    assert!(client_replies(&all).is_empty());
    // The woken standby answers like e0.
    all.extend(v.step(5, VoteInput::Reply(reply(2, 1, "ok"))));
    assert_eq!(client_replies(&all), vec![b"ok".to_vec()]);
    assert_eq!(faults(&all), vec![1]);
    assert!(all.contains(&VoteAction::Resolved { seq: 1 }));
}

#[test]
fn f2_two_faulty_replicas_are_both_named() {
    let mut v = voter(2);
    let mut all = v.step(0, VoteInput::Committed { seq: 1 });
    for (i, b) in [(0, "ok"), (1, "bad1"), (2, "bad2"), (3, "ok"), (4, "ok")] {
        all.extend(v.step(1, VoteInput::Reply(reply(i, 1, b))));
    }
    assert_eq!(client_replies(&all), vec![b"ok".to_vec()]);
    let mut f = faults(&all);
    f.sort();
    assert_eq!(f, vec![1, 2]);
}

#[test]
fn reply_timeout_raises_incident_and_names_the_silent_active_replica() {
    let mut v = voter(1);
    // e0 and e1 active for seq 1.
    v.step(0, VoteInput::Committed { seq: 1 });
    v.step(1, VoteInput::Reply(reply(0, 1, "a")));
    v.step(1, VoteInput::Reply(reply(1, 1, "a")));
    // e1 goes silent at seq 2.
    let mut all = v.step(2, VoteInput::Committed { seq: 2 });
    all.extend(v.step(3, VoteInput::Reply(reply(0, 2, "b"))));
    all.extend(v.step(102, VoteInput::Timer(2)));
    assert_eq!(wakes(&all), vec![(2, IncidentKind::Timeout)]);
    // The standby e2 catches up and answers.
    all.extend(v.step(150, VoteInput::Reply(reply(2, 2, "b"))));
    assert_eq!(client_replies(&all), vec![b"b".to_vec()]);
    assert!(faults(&all).is_empty(), "silence is named only a reply timeout later");
    assert!(all.contains(&VoteAction::SetTimer { seq: 2, after_ms: 100 }));
    all.extend(v.step(250, VoteInput::Timer(2)));
    assert_eq!(faults(&all), vec![1], "silent e1 is named, never-active e2 is not");
}

#[test]
fn a_replica_silent_through_an_incident_is_named_even_if_a_checkpoint_becomes_stable_meanwhile() {
    let ids = ids();
    let mut v = voter(1);
    v.step(0, VoteInput::Committed { seq: 1 });
    v.step(1, VoteInput::Reply(reply(0, 1, "a")));
    v.step(1, VoteInput::Reply(reply(1, 1, "a")));
    // e1 hangs at seq 2; the woken e2 answers it.
    let mut all = v.step(2, VoteInput::Committed { seq: 2 });
    all.extend(v.step(3, VoteInput::Reply(reply(0, 2, "b"))));
    all.extend(v.step(102, VoteInput::Timer(2)));
    all.extend(v.step(150, VoteInput::Reply(reply(2, 2, "b"))));
    assert_eq!(client_replies(&all), vec![b"b".to_vec()]);
    // e0 and e2 reach the checkpoint at 4 before e1's silence is judged.
    for seq in 3..=4 {
        v.step(151, VoteInput::Committed { seq });
        v.step(152, VoteInput::Reply(reply(0, seq, "c")));
        v.step(152, VoteInput::Reply(reply(2, seq, "c")));
    }
    all.extend(v.step(160, VoteInput::Checkpoint(ckpt(&ids, 0, 4, 1))));
    all.extend(v.step(160, VoteInput::Checkpoint(ckpt(&ids, 2, 4, 1))));
    assert_eq!(stables(&all), vec![4]);
    all.extend(v.step(250, VoteInput::Timer(2)));
    assert_eq!(faults(&all), vec![1], "the silent e1 was never named");
    // Judged once; the slot then goes like any below the stable checkpoint.
    assert!(faults(&v.step(400, VoteInput::Timer(2))).is_empty());
}

/// Simulator seed 5003377 f=1 (checkpoints every 4 seqs): the incident's
/// seq was a checkpoint seq, so e0's and the woken e2's checkpoints made it
/// stable before the slow e1's reply came. That reply was dropped as below
/// the stable checkpoint, and e1, a correct replica that had answered, was
/// named silent and fenced. A reply for a seq still held for its incident
/// counts, stable or not.
#[test]
fn a_reply_that_comes_after_its_seq_became_stable_still_counts_against_silence() {
    let ids = ids();
    let mut v = voter(1);
    for seq in 1..=3 {
        v.step(0, VoteInput::Committed { seq });
        v.step(1, VoteInput::Reply(reply(0, seq, "a")));
        v.step(1, VoteInput::Reply(reply(1, seq, "a")));
    }
    let mut all = v.step(10, VoteInput::Committed { seq: 4 });
    all.extend(v.step(11, VoteInput::Reply(reply(0, 4, "b"))));
    all.extend(v.step(110, VoteInput::Timer(4)));
    assert_eq!(wakes(&all), vec![(4, IncidentKind::Timeout)]);
    all.extend(v.step(150, VoteInput::Reply(reply(2, 4, "b"))));
    assert_eq!(client_replies(&all), vec![b"b".to_vec()]);
    all.extend(v.step(160, VoteInput::Checkpoint(ckpt(&ids, 0, 4, 1))));
    all.extend(v.step(160, VoteInput::Checkpoint(ckpt(&ids, 2, 4, 1))));
    assert_eq!(stables(&all), vec![4]);
    // The slow e1 answers, after the checkpoint and within the grace.
    all.extend(v.step(170, VoteInput::Reply(reply(1, 4, "b"))));
    all.extend(v.step(250, VoteInput::Timer(4)));
    assert!(faults(&all).is_empty(), "e1 answered, yet was named: {all:?}");
}

#[test]
fn a_slow_replica_still_answering_earlier_seqs_is_not_named_silent() {
    let mut v = voter(1);
    let mut all = Vec::new();
    for s in 1..=3 {
        all.extend(v.step(0, VoteInput::Committed { seq: s }));
    }
    // e0 keeps up; e1 lags behind (it answered seq 1 only); both are slow
    // enough for seq 3 to time out.
    for s in 1..=3 {
        all.extend(v.step(1, VoteInput::Reply(reply(0, s, "x"))));
    }
    all.extend(v.step(1, VoteInput::Reply(reply(1, 1, "x"))));
    all.extend(v.step(101, VoteInput::Timer(2)));
    all.extend(v.step(101, VoteInput::Timer(3)));
    assert_eq!(wakes(&all).len(), 1);
    // The woken standby answers 2 and 3: both certified without e1.
    all.extend(v.step(150, VoteInput::Reply(reply(2, 2, "x"))));
    all.extend(v.step(150, VoteInput::Reply(reply(2, 3, "x"))));
    assert_eq!(client_replies(&all).len(), 3);
    // e1 answers seq 2 within the grace: not silent, for 2 nor for 3.
    all.extend(v.step(200, VoteInput::Reply(reply(1, 2, "x"))));
    all.extend(v.step(250, VoteInput::Timer(2)));
    all.extend(v.step(250, VoteInput::Timer(3)));
    assert!(
        faults(&all).is_empty(),
        "a replica still answering is slow, not silent: {all:?}"
    );
}

#[test]
fn certified_before_timeout_raises_nothing() {
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Committed { seq: 1 });
    all.extend(v.step(1, VoteInput::Reply(reply(0, 1, "a"))));
    all.extend(v.step(1, VoteInput::Reply(reply(1, 1, "a"))));
    all.extend(v.step(200, VoteInput::Timer(1)));
    assert!(wakes(&all).is_empty());
}

#[test]
fn problems_during_an_open_incident_join_it() {
    let mut v = voter(1);
    let mut all = Vec::new();
    for s in 1..=3 {
        all.extend(v.step(0, VoteInput::Committed { seq: s }));
        all.extend(v.step(0, VoteInput::Reply(reply(0, s, "x"))));
    }
    for s in 1..=3 {
        all.extend(v.step(110, VoteInput::Timer(s)));
    }
    assert_eq!(wakes(&all).len(), 1);
}

#[test]
fn checkpoint_certificate_forms_and_a_bad_checkpoint_is_named() {
    let ids = ids();
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Checkpoint(ckpt(&ids, 0, 4, 1)));
    all.extend(v.step(0, VoteInput::Checkpoint(ckpt(&ids, 1, 4, 9))));
    assert_eq!(wakes(&all), vec![(4, IncidentKind::Checkpoint)]);
    all.extend(v.step(0, VoteInput::Checkpoint(ckpt(&ids, 2, 4, 1))));
    let certs: Vec<_> = all
        .iter()
        .filter_map(|a| match a {
            VoteAction::Stable(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].root, Digest([1; 32]));
    let mut ring = zz_wire::Keyring::new();
    for id in &ids {
        ring.insert(id.who, id.public());
    }
    assert_eq!(certs[0].verify(&ring, 2), Ok(()));
    assert_eq!(faults(&all), vec![1]);
    assert_eq!(v.stable_seq(), 4);
}

#[test]
fn replies_from_other_apps_or_unknown_indices_are_dropped() {
    let mut v = voter(1);
    v.step(0, VoteInput::Committed { seq: 1 });
    let mut other = reply(0, 1, "ok");
    other.replica.app = AppId(1);
    v.step(0, VoteInput::Reply(other));
    let far = reply(0, 1_000_000, "ok");
    v.step(0, VoteInput::Reply(far));
    assert_eq!(v.stats().dropped, 2);
}

fn stables(a: &[VoteAction]) -> Vec<Seq> {
    a.iter()
        .filter_map(|x| match x {
            VoteAction::Stable(c) => Some(c.seq),
            _ => None,
        })
        .collect()
}

#[test]
fn an_unanswered_incident_holds_its_checkpoint_until_it_is_certified() {
    let ids = ids();
    let mut v = voter(1);
    // seq 3 disagrees: the woken standby must execute it, so the checkpoint
    // at 4 (whose state it would otherwise jump to) waits for its answer.
    let mut all = v.step(0, VoteInput::Committed { seq: 3 });
    all.extend(v.step(1, VoteInput::Reply(reply(0, 3, "ok"))));
    all.extend(v.step(1, VoteInput::Reply(reply(1, 3, "evil"))));
    all.extend(v.step(2, VoteInput::Checkpoint(ckpt(&ids, 0, 4, 1))));
    all.extend(v.step(2, VoteInput::Checkpoint(ckpt(&ids, 1, 4, 1))));
    assert!(stables(&all).is_empty(), "held while seq 3 is unanswered");
    assert_eq!(v.stable_seq(), 0);
    assert_eq!(v.stats().held_checkpoints, 1);
    let answered = v.step(5, VoteInput::Reply(reply(2, 3, "ok")));
    assert_eq!(client_replies(&answered), vec![b"ok".to_vec()]);
    assert_eq!(stables(&answered), vec![4], "released once seq 3 is certified");
    assert_eq!(v.stable_seq(), 4);
}

#[test]
fn an_incident_never_answered_holds_checkpoints_only_for_a_while() {
    let ids = ids();
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Committed { seq: 3 });
    all.extend(v.step(1, VoteInput::Reply(reply(0, 3, "ok"))));
    all.extend(v.step(1, VoteInput::Reply(reply(1, 3, "evil"))));
    // Checkpoint interval 4, hold 4 intervals: 4..=16 are held, 20 is not.
    for seq in [4, 8, 12, 16, 20] {
        all.extend(v.step(2, VoteInput::Checkpoint(ckpt(&ids, 0, seq, 1))));
        all.extend(v.step(2, VoteInput::Checkpoint(ckpt(&ids, 1, seq, 1))));
    }
    assert_eq!(stables(&all), vec![20]);
    assert_eq!(v.stable_seq(), 20);
}

/// Found by the whole-system simulator (seed 5, f=1): a node that missed a
/// reply (a link reset loses what was in flight) times out alone; once its
/// hold ran out and a later checkpoint became stable, replies for the seq
/// were refused as below the checkpoint, yet the slot was kept, so the node
/// re-raised its WAKE for good and never sent RESOLVED. Two such nodes open
/// an incident nobody can ever certify, and the app never settles back to
/// f+1 active replicas.
#[test]
fn an_incident_a_stable_checkpoint_moved_past_is_resolved_and_forgotten() {
    let ids = ids();
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Committed { seq: 3 });
    // Only one reply arrives: the other was lost on its way here.
    all.extend(v.step(1, VoteInput::Reply(reply(0, 3, "ok"))));
    all.extend(v.step(100, VoteInput::Timer(3)));
    assert_eq!(wakes(&all), vec![(3, IncidentKind::Timeout)]);
    for seq in [4, 8, 12, 16, 20] {
        all.extend(v.step(200, VoteInput::Checkpoint(ckpt(&ids, 0, seq, 1))));
        all.extend(v.step(200, VoteInput::Checkpoint(ckpt(&ids, 1, seq, 1))));
    }
    assert_eq!(v.stable_seq(), 20);
    assert!(
        all.iter().any(|a| matches!(a, VoteAction::Resolved { seq: 3 })),
        "the checkpoint answers for seq 3: {all:?}"
    );
    let later = v.step(600, VoteInput::Timer(3));
    assert!(
        wakes(&later).is_empty(),
        "no WAKE for a seq below the stable checkpoint: {later:?}"
    );
}

/// Found by the whole-system simulator (seed 950, f=1): a woken faulty
/// replica's late, wrong reply for a seq already certified raised a WAKE.
/// Its answer had gone out already, so no RESOLVED ever followed, and the
/// incident it joined stayed open for good (the app never settled back to
/// f+1 active). The incident is now resolved as it is raised.
#[test]
fn a_wrong_reply_after_the_answer_is_certified_raises_an_incident_already_resolved() {
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Committed { seq: 3 });
    all.extend(v.step(1, VoteInput::Reply(reply(0, 3, "ok"))));
    all.extend(v.step(1, VoteInput::Reply(reply(1, 3, "ok"))));
    assert_eq!(client_replies(&all), vec![b"ok".to_vec()]);
    let late = v.step(2, VoteInput::Reply(reply(2, 3, "evil")));
    assert_eq!(faults(&late), vec![2]);
    assert_eq!(wakes(&late), vec![(3, IncidentKind::Mismatch)]);
    let wake = late.iter().position(|a| matches!(a, VoteAction::Wake { .. }));
    let resolved = late.iter().position(|a| matches!(a, VoteAction::Resolved { seq: 3 }));
    assert!(wake < resolved, "WAKE, then RESOLVED: {late:?}");
}

/// Found by the whole-system simulator (seed 1000153, f=1): nodes restarted
/// one after another re-deliver, and catch up on, seqs the replicas had
/// answered while they were down. With nobody to answer those seqs again,
/// every restarted node timed out on them, held its checkpoints and raised
/// WAKEs for good; f+1 such nodes opened an incident nothing could resolve.
/// No reply at all for a seq while f+1 replicas answered later ones means
/// this node missed the replies (a correct replica answers in order on one
/// link), not that the replicas are silent.
#[test]
fn a_seq_whose_replies_this_node_missed_is_not_an_incident() {
    let ids = ids();
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Committed { seq: 3 });
    all.extend(v.step(0, VoteInput::Committed { seq: 4 }));
    all.extend(v.step(1, VoteInput::Reply(reply(0, 4, "ok"))));
    all.extend(v.step(1, VoteInput::Reply(reply(1, 4, "ok"))));
    all.extend(v.step(100, VoteInput::Timer(3)));
    assert!(wakes(&all).is_empty(), "{all:?}");
    all.extend(v.step(2, VoteInput::Checkpoint(ckpt(&ids, 0, 4, 1))));
    all.extend(v.step(2, VoteInput::Checkpoint(ckpt(&ids, 1, 4, 1))));
    assert_eq!(stables(&all), vec![4], "nothing holds the checkpoint");
    // One replica answering later seqs is not enough: the other may be
    // faulty and silent only at seq 5.
    let mut v = voter(1);
    let mut all = v.step(0, VoteInput::Committed { seq: 5 });
    all.extend(v.step(1, VoteInput::Reply(reply(1, 6, "ok"))));
    all.extend(v.step(100, VoteInput::Timer(5)));
    assert_eq!(wakes(&all), vec![(5, IncidentKind::Timeout)]);
}

#[test]
fn a_restarted_voter_takes_checkpoints_and_replies_far_above_zero_once_its_core_commits_there() {
    // A node restarted at seq 10_000 has a fresh voter (stable 0); its
    // horizons must count from what its core delivers, or it refuses every
    // checkpoint and, past the reply horizon, every reply for good.
    let ids = ids();
    let mut v = voter(1);
    v.step(0, VoteInput::Committed { seq: 10_001 });
    let mut out = Vec::new();
    for idx in 0..2 {
        out.extend(v.step(0, VoteInput::Checkpoint(ckpt(&ids, idx, 10_004, 9))));
    }
    assert!(
        out.iter()
            .any(|a| matches!(a, VoteAction::Stable(c) if c.seq == 10_004)),
        "{out:?}"
    );
    assert_eq!(v.stable_seq(), 10_004);
    v.step(0, VoteInput::Committed { seq: 10_005 });
    let mut out = v.step(0, VoteInput::Reply(reply(0, 10_005, "ok")));
    out.extend(v.step(0, VoteInput::Reply(reply(1, 10_005, "ok"))));
    assert_eq!(client_replies(&out), vec![b"ok".to_vec()]);
}

/// Bytes of the replies the voter holds, per replica.
fn held_bytes(v: &Voter, idx: u16) -> usize {
    v.slots
        .values()
        .filter_map(|s| s.replies.get(&idx))
        .map(|(_, r)| reply_bytes(r))
        .sum()
}

fn big_reply(idx: u16, seq: Seq, body: &Packed<AppResponse>) -> ExecReply {
    ExecReply {
        replica: ReplicaId { app: APP, index: idx },
        seq,
        results: vec![BatchResult {
            client: ClientId(0),
            first_id: seq,
            responses: body.clone(),
        }],
        root: Digest::ZERO,
    }
}

#[test]
fn future_replies_held_per_replica_are_bounded_in_bytes() {
    let mut v = voter(1);
    // One Byzantine replica answers every seq up to the horizon ahead of
    // what this node committed, 1 MiB each (the bytes are shared here).
    let body = Packed::pack(&[AppResponse::new(200, vec![7u8; 1 << 20])]).expect("pack");
    for seq in 1..=4 * 4 + 4096 {
        v.step(1, VoteInput::Reply(big_reply(2, seq, &body)));
    }
    let held = held_bytes(&v, 2);
    assert!(
        held <= FUTURE_REPLY_BYTES + (2 << 20),
        "one replica's future replies hold {held} bytes"
    );
    assert!(v.stats().dropped > 0);
    // Committing frees its budget, and replies for committed seqs always count.
    v.step(2, VoteInput::Committed { seq: 1 });
    v.step(3, VoteInput::Reply(reply(0, 1, "ok")));
    v.step(3, VoteInput::Reply(reply(1, 1, "ok")));
    assert_eq!(v.stats().certified, 1);
    let mut all = Vec::new();
    for seq in 2..=5000 {
        all.extend(v.step(4, VoteInput::Committed { seq }));
    }
    let before = v.stats().dropped;
    all.extend(v.step(5, VoteInput::Reply(big_reply(2, 5001, &body))));
    assert_eq!(v.stats().dropped, before, "committing seqs released their bytes");
    // An honest replica's future replies are kept beside the flood.
    v.step(6, VoteInput::Reply(reply(0, 5002, "ok")));
    v.step(6, VoteInput::Reply(reply(1, 5002, "ok")));
    assert_eq!(v.stats().certified, 2);
}

#[test]
fn a_woken_replica_that_says_it_is_behind_is_not_named_but_a_liar_is() {
    let mut v = voter(2);
    let mut all = Vec::new();
    for seq in 1..=3 {
        all.extend(v.step(0, VoteInput::Committed { seq }));
    }
    for seq in 1..=2 {
        for i in 0..3 {
            all.extend(v.step(1, VoteInput::Reply(reply(i, seq, "a"))));
        }
    }
    // e1 lies at seq 3: e3 and e4 are woken.
    for (i, body) in [(0, "ok"), (1, "evil"), (2, "ok")] {
        all.extend(v.step(2, VoteInput::Reply(reply(i, 3, body))));
    }
    assert_eq!(wakes(&all), vec![(3, IncidentKind::Mismatch)]);
    // e3 replays 1 and 2, then cannot fetch what seq 3 reads; e4 answers.
    for seq in 1..=2 {
        all.extend(v.step(10, VoteInput::Reply(reply(3, seq, "a"))));
    }
    all.extend(v.step(20, VoteInput::Reply(reply(4, 3, "ok"))));
    assert_eq!(client_replies(&all).last(), Some(&b"ok".to_vec()));
    // e3's heartbeats say it is alive and behind seq 3; so do e1's.
    for t in [30, 80, 110] {
        for i in [1, 3] {
            all.extend(v.step(
                t,
                VoteInput::Progress {
                    replica: ReplicaId { app: APP, index: i },
                    last_executed: 2,
                },
            ));
        }
    }
    all.extend(v.step(121, VoteInput::Timer(3)));
    assert_eq!(faults(&all), vec![1], "only the replica that answered wrongly is named");
}

#[test]
fn a_replica_whose_heartbeat_says_it_ran_the_seq_is_still_named_silent() {
    let mut v = voter(1);
    v.step(0, VoteInput::Committed { seq: 1 });
    v.step(1, VoteInput::Reply(reply(0, 1, "a")));
    v.step(1, VoteInput::Reply(reply(1, 1, "a")));
    let mut all = v.step(2, VoteInput::Committed { seq: 2 });
    all.extend(v.step(3, VoteInput::Reply(reply(0, 2, "b"))));
    all.extend(v.step(102, VoteInput::Timer(2)));
    all.extend(v.step(110, VoteInput::Reply(reply(2, 2, "b"))));
    // e1 claims it executed seq 2 yet never answered it.
    all.extend(v.step(
        150,
        VoteInput::Progress {
            replica: ReplicaId { app: APP, index: 1 },
            last_executed: 2,
        },
    ));
    all.extend(v.step(211, VoteInput::Timer(2)));
    assert_eq!(faults(&all), vec![1]);
}

#[test]
fn replies_of_a_certified_seq_are_kept_as_digests_only() {
    let mut v = voter(1);
    let body = Packed::pack(&[AppResponse::new(200, vec![7u8; 1 << 20])]).expect("pack");
    let mut all = Vec::new();
    // e2 answers every committed seq first, 1 MiB and wrong; e0 and e1 agree.
    for seq in 1..=200 {
        all.extend(v.step(seq, VoteInput::Committed { seq }));
        all.extend(v.step(seq, VoteInput::Reply(big_reply(2, seq, &body))));
        all.extend(v.step(seq, VoteInput::Reply(reply(0, seq, "ok"))));
        all.extend(v.step(seq, VoteInput::Reply(reply(1, seq, "ok"))));
    }
    assert_eq!(v.stats().certified, 200);
    assert_eq!(client_replies(&all).len(), 200);
    assert_eq!(faults(&all), vec![2; 200], "the evidence (digests) still names e2");
    let held = held_bytes(&v, 2);
    assert!(held < 1 << 20, "e2's answers to certified seqs hold {held} bytes");
}
