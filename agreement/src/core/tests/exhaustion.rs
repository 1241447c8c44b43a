//! One Byzantine node must not make the others do unbounded work (issue 25,
//! item 10): proofs hold exactly a quorum of signatures, and a node's view
//! changes for ever higher views are checked at most once per retransmit
//! period.

use super::*;
use zz_wire::LogFetch;

/// A view change from node 2 for `new_view` with a stable checkpoint at 4
/// proven by `signers` (which may repeat).
fn view_change_with_checkpoint(new_view: View, signers: &[usize]) -> Signed<ViewChange> {
    let d = Digest([4; 32]);
    node_id(2).sign(ViewChange {
        node: NodeId(2),
        app: AppId(0),
        new_view,
        stable_seq: 4,
        stable_digest: d,
        checkpoint_proof: signers.iter().map(|i| checkpoint(*i, 4, d)).collect(),
        prepared: vec![],
    })
}

#[test]
fn a_checkpoint_proof_of_exactly_a_quorum_is_accepted() {
    let mut b = core(1);
    peer(&mut b, Msg::ViewChange(view_change_with_checkpoint(1, &[0, 2, 3])));
    assert_eq!(b.stats().dropped_invalid, 0);
}

#[test]
fn a_checkpoint_proof_padded_with_repeated_signatures_is_refused() {
    let mut b = core(1);
    let padded: Vec<usize> = [0, 2, 3].iter().copied().cycle().take(300).collect();
    peer(&mut b, Msg::ViewChange(view_change_with_checkpoint(1, &padded)));
    assert_eq!(b.stats().dropped_invalid, 1);
}

#[test]
fn a_checkpoint_proof_with_more_than_a_quorum_is_refused() {
    let mut b = core(1);
    peer(&mut b, Msg::ViewChange(view_change_with_checkpoint(1, &[0, 1, 2, 3])));
    assert_eq!(b.stats().dropped_invalid, 1);
}

#[test]
fn a_prepared_certificate_padded_with_repeated_prepares_is_refused() {
    let mut b = core(1);
    let mut proof = prepared_proof(proposal(&[1], T0));
    let extra = proof.prepares[0].clone();
    proof.prepares.extend(std::iter::repeat_n(extra, 200));
    peer(&mut b, Msg::ViewChange(view_change(2, 1, vec![proof])));
    assert_eq!(b.stats().dropped_invalid, 1);
}

#[test]
fn a_node_cannot_make_others_check_a_view_change_per_view_number() {
    let mut b = core(1);
    for v in 1..=50 {
        peer(&mut b, Msg::ViewChange(view_change(2, v, vec![])));
    }
    assert_eq!(b.stats().view_changes_checked, 1, "one per retransmit period");
    // A period later the node's latest view change counts again.
    b.step(T0 + 1_000, Input::Peer(Msg::ViewChange(view_change(2, 51, vec![]))));
    assert_eq!(b.stats().view_changes_checked, 2);
}

/// The proofs a node builds itself are exactly-quorum, or its peers would
/// refuse its view changes.
#[test]
fn a_view_change_carries_exactly_2f_prepares_per_certificate() {
    let mut b = core(1);
    let p = proposal(&[1], T0);
    let d = p.digest();
    peer(&mut b, Msg::PrePrepare(pp(0, 0, 1, p)));
    peer(&mut b, prepare(2, 0, 1, d));
    peer(&mut b, prepare(3, 0, 1, d));
    let vc = times_out_and_changes_view(&mut b);
    assert_eq!(vc.prepared.len(), 1);
    assert_eq!(vc.prepared[0].prepares.len(), 2 * F);
}

fn log_entries(from: usize, entries: Vec<(Seq, Proposal)>) -> Msg {
    Msg::LogEntries(node_id(from).sign(LogEntries {
        node: NodeId(from as u16),
        app: AppId(0),
        entries,
    }))
}

fn big_proposal(id: u64) -> Proposal {
    let batch = client_id().sign(
        ClientBatch::new(
            ClientId(7),
            AppId(0),
            id,
            &[AppRequest::new("PUT", "/kv/x", vec![7; 1 << 20])],
        )
        .expect("pack"),
    );
    Proposal {
        requests: vec![batch],
        nondet: NonDet {
            timestamp_ms: T0,
            seed: id,
        },
    }
}

/// Item 11: entries nobody asked for are not kept (a node that is not
/// fetching has no use for them, and each may carry megabytes).
#[test]
fn unsolicited_log_entries_are_not_kept() {
    let mut b = core(1);
    let entries = (1..=16).map(|s| (s, big_proposal(s))).collect();
    peer(&mut b, log_entries(2, entries));
    assert_eq!(b.fetch.bodies.len(), 0);
}

