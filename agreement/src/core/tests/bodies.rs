//! View changes and new views carry pre-prepare headers, not proposals:
//! their size does not grow with request sizes (issue 25 item 7).

use super::*;

/// Node 1 with `n` prepared ~`size`-byte proposals at seqs 1..=n of view 0.
fn backup_with_big_certificates(n: u64, size: usize) -> Core {
    let mut b = core(1);
    for seq in 1..=n {
        let (_, mut p) = big_proposal(seq, size);
        p.nondet.timestamp_ms = T0;
        let d = p.digest();
        peer(&mut b, Msg::PrePrepare(pp(0, 0, seq, p)));
        peer(&mut b, prepare(2, 0, seq, d));
        peer(&mut b, prepare(3, 0, seq, d));
    }
    b
}

/// The frame's length, or why it cannot be sent.
fn encoded_len(m: &Msg) -> Result<usize, String> {
    zz_wire::frame::encode(m).map(|b| b.len()).map_err(|e| e.to_string())
}

#[test]
fn a_view_change_over_big_prepared_proposals_stays_small() {
    let mut b = backup_with_big_certificates(8, 3 << 20);
    b.start_view_change(1);
    let acts = std::mem::take(&mut b.out);
    let vc = acts
        .iter()
        .find_map(|a| match a {
            Action::Broadcast(Msg::ViewChange(v)) => Some(v.clone()),
            _ => None,
        })
        .expect("a view change");
    assert_eq!(vc.body.prepared.len(), 8, "all eight certificates are in the P set");
    let len = encoded_len(&Msg::ViewChange(vc.clone()));
    assert!(len.as_ref().is_ok_and(|l| *l < 1 << 20), "view change: {len:?}");

    // Node 1 is view 1's primary: with two more such view changes it sends
    // the new view, which stays as small.
    let prepared = vc.body.prepared.clone();
    peer(&mut b, Msg::ViewChange(view_change(2, 1, prepared.clone())));
    let acts = peer(&mut b, Msg::ViewChange(view_change(3, 1, prepared)));
    let nv = acts
        .iter()
        .find_map(|a| match a {
            Action::Broadcast(Msg::NewView(nv)) => Some(nv.clone()),
            _ => None,
        })
        .expect("a new view");
    assert_eq!(nv.body.pre_prepares.len(), 8);
    let len = encoded_len(&Msg::NewView(nv));
    assert!(len.as_ref().is_ok_and(|l| *l < 1 << 20), "new view: {len:?}");
}
