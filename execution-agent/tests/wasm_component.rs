//! A replica that cannot get a tenant's component yet (the orchestrator's
//! link is slow, or down for the moment) is behind for that seq: it does
//! not answer 503 where its peers answered the app's answer, which the
//! agreement nodes would count as a fault and which would leave its state
//! apart from theirs for good. Once the component comes, it runs the seq
//! and answers like its peers (issue 25, item 2).
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zz_agent::app::tenant::{Components, Install, Tenant, INSTALL};
use zz_agent::app::wasm::component_hash;
use zz_agent::replica::{Config, Replica};
use zz_agent::source::NoPeers;
use zz_wire::*;

fn kv_wasm() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kv/kv.wasm")).unwrap()
}

/// The kv example component, when `up` says the source serves.
struct Flaky(Arc<AtomicBool>);

impl Components for Flaky {
    fn get(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        let bytes = kv_wasm();
        (self.0.load(Ordering::SeqCst) && component_hash(&bytes) == *hash).then_some(bytes)
    }
}

fn tenant_replica(i: u16, up: Arc<AtomicBool>) -> Replica {
    let cfg = Config {
        me: replica_name(i),
        f: F,
        checkpoint_interval: 16,
        nodes: (0..4).map(NodeId).collect(),
        peers: (0..3).map(replica_name).filter(|r| r.index != i).collect(),
        shape: zz_agent::merkle::Shape::default(),
        // The orderer's client installs.
        admin: Some(ClientId(0)),
    };
    Replica::new(
        cfg,
        replica_id(i),
        keyring(),
        Box::new(Tenant::new(Box::new(Flaky(up)))),
    )
}

#[test]
fn a_replica_without_the_component_yet_is_behind_then_answers_like_its_peers() {
    let always = Arc::new(AtomicBool::new(true));
    let later = Arc::new(AtomicBool::new(false));
    let (mut a, mut c) = (tenant_replica(0, always), tenant_replica(2, later.clone()));
    let mut ord = Orderer::default();
    let install = serde_json::to_vec(&Install {
        name: "kv".into(),
        hash: hex::encode(component_hash(&kv_wasm())),
    })
    .unwrap();
    // One seq that installs, then one that writes through the component
    // (with a write before it in the same seq, to be taken back), then a read.
    let seqs = [
        vec![AppRequest::new(INSTALL, "/", install)],
        vec![put("first", b"1"), put("second", b"2")],
        vec![get("second")],
    ];
    let mut want = Vec::new();
    let mut got = Vec::new();
    for ops in seqs {
        let (s, p) = ord.propose(ops);
        want.extend(replies(&feed(&mut a, s, &p)));
        got.extend(replies(&feed(&mut c, s, &p)));
    }
    assert_eq!(want.len(), 3);
    for r in &got {
        let w = want.iter().find(|w| w.seq == r.seq).unwrap();
        assert_eq!(
            r.result_digest(),
            w.result_digest(),
            "seq {}: answered {:?} without the component, where its peer answered {:?}",
            r.seq,
            r.responses()
                .map(|rs| rs.into_iter().map(|(_, _, x)| x.status).collect::<Vec<_>>()),
            w.responses()
                .map(|rs| rs.into_iter().map(|(_, _, x)| x.status).collect::<Vec<_>>()),
        );
    }
    assert_eq!(c.last_executed(), 1, "it ran seq 2 without the component");
    // The component comes: on the next ticks it runs seqs 2 and 3 and
    // answers like its peer, with the same state.
    later.store(true, Ordering::SeqCst);
    for t in 1..50 {
        got.extend(replies(&c.on_tick(t * 500, &mut NoPeers)));
    }
    assert_eq!(c.last_executed(), 3);
    assert_eq!(c.root(), a.root(), "the replica's state parted from its peer's");
    let digests = |rs: &[ExecReply]| rs.iter().map(|r| (r.seq, r.result_digest())).collect::<Vec<_>>();
    assert_eq!(digests(&got), digests(&want));
}
