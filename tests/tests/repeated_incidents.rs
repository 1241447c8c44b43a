//! Incidents back to back on one app: each round fences the replica that
//! just lied, so the next round finds a standby that may still be
//! provisioning and an active replica woken a moment ago that is still
//! syncing its state in the background. Every round must still end in a
//! correct certified answer (`zz bench recovery` checks each answer and
//! fails otherwise), with no replica mistaken for dead while it fetches.

use std::time::Duration;
use zz_tests::{num, read_json, zz_ok};

#[test]
fn eight_incidents_in_a_row_each_end_in_a_correct_answer() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("recovery.json");
    let out = zz_ok(
        &[
            "bench",
            "recovery",
            "--standby",
            "paused",
            "--state-mb",
            "2",
            "--incidents",
            "8",
            "--json",
            json.to_str().unwrap(),
            "--keep",
        ],
        &dir.path().join("zz.log"),
        Duration::from_secs(240),
    );
    let v = read_json(&json);
    assert_eq!(num(&v, "incidents"), 8.0, "{v}");
    // Each round read its certified answer back (the bench fails otherwise).
    assert_eq!(out.matches("corrupt-reply → certified answer").count(), 8, "{out}");
    assert!(num(&v, "skipped_rounds") <= 8.0, "{v}");
    // Exactly one instance fenced and replaced per round: a replica taken
    // for dead while it fetched state would add instances.
    let kept = zz_tests::kept_dir(&out);
    let mut started = 0;
    for i in 0..3 {
        let log = std::fs::read_to_string(kept.join(format!("logs/kv-e{i}.log"))).unwrap_or_default();
        started += log.matches("zz orchestrator: starting").count();
    }
    let _ = std::fs::remove_dir_all(&kept);
    // A round settled without a wake is run again (and still replaces its liar).
    let skipped = usize::try_from(v["skipped_rounds"].as_u64().expect("skipped_rounds in the result")).unwrap();
    assert_eq!(
        started,
        3 + 8 + skipped,
        "instances started (3 initial + 1 replacement per round, {skipped} rounds run again)"
    );
}
