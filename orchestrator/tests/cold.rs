//! The cold standby tier on the process backend: hibernating cold destroys
//! the instance, waking provisions a fresh one; the API validates the body.

mod common;

use common::{children, deployment, marker, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_hibernate_destroys_and_wake_starts_a_fresh_process() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep, ids, marker(40)).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let before = children(&o.marker);
    assert_eq!(before.len(), 3);
    assert_eq!(o.replica("kv-e2").await["cold"], false);

    for (body, why) in [
        (r#"{"cold": true, "extra": 1}"#, "unknown field"),
        (r#"{"cold": "yes"}"#, "wrong type"),
        ("{not json", "syntax"),
    ] {
        let r = o.post("/v1/replicas/kv-e2/hibernate", body).await;
        assert_eq!(r.status(), 400, "{why}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{why}: {v}");
    }
    // A rejected body changed nothing.
    assert_eq!(o.replica("kv-e2").await["state"], "paused");
    assert_eq!(children(&o.marker), before);

    let r = o.post("/v1/replicas/kv-e2/hibernate", r#"{"cold": true}"#).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["state"].as_str(), v["cold"].as_bool()),
        (Some("hibernated"), Some(true))
    );
    let row = o.replica("kv-e2").await;
    assert_eq!(
        (row["state"].as_str(), row["cold"].as_bool()),
        (Some("hibernated"), Some(true))
    );
    let left = children(&o.marker);
    assert_eq!(left.len(), 2, "the cold standby's process is gone");
    assert!(left.iter().all(|p| before.contains(p)));
    let ev = o.wait_event("hibernated", Some("kv-e2")).await;
    assert!(ev["detail"].as_str().unwrap().contains("cold"), "{ev}");

    // Same request again: nothing to do. Warm over cold: a conflict.
    assert_eq!(
        o.post("/v1/replicas/kv-e2/hibernate", r#"{"cold": true}"#)
            .await
            .status(),
        200
    );
    assert_eq!(o.post("/v1/replicas/kv-e2/hibernate", "").await.status(), 409);

    let r = o.post("/v1/replicas/kv-e2/wake", "").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["state"].as_str(), v["cold"].as_bool()),
        (Some("waking"), Some(false))
    );
    let now = children(&o.marker);
    assert_eq!(now.len(), 3);
    let fresh: Vec<u32> = now.iter().copied().filter(|p| !before.contains(p)).collect();
    assert_eq!(fresh.len(), 1, "exactly one new process: {before:?} -> {now:?}");

    // An empty body (or `{}`) still hibernates warm.
    let r = o.post("/v1/replicas/kv-e1/hibernate", "").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["state"].as_str(), v["cold"].as_bool()),
        (Some("hibernated"), Some(false))
    );
    assert_eq!(o.post("/v1/replicas/kv-e1/hibernate", "{}").await.status(), 200);

    o.shutdown().await;
    assert!(children(&o.marker).is_empty(), "children left after shutdown");
}
