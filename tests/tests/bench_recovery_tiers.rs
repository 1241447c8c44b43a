//! CI smoke run of `zz bench recovery` with a cold standby, on demand and
//! as the full-transfer baseline (no speed thresholds). The baseline's agents
//! must really run in full mode: their logs say so, and the on-demand run's
//! do not.

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use zz_tests::{kept_dir, num};

/// A run starts a whole deployment and waits for fresh processes to catch up.
const RUN_LIMIT: Duration = Duration::from_secs(240);
/// What an agent logs once a full transfer let it execute.
const FULL_DONE: &str = "full transfer complete";

/// Whether any replica log (`kv-e*.log`) under `dir` contains `needle`.
fn replica_logs_say(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            replica_logs_say(&p, needle)
        } else {
            name.starts_with("kv-e")
                && name.ends_with(".log")
                && std::fs::read_to_string(&p).is_ok_and(|t| t.contains(needle))
        }
    })
}

fn run(baseline: bool) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let json_s = json.to_string_lossy().into_owned();
    let mut args = vec![
        "bench",
        "recovery",
        "--standby",
        "cold",
        "--state-mb",
        "1",
        "--incidents",
        "2",
        "--keep",
        "--json",
        &json_s,
    ];
    if baseline {
        args.push("--baseline");
    }
    let output = zz_tests::zz_ok(&args, &dir.path().join("zz.log"), RUN_LIMIT);
    let kept = kept_dir(&output);
    let v: Value = zz_tests::read_json(&json);
    let full_logged = replica_logs_say(&kept, FULL_DONE);
    let _ = std::fs::remove_dir_all(&kept);

    assert_eq!(v["kind"], "recovery", "{v}");
    assert_eq!(v["standby"], "cold", "{v}");
    assert_eq!(v["backend"], "process", "{v}");
    assert_eq!(v["baseline"], baseline, "{v}");
    assert_eq!(v["catchup"], if baseline { "full" } else { "on-demand" }, "{v}");
    assert_eq!(num(&v, "incidents"), 2.0, "{v}");
    for what in ["fault_to_answer", "recovery"] {
        let (p50, p99) = (num(&v, &format!("{what}_p50_ms")), num(&v, &format!("{what}_p99_ms")));
        assert!(p50 > 0.0 && p99 >= p50, "{what}: p50 {p50}, p99 {p99}: {v}");
    }
    assert_eq!(
        full_logged, baseline,
        "agents logged {FULL_DONE:?}: {full_logged}, expected {baseline}"
    );
}

#[test]
fn cold_standby_recovers_on_demand() {
    run(false);
}

#[test]
fn cold_standby_full_transfer_baseline_recovers() {
    run(true);
}

#[test]
fn baseline_refuses_a_paused_standby() {
    let dir = tempfile::tempdir().unwrap();
    let r = zz_tests::run_zz(
        &[
            "bench",
            "recovery",
            "--baseline",
            "--standby",
            "paused",
            "--incidents",
            "1",
        ],
        &dir.path().join("zz.log"),
        RUN_LIMIT,
    );
    assert!(!r.success);
    assert!(r.output.contains("--standby cold or hibernated"), "{}", r.output);
}
