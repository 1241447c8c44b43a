//! `zz bench --mode unreplicated` as an operator runs it: the `zz` binary
//! starts one `zz-agent serve` per app, loads it and writes the JSON result.
//! No speed thresholds: the machine is shared.

use serde_json::Value;
use std::time::Duration;

/// Starting one agent and a few seconds of load stay well under this.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn run(extra: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let mut args = vec!["bench", "--mode", "unreplicated", "--duration", "2", "--warmup", "1"];
    args.extend(["--clients", "8", "--seed", "7", "--json", json.to_str().unwrap()]);
    args.extend(extra);
    let out = zz_tests::zz_ok(&args, &dir.path().join("zz.log"), RUN_LIMIT);
    (zz_tests::read_json(&json), out)
}

fn check(v: &Value) {
    let requests = v["requests"].as_u64().unwrap();
    let (p50, p99) = (v["p50_ms"].as_f64().unwrap(), v["p99_ms"].as_f64().unwrap());
    assert!(requests > 0, "no request completed: {v}");
    assert_eq!(v["errors"].as_u64(), Some(0), "{v}");
    assert!(p50 > 0.0 && p99 >= p50, "p50 {p50} p99 {p99}");
    assert_eq!(v["mode"], "unreplicated");
    let roles: Vec<&str> = v["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["role"].as_str())
        .collect();
    assert!(roles.contains(&"unreplicated agent"), "roles: {roles:?}");
    assert!(
        !roles.contains(&"agreement nodes") && !roles.contains(&"execution replicas"),
        "nothing replicated may run: {roles:?}"
    );
}

#[test]
fn kv_put_load_completes_without_errors() {
    let (v, stdout) = run(&[]);
    println!("{stdout}");
    check(&v);
    assert_eq!(v["workload"], "kv-put");
}

#[test]
fn bank_transfers_on_two_apps_complete_without_errors() {
    // Bank transfers return 409 when funds run out, which is not an error;
    // a missing account (setup lost) would be 404, also below 500, so the
    // JSON check is what matters here: every call was answered.
    let (v, _) = run(&["--workload", "bank", "--apps", "2"]);
    check(&v);
    assert_eq!(v["apps"].as_u64(), Some(2));
}

#[test]
fn gateway_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = zz_tests::run_zz(
        &["bench", "--mode", "unreplicated", "--via", "gateway", "--duration", "1"],
        &dir.path().join("zz.log"),
        RUN_LIMIT,
    );
    assert!(!r.success);
    assert!(r.output.contains("use --via client"), "{}", r.output);
}
