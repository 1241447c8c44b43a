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
    // No node heartbeats here, so the tracker's boundary never settles:
    // the controller's own window for late votes must cover the test.
    let t = zz_orchestrator::controller::Tuning {
        late_fault_ms: 600_000,
        ..tuning()
    };
    let mut o = start_tuned(dir.path(), dep, ids, marker(25), t).await;
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

/// Reads `rx` until a replica key announcement arrives (or panics after 5 s).
async fn next_replica_key(rx: &mut zz_wire::frame::LinkReader) -> zz_wire::Signed<zz_wire::ReplicaKey> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no replica key announcement within 5 s")
            .unwrap()
            .expect("link closed");
        if let Msg::ReplicaKey(k) = msg {
            return *k;
        }
    }
}

/// Whether a link opened to the orchestrator with `id`'s key is taken as
/// `id`'s: its heartbeat (at `last_executed`) reaches the replica list.
async fn key_opens_a_link(o: &common::Orch, id: &zz_wire::Identity, last_executed: u64) -> bool {
    let s = tokio::net::TcpStream::connect(o.dep.orchestrator.addr).await.unwrap();
    let Ok((_, _rx, mut tx)) = zz_wire::frame::handshake(s, id, &o.dep.keyring(), Some(Principal::Orchestrator)).await
    else {
        return false;
    };
    let _ = tx
        .send(&Msg::Heartbeat(id.sign(heartbeat(id.who, last_executed))))
        .await;
    for _ in 0..20 {
        if o.replica("kv-e1").await["last_executed"] == last_executed {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Issue 25 item 4: a replacement gets a fresh key, announced (signed by the
/// orchestrator) to the nodes, and the fenced instance's key no longer opens
/// a link; a restarted orchestrator keeps the replacement's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_gets_a_fresh_key_and_the_fenced_instances_key_stops_counting() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep.clone(), ids.clone(), marker(23)).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let e1 = Principal::Replica(replica(1));
    let old = o.id(e1);
    let a0 = Principal::Node(NodeId(0));
    let (mut a0_rx, mut a0_tx) = o.connect(a0).await;
    let (_a1_rx, mut a1_tx) = o.connect(Principal::Node(NodeId(1))).await;
    for (n, tx) in [(0u16, &mut a0_tx), (1, &mut a1_tx)] {
        let who = Principal::Node(NodeId(n));
        let f = Fault {
            node: NodeId(n),
            replica: replica(1),
            seq: 5,
            certified_digest: Digest::ZERO,
            their_digest: Some(Digest([1; 32])),
        };
        tx.send(&Msg::Fault(o.id(who).sign(f))).await.unwrap();
    }
    o.wait_replicas("kv-e1 replaced", |v| v[1]["generation"] == 2).await;
    // A stolen copy of the fenced instance's key opens no link any more.
    assert!(
        !key_opens_a_link(&o, &old, 77).await,
        "the fenced instance's key still opens a link"
    );

    // The nodes are told the new key, and it is new.
    let k = next_replica_key(&mut a0_rx).await;
    k.verify(&dep.keyring()).expect("signed by the orchestrator");
    assert_eq!((k.body.replica, k.body.generation), (replica(1), 2));
    assert_ne!(
        k.body.public_key,
        old.public(),
        "the replacement reuses the fenced instance's key"
    );
    // The agent is started with it: key file (0600) and announcement.
    let key_file = dir.path().join("data/replica-keys/kv-e1-g2.key");
    let text = std::fs::read_to_string(&key_file).unwrap();
    let new = zz_wire::Identity::from_secret_hex(e1, &text).unwrap();
    assert_eq!(new.public(), k.body.public_key);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cert = std::fs::read_to_string(zz_wire::config::key_cert_path(&key_file)).unwrap();
    assert_eq!(zz_wire::config::parse_key_cert(&cert).unwrap(), k);

    // The replacement's key opens one.
    assert!(
        key_opens_a_link(&o, &new, 9).await,
        "the replacement's key opens no link"
    );

    // Restarted (its stand-in agents were stopped with it, so each replica
    // is provisioned anew), the orchestrator still refuses the first key
    // and tells a node that links kv-e1's newest.
    o.shutdown().await;
    let mut o = start(dir.path(), dep.clone(), ids, marker(23)).await;
    o.wait_replicas("kv-e1 provisioned again", |v| v[1]["generation"] == 3)
        .await;
    let (mut a2_rx, _a2_tx) = o.connect(Principal::Node(NodeId(2))).await;
    let k3 = loop {
        let k = next_replica_key(&mut a2_rx).await;
        if k.body.replica == replica(1) && k.body.generation == 3 {
            break k;
        }
    };
    assert!(![old.public(), new.public()].contains(&k3.body.public_key));
    assert!(
        !key_opens_a_link(&o, &old, 78).await,
        "after a restart the first key opens a link again"
    );
    o.shutdown().await;
}
