//! Smoke run of `zz bench --attack KIND` (issue 25, Aardvark's yardstick):
//! each attack runs briefly on a real local deployment and reports both
//! phases of the same invocation. Speed is measured, not asserted; what is
//! asserted is that the attack happened (the attacker's own counters, or
//! the view change that replaces a slow primary), that the correct
//! processes were measured, and that a value written after the attack
//! reads back the same through f+1 certified answers.

use serde_json::Value;
use std::time::Duration;
use zz_tests::{num, read_json};

const RUN_LIMIT: Duration = Duration::from_secs(180);

fn check_phase(v: &Value, name: &str) {
    let p = &v[name];
    assert!(num(p, "requests") > 0.0, "{name}: no request completed: {v}");
    assert!(num(p, "throughput_ops") > 0.0, "{name}: {v}");
    assert!(num(p, "nodes_peak_rss_mib") > 0.0, "{name}: no node measured: {v}");
    assert!(num(p, "nodes_cpu_secs") >= 0.0, "{name}: {v}");
    let procs = p["processes"].as_array().expect("processes");
    let nodes = procs.iter().filter(|p| p["role"] == "agreement nodes").count();
    assert!(nodes >= 3, "{name}: {nodes} correct agreement nodes measured: {v}");
    assert!(
        procs.iter().all(|c| c["label"] != v["faulty"]),
        "{name}: the faulty principal counted among the correct: {v}"
    );
}

fn views(v: &Value, phase: &str) -> Vec<u64> {
    v[phase]["views"]
        .as_array()
        .expect("views")
        .iter()
        .filter_map(Value::as_u64)
        .collect()
}

#[test]
fn every_attack_runs_against_a_fault_free_phase_and_nothing_wrong_is_certified() {
    let dir = tempfile::tempdir().unwrap();
    for attack in ["slow-primary", "flood-replica", "flood-node", "flood-client"] {
        let json = dir.path().join(format!("{attack}.json"));
        let log = dir.path().join(format!("{attack}.log"));
        let json_arg = json.to_string_lossy().into_owned();
        let args = [
            "bench",
            "--attack",
            attack,
            "--duration",
            "3",
            "--warmup",
            "1",
            "--clients",
            "16",
            "--seed",
            "7",
            "--json",
            &json_arg,
        ];
        let out = zz_tests::zz_ok(&args, &log, RUN_LIMIT);
        assert!(
            out.contains(&format!("| {attack} |")),
            "no table row for {attack}: {out}"
        );
        let v = read_json(&json);
        assert_eq!(v["kind"], "attack", "{v}");
        assert_eq!(v["attack"], attack, "{v}");
        check_phase(&v, "fault_free");
        check_phase(&v, "under_attack");
        assert!(num(&v, "throughput_ratio") > 0.0, "{v}");
        assert!(num(&v, "rss_ratio") > 0.0, "{v}");
        assert_eq!(v["read_back_ok"], true, "a wrong or no answer after {attack}: {v}");
        let sent = &v["sent"];
        match attack {
            "slow-primary" => {
                // Held pre-prepares keep PBFT's timers quiet: only the
                // throughput monitor replaces the primary.
                let before = views(&v, "fault_free").into_iter().max().unwrap_or(0);
                let after = views(&v, "under_attack").into_iter().max().unwrap_or(0);
                assert!(
                    after > before,
                    "the slow primary kept its view ({before} → {after}): {v}"
                );
            }
            _ => {
                assert!(num(sent, "messages") > 0.0, "{attack} sent nothing: {v}");
                assert!(num(sent, "connections") >= 1.0, "{attack} never connected: {v}");
            }
        }
    }
}
