//! Two replicas fed the same orders end with the same root and replies.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zz_wire::*;

fn random_op(rng: &mut ChaCha8Rng, kind: &str) -> AppRequest {
    if kind == "kv" {
        let k = format!("k{}", rng.gen_range(0..50));
        match rng.gen_range(0..3) {
            0 => get(&k),
            1 => AppRequest::new("DELETE", &format!("/kv/{k}"), vec![]),
            _ => put(&k, &rng.gen::<[u8; 16]>()),
        }
    } else {
        let a = rng.gen_range(0..10);
        match rng.gen_range(0..4) {
            0 => AppRequest::new(
                "POST",
                "/bank/accounts",
                format!(r#"{{"id":"u{a}","balance":{}}}"#, rng.gen_range(0..500)),
            ),
            1 => AppRequest::new("GET", "/bank/audit", vec![]),
            _ => AppRequest::new(
                "POST",
                "/bank/transfer",
                format!(
                    r#"{{"from":"u{a}","to":"u{}","amount":{}}}"#,
                    rng.gen_range(0..10),
                    rng.gen_range(0..200)
                ),
            ),
        }
    }
}

#[test]
fn same_orders_same_root_and_replies() {
    let seed = seed();
    for kind in ["kv", "bank"] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let o = Opts {
            kind,
            ..Opts::default()
        };
        let (mut a, mut b) = (replica(0, &o), replica(1, &o));
        let mut ord = Orderer::default();
        for _ in 0..60 {
            let n = rng.gen_range(0..20);
            let (s, p) = ord.propose((0..n).map(|_| random_op(&mut rng, kind)).collect());
            let (ra, rb) = (replies(&feed(&mut a, s, &p)), replies(&feed(&mut b, s, &p)));
            assert_eq!(ra.len(), 1);
            assert_eq!(ra[0].result_digest(), rb[0].result_digest(), "{kind} seq {s}");
            assert_eq!(ra[0].responses().expect("decode").len(), n);
        }
        assert_eq!(a.root(), b.root());
        assert_eq!(a.last_executed(), 60);
    }
}
