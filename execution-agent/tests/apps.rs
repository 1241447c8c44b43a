//! The built-in apps: routes, errors, and bad input that changes nothing.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

use proptest::prelude::*;
use zz_agent::app::{self, App, Ctx};
use zz_agent::merkle::Shape;
use zz_agent::state::State;
use zz_wire::app::MAX_BODY;
use zz_wire::{AppRequest, AppResponse};

fn state() -> State {
    State::new(Shape::new(16, 2).unwrap())
}

fn call(a: &dyn App, s: &mut State, method: &str, path: &str, body: &[u8]) -> AppResponse {
    app::run(a, s, &Ctx::default(), &AppRequest::new(method, path, body.to_vec())).unwrap()
}

fn json(r: &AppResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn kv_routes() {
    let kv = app::build("kv", "kv").unwrap();
    let s = &mut state();
    assert_eq!(call(&*kv, s, "GET", "/kv/foo", b"").status, 404);
    assert_eq!(call(&*kv, s, "PUT", "/kv/foo", b"bar").status, 200);
    let r = call(&*kv, s, "GET", "/kv/foo", b"");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"bar"[..]));
    assert_eq!(call(&*kv, s, "DELETE", "/kv/foo", b"").status, 204);
    assert_eq!(call(&*kv, s, "DELETE", "/kv/foo", b"").status, 404);
    assert_eq!(call(&*kv, s, "GET", "/kv/foo", b"").status, 404);
    // An empty value is a value.
    assert_eq!(call(&*kv, s, "PUT", "/kv/e", b"").status, 200);
    assert_eq!(call(&*kv, s, "GET", "/kv/e", b"").status, 200);
}

#[test]
fn kv_bad_input_changes_nothing() {
    let kv = app::build("kv", "kv").unwrap();
    let s = &mut state();
    call(&*kv, s, "PUT", "/kv/a", b"1");
    let before = s.root();
    let big = vec![7u8; MAX_BODY + 1];
    assert_eq!(call(&*kv, s, "PUT", "/kv/a", &big).status, 413);
    assert_eq!(call(&*kv, s, "PUT", "/kv/", b"x").status, 404);
    assert_eq!(call(&*kv, s, "PUT", "/kvx/a", b"x").status, 404);
    assert_eq!(call(&*kv, s, "GET", "/bank/audit", b"").status, 404);
    assert_eq!(call(&*kv, s, "POST", "/kv/a", b"x").status, 405);
    assert_eq!(call(&*kv, s, "PUT", "", b"x").status, 404);
    assert_eq!(s.root(), before);
    // Exactly 1 MiB is allowed.
    assert_eq!(call(&*kv, s, "PUT", "/kv/a", &vec![1u8; MAX_BODY]).status, 200);
}

#[test]
fn bank_routes() {
    let bank = app::build("bank", "bank").unwrap();
    let s = &mut state();
    let r = call(&*bank, s, "POST", "/bank/accounts", br#"{"id":"alice","balance":100}"#);
    assert_eq!(r.status, 201);
    assert_eq!(json(&r), serde_json::json!({"id":"alice","balance":100}));
    assert_eq!(
        call(&*bank, s, "POST", "/bank/accounts", br#"{"id":"alice","balance":5}"#).status,
        409
    );
    assert_eq!(
        call(&*bank, s, "POST", "/bank/accounts", br#"{"id":"bob","balance":0}"#).status,
        201
    );
    let t = |s: &mut State, body: &str| call(&*bank, s, "POST", "/bank/transfer", body.as_bytes()).status;
    assert_eq!(t(s, r#"{"from":"alice","to":"bob","amount":30}"#), 200);
    assert_eq!(t(s, r#"{"from":"alice","to":"bob","amount":71}"#), 409);
    assert_eq!(t(s, r#"{"from":"alice","to":"carol","amount":1}"#), 404);
    assert_eq!(t(s, r#"{"from":"carol","to":"bob","amount":1}"#), 404);
    let r = call(&*bank, s, "GET", "/bank/accounts/bob", b"");
    assert_eq!(json(&r), serde_json::json!({"id":"bob","balance":30}));
    assert_eq!(call(&*bank, s, "GET", "/bank/accounts/carol", b"").status, 404);
    let r = call(&*bank, s, "GET", "/bank/audit", b"");
    assert_eq!(json(&r), serde_json::json!({"accounts":2,"total":100}));
}

#[test]
fn bank_bad_input_changes_nothing() {
    let bank = app::build("bank", "bank").unwrap();
    let s = &mut state();
    call(&*bank, s, "POST", "/bank/accounts", br#"{"id":"alice","balance":100}"#);
    let before = s.root();
    for (m, p, b, want) in [
        ("POST", "/bank/accounts", &b"{not json"[..], 400),
        ("POST", "/bank/accounts", br#"{"id":"x","balance":-1}"#, 400),
        ("POST", "/bank/accounts", br#"{"id":"x"}"#, 400),
        ("POST", "/bank/accounts", br#"{"id":"","balance":1}"#, 400),
        ("POST", "/bank/accounts", br#"{"id":"a/b","balance":1}"#, 400),
        ("POST", "/bank/accounts", br#"{"id":"x","balance":1,"extra":true}"#, 400),
        (
            "POST",
            "/bank/accounts",
            br#"{"id":"x","balance":18446744073709551615}"#,
            400,
        ),
        ("POST", "/bank/transfer", br#"{"from":"alice"}"#, 400),
        ("POST", "/bank/transfer", b"\xff\xfe", 400),
        ("DELETE", "/bank/accounts/alice", b"", 404),
        ("GET", "/bank/nope", b"", 404),
        ("GET", "/kv/alice", b"", 404),
    ] {
        let r = call(&*bank, s, m, p, b);
        assert_eq!(r.status, want, "{m} {p} {:?}", String::from_utf8_lossy(b));
        assert!(json(&r).get("error").is_some());
    }
    assert_eq!(s.root(), before);
}

proptest! {
    #[test]
    fn bank_total_is_conserved_under_random_transfers(
        balances in proptest::collection::vec(0u64..1_000, 2..8),
        transfers in proptest::collection::vec((0usize..8, 0usize..8, 0u64..1_500), 0..80),
    ) {
        let bank = app::build("bank", "bank").unwrap();
        let s = &mut state();
        for (i, b) in balances.iter().enumerate() {
            let body = format!(r#"{{"id":"u{i}","balance":{b}}}"#);
            prop_assert_eq!(call(&*bank, s, "POST", "/bank/accounts", body.as_bytes()).status, 201);
        }
        let total: u64 = balances.iter().sum();
        for (from, to, amount) in transfers {
            let body = format!(r#"{{"from":"u{from}","to":"u{to}","amount":{amount}}}"#);
            let st = call(&*bank, s, "POST", "/bank/transfer", body.as_bytes()).status;
            prop_assert!([200, 404, 409].contains(&st));
            let audit = json(&call(&*bank, s, "GET", "/bank/audit", b""));
            prop_assert_eq!(audit["total"].as_u64(), Some(total));
            prop_assert_eq!(audit["accounts"].as_u64(), Some(balances.len() as u64));
        }
        let sum: u64 = (0..balances.len())
            .map(|i| json(&call(&*bank, s, "GET", &format!("/bank/accounts/u{i}"), b""))["balance"].as_u64().unwrap())
            .sum();
        prop_assert_eq!(sum, total);
    }
}
