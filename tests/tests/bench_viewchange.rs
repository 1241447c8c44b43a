//! CI smoke run of `zz bench view-change`: two rounds of crashing the
//! primary under load on a real local deployment. Every round must end in a
//! higher view with answers flowing again and the crashed node rejoined
//! (the bench fails otherwise); no speed threshold, the CI machine's speed is
//! not what is tested.

use serde_json::Value;
use std::time::Duration;

/// Starting a deployment and two crash/restart rounds on a loaded 2-core
/// machine stay well under this.
const RUN_LIMIT: Duration = Duration::from_secs(240);

#[test]
fn two_primary_crashes_each_end_in_a_higher_view() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("viewchange.json");
    let json_arg = json.to_str().unwrap();
    zz_tests::zz_ok(
        &["bench", "view-change", "--rounds", "2", "--json", json_arg],
        &dir.path().join("bench.log"),
        RUN_LIMIT,
    );

    let r: Value = zz_tests::read_json(&json);
    assert_eq!(r["kind"], "view-change", "{r}");
    assert_eq!(r["rounds"], 2, "{r}");
    assert_eq!(r["f"], 1, "{r}");
    assert!(r["view_change_timeout_ms"].as_u64().is_some_and(|t| t > 0), "{r}");
    assert!(r["crash_to_answer_p50_ms"].as_f64().is_some_and(|p| p > 0.0), "{r}");
    assert!(r["longest_gap_p50_ms"].as_f64().is_some_and(|p| p > 0.0), "{r}");
    let rounds = r["per_round"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{r}");
    let mut crashed = Vec::new();
    for round in rounds {
        let (before, after) = (
            round["view_before"].as_u64().unwrap(),
            round["view_after"].as_u64().unwrap(),
        );
        assert!(after > before, "no view increase in {round}");
        // The crashed node is the primary of the view it was crashed in.
        assert_eq!(round["crashed"], format!("a{}", before % 4), "{round}");
        crashed.push(before);
    }
    // The second round started in the view the first one ended in (or later):
    // the restarted node rejoined and the cluster moved on together.
    assert!(crashed[1] > crashed[0], "{r}");
}
