#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use super::*;
use crate::app;
use crate::merkle::Shape;
use crate::state::State;
use std::path::Path;
use zz_wire::NonDet;

/// A component built by `scripts/build-examples.sh` (committed).
fn component(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-examples.sh)", path.display()))
}

fn test_component(name: &str) -> Vec<u8> {
    component(&format!("tests/components/{name}/{name}.wasm"))
}

fn example(name: &str) -> Vec<u8> {
    component(&format!("../examples/{name}/{name}.wasm"))
}

fn ctx(seq: u64, op: u64) -> Ctx {
    Ctx {
        seq,
        nondet: NonDet {
            timestamp_ms: 1_750_000_000_000 + seq * 1_000,
            seed: seq.wrapping_mul(0x9e37_79b9),
        },
        op,
        admin: false,
    }
}

fn call(a: &WasmApp, s: &mut State, c: Ctx, method: &str, path: &str, body: &[u8]) -> AppResponse {
    app::run(a, s, &c, &AppRequest::new(method, path, body)).unwrap()
}

fn json(r: &AppResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
}

/// Two replicas run the same history: byte-identical answers and roots.
fn replay_on_two(a: &WasmApp, history: &[(&str, String, Vec<u8>)]) -> Vec<AppResponse> {
    let (mut s1, mut s2) = (State::new(Shape::default()), State::new(Shape::default()));
    let mut out = Vec::new();
    for (i, (method, path, body)) in history.iter().enumerate() {
        let c = ctx(1 + i as u64 / 3, i as u64 % 3);
        let r1 = call(a, &mut s1, c, method, path, body);
        let r2 = call(a, &mut s2, c, method, path, body);
        assert_eq!(r1, r2, "op {i} ({method} {path}) answered differently");
        assert_eq!(s1.root(), s2.root(), "op {i} left different state");
        out.push(r1);
    }
    out
}

#[test]
fn time_and_randomness_are_the_agreed_ones_and_equal_on_two_replicas() {
    let a = WasmApp::new("nd", &test_component("nondet")).unwrap();
    let history: Vec<_> = (0..6).map(|_| ("GET", "/nd/".to_string(), Vec::new())).collect();
    let rs = replay_on_two(&a, &history);
    let first = json(&rs[0]);
    assert_eq!(rs[0].status, 200, "{first}");
    // Op 0 of seq 1: the agreed timestamp, to the millisecond.
    let want_ms = ctx(1, 0).nondet.timestamp_ms;
    assert_eq!(first["wall"]["seconds"].as_u64(), Some(want_ms / 1000), "{first}");
    assert_eq!(
        first["wall"]["nanoseconds"].as_u64(),
        Some((want_ms % 1000) * 1_000_000),
        "{first}"
    );
    assert_eq!(first["monotonic"].as_u64(), Some(want_ms * 1_000_000), "{first}");
    // Seeded per op: two ops of one seq draw different numbers.
    let second = json(&rs[1]);
    assert_ne!(first["random_bytes"], second["random_bytes"]);
    assert_ne!(first["random_u64"], second["random_u64"]);
}

#[test]
fn the_counter_example_counts_the_same_on_two_replicas() {
    let a = WasmApp::new("counter", &example("counter")).unwrap();
    let mut h = Vec::new();
    for i in 0..20u32 {
        match i % 5 {
            4 => h.push(("GET", "/counter/".to_string(), Vec::new())),
            3 => h.push(("POST", "/counter/incr".to_string(), b"10".to_vec())),
            _ => h.push(("POST", "/counter/incr".to_string(), Vec::new())),
        }
    }
    let rs = replay_on_two(&a, &h);
    let last = json(rs.last().unwrap());
    // 20 ops: 12 plain increments, 4 of ten, 4 reads.
    assert_eq!(last["count"].as_u64(), Some(12 + 40), "{last}");
}

/// A trap answers the same 500 on two replicas and leaves no state behind.
fn traps_alike(name: &str, why: &str) {
    let a = WasmApp::new(name, &test_component(name)).unwrap();
    let path = format!("/{name}/");
    let rs = replay_on_two(&a, &[("GET", path.clone(), Vec::new())]);
    assert_eq!(rs[0].status, 500, "{name}: {}", String::from_utf8_lossy(&rs[0].body));
    assert_eq!(json(&rs[0])["error"].as_str(), Some(why), "{name}");
    let mut s = State::new(Shape::default());
    let before = s.root();
    call(&a, &mut s, ctx(1, 0), "GET", &path, b"");
    assert_eq!(s.root(), before);
}

#[test]
fn running_out_of_memory_answers_the_same_500_and_changes_nothing() {
    traps_alike("memhog", "app aborted");
}

#[test]
fn running_out_of_fuel_answers_the_same_500_and_changes_nothing() {
    traps_alike("spin", "app ran out of fuel");
}

#[test]
fn outgoing_http_gets_an_error_not_the_network() {
    let a = WasmApp::new("out", &test_component("outgoing")).unwrap();
    let rs = replay_on_two(&a, &[("GET", "/out/".to_string(), Vec::new())]);
    assert_eq!(rs[0].status, 200, "{}", String::from_utf8_lossy(&rs[0].body));
    assert!(
        String::from_utf8_lossy(&rs[0].body).contains("HTTP-request-denied"),
        "{}",
        String::from_utf8_lossy(&rs[0].body)
    );
}

#[test]
fn bad_components_are_refused_with_the_reason() {
    let e = validate(b"\0asm not really").unwrap_err();
    assert!(matches!(e, LoadError::Invalid(_)), "{e}");
    let e = validate(&test_component("forbidden")).unwrap_err();
    assert!(matches!(e, LoadError::Forbidden(_)), "{e}");
    assert!(
        e.to_string().contains("wasi:filesystem") || e.to_string().contains("wasi:sockets"),
        "{e}"
    );
    let e = validate(&test_component("wrong-world")).unwrap_err();
    assert!(matches!(e, LoadError::WrongWorld(_)), "{e}");
    for ok in ["counter", "guestbook", "kv"] {
        validate(&example(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn a_request_outside_the_app_prefix_is_a_400() {
    let a = WasmApp::new("counter", &example("counter")).unwrap();
    let mut s = State::new(Shape::default());
    let r = call(&a, &mut s, ctx(1, 0), "GET", "/counterfeit/", b"");
    assert_eq!(r.status, 400);
}
