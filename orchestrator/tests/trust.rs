//! What the orchestrator does on its own word, and what it refuses to do
//! (issue 25): silence alone suspects but does not fence; fault injection
//! stays within f per app and per agreement cluster unless forced; the
//! dashboard keeps its token out of URLs and persistent storage.

mod common;

use common::{deployment, heartbeat, marker, replica, start, start_tuned, tuning};
use std::time::Duration;
use zz_wire::{Digest, Fault, Msg, NodeId, Principal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_silence_suspects_and_wakes_a_standby_but_only_a_certificate_fences() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let t = zz_orchestrator::controller::Tuning {
        silence_ms: 300,
        ..tuning()
    };
    let mut o = start_tuned(dir.path(), dep, ids, marker(21), t).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let e1 = Principal::Replica(replica(1));
    // kv-e1 stays connected but stops heartbeating (a loaded host, a hang).
    let (_rx, mut tx) = o.connect(e1).await;
    o.wait_event("link-up", Some("kv-e1")).await;
    tx.send(&Msg::Heartbeat(o.id(e1).sign(heartbeat(e1, 7)))).await.unwrap();
    o.wait_replicas("heartbeat", |v| v[1]["last_executed"] == 7).await;
    o.wait_replicas("standby woken", |v| v[2]["state"] != "paused").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let r = o.replica("kv-e1").await;
    assert_eq!(r["generation"], 1, "heartbeat silence alone destroyed kv-e1: {r}");
    assert_eq!(r["state"], "active", "{r}");
    let ev = o.wait_event("suspected", Some("kv-e1")).await;
    assert!(ev["detail"].as_str().unwrap().contains("silent"), "{ev}");

    // The agreement nodes' audit names it (silent through an incident): f+1
    // FAULTs fence it.
    for n in [0u16, 1] {
        let who = Principal::Node(NodeId(n));
        let (_nrx, mut ntx) = o.connect(who).await;
        let f = Fault {
            node: NodeId(n),
            replica: replica(1),
            seq: 5,
            certified_digest: Digest::ZERO,
            their_digest: None,
        };
        ntx.send(&Msg::Fault(o.id(who).sign(f))).await.unwrap();
        // Keep the link open until the vote is read.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    o.wait_replicas("kv-e1 replaced", |v| v[1]["generation"] == 2).await;
    o.shutdown().await;
}

async fn post_status(o: &common::Orch, body: &str) -> (u16, serde_json::Value) {
    let r = o.post("/v1/faults", body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injecting_more_than_f_faulty_replicas_or_nodes_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep, ids, marker(22)).await;

    assert_eq!(
        post_status(&o, r#"{"target":"kv-e0","kind":"corrupt-reply"}"#).await.0,
        201
    );
    // A second fault on the same replica keeps one replica faulty.
    assert_eq!(post_status(&o, r#"{"target":"kv-e0","kind":"slow"}"#).await.0, 201);
    // A second replica of kv would make f+1 = 2 matching wrong answers possible.
    let (status, v) = post_status(&o, r#"{"target":"kv-e1","kind":"corrupt-reply"}"#).await;
    assert_eq!(status, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("f = 1") && e.contains("force"), "{e}");
    assert_eq!(o.get_json("/v1/faults").await.as_array().unwrap().len(), 2);
    let (status, v) = post_status(&o, r#"{"target":"kv-e1","kind":"corrupt-reply","force":true}"#).await;
    assert_eq!(status, 201, "{v}");

    // The same for agreement nodes.
    assert_eq!(post_status(&o, r#"{"target":"a0","kind":"crash"}"#).await.0, 201);
    let (status, v) = post_status(&o, r#"{"target":"a1","kind":"mute"}"#).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("f = 1"), "{v}");
    assert_eq!(
        post_status(&o, r#"{"target":"a1","kind":"mute","force":true}"#).await.0,
        201
    );
    // `force` must be a boolean.
    assert_eq!(
        post_status(&o, r#"{"target":"a2","kind":"mute","force":"yes"}"#)
            .await
            .0,
        400
    );
    o.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_keeps_its_token_out_of_urls_and_local_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep, ids, marker(23)).await;
    let html = o
        .http
        .get(format!("{}/", o.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("localStorage"), "the token outlives the tab");
    assert!(!html.contains("location.search"), "the token is read from the URL");
    assert!(html.contains("sessionStorage"));
    o.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_fencing_is_an_explicit_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let t = zz_orchestrator::controller::Tuning {
        silence_ms: 300,
        silence_fencing: true,
        ..tuning()
    };
    let mut o = start_tuned(dir.path(), dep, ids, marker(24), t).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let e1 = Principal::Replica(replica(1));
    let (_rx, mut tx) = o.connect(e1).await;
    o.wait_event("link-up", Some("kv-e1")).await;
    tx.send(&Msg::Heartbeat(o.id(e1).sign(heartbeat(e1, 7)))).await.unwrap();
    o.wait_replicas("kv-e1 fenced on silence", |v| v[1]["generation"] == 2)
        .await;
    o.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_faults_do_not_fence_a_replacement_that_never_executed() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep, ids, marker(25)).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let mut nodes = Vec::new();
    for n in 0..2u16 {
        let who = Principal::Node(NodeId(n));
        let (_rx, tx) = o.connect(who).await;
        nodes.push((n, o.id(who), tx, _rx));
    }
    let fault = |n: u16, seq: u64| Fault {
        node: NodeId(n),
        replica: replica(1),
        seq,
        certified_digest: Digest::ZERO,
        their_digest: Some(Digest([1; 32])),
    };
    for (n, id, tx, _) in &mut nodes {
        tx.send(&Msg::Fault(id.sign(fault(*n, 5)))).await.unwrap();
    }
    o.wait_replicas("kv-e1 replaced", |v| v[1]["generation"] == 2).await;
    // The replacement syncs and is paused as the standby, never woken.
    o.wait_replicas("kv-e1 standby", |v| v[1]["state"] == "paused").await;
    // Votes about the fenced instance's lies at a later seq, slower than
    // the nodes' heartbeats (none here): the tracker cannot tell them from
    // votes about the new instance, but that one has executed nothing.
    for (n, id, tx, _) in &mut nodes {
        tx.send(&Msg::Fault(id.sign(fault(*n, 9)))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = o.replica("kv-e1").await;
    assert_eq!(r["generation"], 2, "a replacement that never executed was fenced: {r}");
    o.wait_event("fault-ignored", Some("kv-e1")).await;
    o.shutdown().await;
}