/// While fetching, what one peer's entries may hold back is bounded in
/// bytes, so a lying peer cannot fill memory with bodies no one else vouches for.
#[test]
fn log_entries_held_per_peer_are_bounded_in_bytes() {
    let mut b = core(1);
    b.note_behind(10_000);
    for round in 0..4u64 {
        let entries = (1..=16)
            .map(|s| (round * 16 + s, big_proposal(round * 16 + s)))
            .collect();
        peer(&mut b, log_entries(2, entries));
    }
    let held: usize = b.fetch.bodies.values().map(|(_, p)| p.approx_bytes()).sum();
    assert!(
        held <= super::super::FETCH_BYTES_PER_PEER,
        "{held} bytes held for one peer"
    );
}

/// Item 11: a log fetch is answered once per peer per period, whatever
/// start point it names (each answer can be megabytes).
#[test]
fn log_fetches_naming_other_start_points_get_one_answer_per_period() {
    let mut b = core(1);
    for from in 1..=20 {
        let m = node_id(2).sign(LogFetch {
            node: NodeId(2),
            app: AppId(0),
            from,
        });
        peer(&mut b, Msg::LogFetch(m));
    }
    assert_eq!(b.stats().dropped_old, 19);
}

/// A backup whose keyring knows a second client, 8, beside client 7.
fn core_with_two_clients() -> Core {
    let mut cfg = config(1);
    let other = Identity::from_seed(Principal::Client(ClientId(8)), [98; 32]);
    cfg.keys.insert(other.who, other.public());
    let mut c = Core::new(cfg, node_id(1));
    c.start(T0);
    c
}

/// Client `client`'s batch `first_id` (signed once, as the core does not
/// check client signatures: the link did).
fn req_from(client: u16, first_id: u64, template: &Signed<ClientBatch>) -> Signed<ClientBatch> {
    let mut r = template.clone();
    r.body.client = ClientId(client);
    r.body.first_id = first_id;
    r
}

#[test]
fn one_client_flooding_the_pool_leaves_room_for_another() {
    let mut b = core_with_two_clients();
    let template = req(1);
    for id in 0..MAX_POOL as u64 + 16 {
        b.step(T0, Input::Request(req_from(7, id, &template)));
    }
    assert!(
        b.pending_requests() <= MAX_POOL_PER_CLIENT,
        "client 7 holds {} of {MAX_POOL} pool slots",
        b.pending_requests()
    );
    let refused = b.stats().dropped_overload;
    b.step(T0, Input::Request(req_from(8, 1, &template)));
    assert_eq!(b.stats().dropped_overload, refused, "client 8's request was refused");
    assert!(b.pool.contains_key(&(ClientId(8), 1)));
}

#[test]
fn one_client_pools_at_most_its_share_of_request_bytes() {
    let mut b = core_with_two_clients();
    let ops = [AppRequest::new("PUT", "/kv/x", vec![1u8; 1 << 20])];
    let big = client_id().sign(ClientBatch::new(ClientId(7), AppId(0), 0, &ops).expect("pack"));
    for id in 0..512 {
        b.step(T0, Input::Request(req_from(7, id, &big)));
    }
    let held: usize = b.pool.values().map(|p| p.req.body.ops.as_bytes().len()).sum();
    assert!(held <= POOL_BYTES_PER_CLIENT, "client 7 pooled {held} bytes");
    let refused = b.stats().dropped_overload;
    b.step(T0, Input::Request(req_from(8, 1, &big)));
    assert_eq!(b.stats().dropped_overload, refused, "client 8's request was refused");
}

/// Requests a backup sent to the primary.
fn forwards(acts: &[Action]) -> usize {
    acts.iter()
        .filter(|a| matches!(a, Action::Send(NodeId(0), Msg::Request(_))))
        .count()
}

#[test]
fn a_backup_forwards_a_replayed_request_once_per_retransmit_period() {
    let mut b = core(1);
    // A client replays one batch a thousand times within a millisecond.
    let mut sent = 0;
    for _ in 0..1000 {
        sent += forwards(&b.step(T0, Input::Request(req(5))));
    }
    assert_eq!(sent, 1, "forwarded once, not per copy");
    // A retransmit period later a copy goes again (the primary may have lost it).
    let later = T0 + timing().view_change_timeout_ms;
    assert_eq!(forwards(&b.step(later, Input::Request(req(5)))), 1);
    assert_eq!(forwards(&b.step(later, Input::Request(req(5)))), 0);
}
