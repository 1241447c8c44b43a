//! The admin API over real HTTP, with fake agents and agreement nodes on
//! real zz links, and `/bin/sleep` as the replicas.

mod common;

use common::{children, deployment, heartbeat, marker, replica, start, start_tuned, tuning, KV, TOKEN};
use futures::StreamExt;
use std::time::Duration;
use zz_wire::{ControlCmd, Digest, Fault, IncidentKind, Msg, NodeId, Principal, ReplicaFault, Resolved, Wake};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_validation_and_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep, ids, marker(1)).await;
    let c = &o.http;

    let health = c.get(format!("{}/v1/health", o.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    assert_eq!(c.get(format!("{}/", o.url)).send().await.unwrap().status(), 200);

    let none = c.get(format!("{}/v1/replicas", o.url)).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong = c
        .get(format!("{}/v1/replicas", o.url))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unauth_post = c
        .post(format!("{}/v1/faults", o.url))
        .body(r#"{"target":"kv-e1","kind":"crash"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unauth_post.status(), 401);

    for (body, why) in [
        ("{not json", "syntax"),
        (r#"{"target":"kv-e1","kind":"crash","extra":1}"#, "unknown field"),
        (r#"{"target":"kv-e9","kind":"crash"}"#, "unknown replica"),
        (r#"{"target":"zz","kind":"crash"}"#, "unknown target"),
        (r#"{"target":"kv-e1","kind":"explode"}"#, "unknown kind"),
        (r#"{"target":"kv-e1","kind":"equivocate"}"#, "node kind on a replica"),
        (r#"{"target":"a0","kind":"corrupt-reply"}"#, "replica kind on a node"),
        (r#"{"kind":"crash"}"#, "missing target"),
    ] {
        let r = o.post("/v1/faults", body).await;
        assert_eq!(r.status(), 400, "{why}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{why}: {v}");
    }
    assert_eq!(o.get("/v1/events?since=x").await.status(), 400);
    assert_eq!(o.get("/v1/events?sinse=1").await.status(), 400);

    for path in [
        "/v1/replicas/kv-e9/pause",
        "/v1/replicas/nope/wake",
        "/v1/replicas/a0/replace",
    ] {
        let r = o.post(path, "").await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    }
    let r = o
        .http
        .delete(format!("{}/v1/faults/999", o.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Waking an active replica is a conflict, not a silent success.
    o.wait_replicas("start-up", |v| {
        v.as_array().unwrap().iter().filter(|r| r["state"] == "active").count() == 2
    })
    .await;
    assert_eq!(o.post("/v1/replicas/kv-e0/wake", "").await.status(), 409);

    let cluster = o.get_json("/v1/cluster").await;
    assert_eq!(cluster["f"], 1);
    assert_eq!(cluster["apps"][0], "kv");
    assert_eq!(cluster["agreement"].as_array().unwrap().len(), 4);
    o.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_pause_wake_and_nothing_left_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep, ids, marker(2)).await;
    // e0, e1 active; e2 paused once its grace elapsed.
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let v = o.get_json("/v1/replicas").await;
    assert_eq!(v[0]["state"], "active");
    assert_eq!(v[1]["state"], "active");
    assert_eq!(v[0]["backend"], "process");
    assert_eq!(children(&o.marker).len(), 3);

    let r = o.post("/v1/replicas/kv-e2/wake", "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["state"], "waking");
    let r = o.post("/v1/replicas/kv-e1/hibernate", "").await;
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["state"], "hibernated");
    assert_eq!(children(&o.marker).len(), 2);
    let r = o.post("/v1/replicas/kv-e0/replace", "").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["generation"], 2);
    o.wait_event("fenced", Some("kv-e0")).await;

    o.shutdown().await;
    assert!(children(&o.marker).is_empty(), "children left after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_reach_a_connected_agent_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let keys = dep.keyring();
    let mut o = start(dir.path(), dep, ids, marker(3)).await;
    let e1 = Principal::Replica(replica(1));
    let (mut rx, mut tx) = o.connect(e1).await;
    o.wait_event("link-up", Some("kv-e1")).await;

    // Its heartbeat shows up in the inventory.
    let me = o.id(e1);
    tx.send(&Msg::Heartbeat(me.sign(heartbeat(e1, 42)))).await.unwrap();
    o.wait_replicas("heartbeat", |v| v[1]["last_executed"] == 42).await;
    // A heartbeat signed by e0 on e1's link is dropped.
    let e0 = Principal::Replica(replica(0));
    tx.send(&Msg::Heartbeat(o.id(e0).sign(heartbeat(e0, 99))))
        .await
        .unwrap();

    let r = o
        .post(
            "/v1/faults",
            r#"{"target":"kv-e1","kind":"corrupt-reply","duration_ms":300}"#,
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_u64().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Msg::Control(c) = got else {
        panic!("expected a control message, got {}", got.kind())
    };
    c.verify(&keys).unwrap();
    assert_eq!(c.body.target, e1);
    assert_eq!(c.body.cmd, ControlCmd::SetFault(ReplicaFault::CorruptReply));
    let faults = o.get_json("/v1/faults").await;
    assert_eq!(faults[0]["id"], id);
    assert_eq!(faults[0]["delivered"], true);

    // The duration elapses: cleared, with a larger nonce.
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Msg::Control(clear) = got else {
        panic!("expected a control message")
    };
    clear.verify(&keys).unwrap();
    assert_eq!(clear.body.cmd, ControlCmd::ClearFaults);
    assert!(clear.body.nonce > c.body.nonce);
    assert_eq!(o.get_json("/v1/faults").await, serde_json::json!([]));
    assert_eq!(o.replica("kv-e1").await["last_executed"], 42);

    // DELETE clears one by id.
    let r = o.post("/v1/faults", r#"{"target":"kv-e1","kind":"slow"}"#).await;
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_u64().unwrap();
    let _set = rx.recv().await.unwrap().unwrap();
    let r = o
        .http
        .delete(format!("{}/v1/faults/{id}", o.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let Msg::Control(c) = rx.recv().await.unwrap().unwrap() else {
        panic!("expected a control message")
    };
    assert_eq!(c.body.cmd, ControlCmd::ClearFaults);

    let metrics = o.http.get(format!("{}/metrics", o.url)).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    for series in [
        "zz_orchestrator_replicas{",
        "zz_orchestrator_wakes_total{",
        "zz_orchestrator_incidents_total{",
        "zz_orchestrator_recovery_ms",
        "zz_orchestrator_api_requests_total{",
        "zz_orchestrator_dropped_messages_total{",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    let wrong_author = text
        .lines()
        .find(|l| l.starts_with("zz_orchestrator_dropped_messages_total{reason=\"wrong-author\"}"))
        .unwrap();
    assert!(!wrong_author.ends_with(" 0"), "{wrong_author}");
    o.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_certificate_opens_an_incident_and_fault_certificate_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep, ids, marker(4)).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let mut nodes = Vec::new();
    for n in 0..3 {
        let who = Principal::Node(NodeId(n));
        let (_rx, tx) = o.connect(who).await;
        nodes.push((o.id(who), tx));
    }
    let wake = |n: u16| Wake {
        node: NodeId(n),
        app: KV,
        seq: 5,
        kind: IncidentKind::Mismatch,
    };
    // One node, even repeating itself, wakes nothing.
    for _ in 0..3 {
        let (id, tx) = &mut nodes[0];
        tx.send(&Msg::Wake(id.sign(wake(0)))).await.unwrap();
    }
    // a1 relays a WAKE signed by a0: not a vote of a1.
    {
        let relayed = Msg::Wake(nodes[0].0.sign(wake(0)));
        nodes[1].1.send(&relayed).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(o.get_json("/v1/incidents").await, serde_json::json!([]));
    assert_eq!(o.replica("kv-e2").await["state"], "paused");

    {
        let (id, tx) = &mut nodes[1];
        tx.send(&Msg::Wake(id.sign(wake(1)))).await.unwrap();
    }
    o.wait_replicas("e2 woken", |v| v[2]["state"] != "paused").await;
    let inc = o.get_json("/v1/incidents").await;
    assert_eq!(inc.as_array().unwrap().len(), 1);
    assert_eq!(inc[0]["seq"], 5);
    assert_eq!(inc[0]["kind"], "mismatch");
    assert!(inc[0]["woken"].as_u64().unwrap() >= inc[0]["detected_at"].as_u64().unwrap());
    assert!(inc[0]["certified_at"].is_null());
    eprintln!(
        "wake latency: first WAKE -> standby resumed = {} ms",
        inc[0]["woken"].as_u64().unwrap() - inc[0]["detected_at"].as_u64().unwrap()
    );

    for n in [0u16, 2] {
        let (id, tx) = &mut nodes[usize::from(n)];
        let r = Resolved {
            node: NodeId(n),
            app: KV,
            seq: 5,
        };
        tx.send(&Msg::Resolved(id.sign(r))).await.unwrap();
    }
    for n in [0u16, 2] {
        let (id, tx) = &mut nodes[usize::from(n)];
        let f = Fault {
            node: NodeId(n),
            replica: replica(1),
            seq: 5,
            certified_digest: Digest::ZERO,
            their_digest: Some(Digest([1; 32])),
        };
        tx.send(&Msg::Fault(id.sign(f))).await.unwrap();
    }
    o.wait_replicas("e1 replaced", |v| v[1]["generation"] == 2).await;
    // The replacement becomes the standby; e0 and e2 are the active pair.
    o.wait_replicas("e1 standby", |v| v[1]["state"] == "paused").await;
    let inc = o.get_json("/v1/incidents").await;
    assert!(inc[0]["certified_at"].as_u64().is_some());
    assert!(inc[0]["recovery_ms"].as_u64().is_some());
    assert_eq!(inc[0]["faulty"], serde_json::json!(["kv-e1"]));
    assert_eq!(inc[0]["replaced"], serde_json::json!(["kv-e1"]));

    // Issue 26: the same episode as the dashboard draws it.
    let id = inc[0]["id"].as_u64().unwrap();
    let t = o.get_json(&format!("/v1/incidents/{id}/timeline")).await;
    let phases: Vec<&str> = t["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    for p in ["detected", "woken", "certified", "fenced", "replaced"] {
        assert!(phases.contains(&p), "phase {p} missing: {t}");
    }
    let at: Vec<u64> = t["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["at_ms"].as_u64().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "phases in time order: {t}");
    assert_eq!(t["woken"], serde_json::json!(["kv-e2"]));
    assert_eq!(t["faulty"], serde_json::json!(["kv-e1"]));
    assert_eq!(o.get("/v1/incidents/999/timeline").await.status(), 404);
    assert_eq!(o.get("/v1/incidents/x/timeline").await.status(), 400);
    let series = o.get_json("/v1/series").await;
    let kv = series["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == "kv")
        .unwrap_or_else(|| panic!("no kv in {series}"));
    assert_eq!(kv["points"].as_array().unwrap().len(), 60);
    let kinds: Vec<&str> = kv["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    for k in ["incident", "woken", "certified", "fenced", "replaced"] {
        assert!(kinds.contains(&k), "marker {k} missing: {kinds:?}");
    }
    let unauth = o.http.get(format!("{}/v1/series", o.url)).send().await.unwrap();
    assert_eq!(unauth.status(), 401);
    o.shutdown().await;
    assert!(children(&o.marker).is_empty());
}

/// Issue 25 item 9: a WAKE certificate for a later seq of the same episode
/// joins the incident, which says so, instead of opening another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_certificates_of_one_episode_make_one_incident() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    // A window no test machine can outwait: the join does not race the clock.
    let t = zz_orchestrator::controller::Tuning {
        incident_quiet_ms: 600_000,
        ..tuning()
    };
    let mut o = start_tuned(dir.path(), dep, ids, marker(8), t).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let mut nodes = Vec::new();
    for n in 0..2 {
        let who = Principal::Node(NodeId(n));
        let (_rx, tx) = o.connect(who).await;
        nodes.push((o.id(who), tx));
    }
    for (seq, kind) in [(5, IncidentKind::Mismatch), (9, IncidentKind::Timeout)] {
        for n in 0..2u16 {
            let (id, tx) = &mut nodes[usize::from(n)];
            let w = Wake {
                node: NodeId(n),
                app: KV,
                seq,
                kind,
            };
            tx.send(&Msg::Wake(id.sign(w))).await.unwrap();
        }
        // RESOLVED votes that overtake the WAKE certificate on another
        // link are not counted: send them once the orchestrator acted.
        if seq == 9 {
            o.wait_event("incident-joined", None).await;
        } else {
            o.wait_event("incident-opened", None).await;
        }
        for n in 0..2u16 {
            let (id, tx) = &mut nodes[usize::from(n)];
            let r = Resolved {
                node: NodeId(n),
                app: KV,
                seq,
            };
            tx.send(&Msg::Resolved(id.sign(r))).await.unwrap();
        }
        o.wait_event("incident-certified", None).await;
    }
    let mut inc = o.get_json("/v1/incidents").await;
    for _ in 0..100 {
        // Joined (the event was seen), then certified again by seq 9.
        if inc[0]["last_seq"] == 9 && !inc[0]["certified_at"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        inc = o.get_json("/v1/incidents").await;
    }
    assert_eq!(inc.as_array().unwrap().len(), 1, "{inc}");
    assert_eq!(
        (inc[0]["seq"].as_u64(), inc[0]["last_seq"].as_u64()),
        (Some(5), Some(9))
    );
    assert_eq!(inc[0]["kind"], "mismatch");
    assert_eq!(inc[0]["coalesced"], 1);
    assert_eq!(inc[0]["kinds"], serde_json::json!(["mismatch", "timeout"]));
    assert!(inc[0]["recovery_ms"].as_u64().is_some());
    o.shutdown().await;
    assert!(children(&o.marker).is_empty());
}

async fn read_until<S>(body: &mut S, seen: &mut String, needle: &str)
where
    S: futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin,
{
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("no event in time")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_yields_backlog_and_live_events() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep, ids, marker(5)).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let resp = o.get("/v1/events/stream?since=0").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "\"kind\":\"paused\"").await;
    assert!(seen.contains("data: {\"seq\":1,"), "{seen}");
    // A live one.
    assert_eq!(o.post("/v1/replicas/kv-e0/pause", "").await.status(), 200);
    read_until(&mut body, &mut seen, "\"detail\":\"active -> paused: operator\"").await;
    o.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_events_and_reattaches_running_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep.clone(), ids.clone(), marker(6)).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    o.shutdown().await;

    // A "crashed" run left kv-e0 running: record it in the store by hand.
    let mut child = std::process::Command::new("/bin/sleep")
        .arg(marker(7).to_string())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start_ticks: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let store_path = dir.path().join("data/orchestrator.redb");
    let last_seq;
    {
        let store = zz_orchestrator::store::Store::open(&store_path).unwrap();
        let snap = store.load().unwrap();
        last_seq = snap.events.last().unwrap().seq;
        let mut rec = snap.replicas["kv-e0"].clone();
        assert_eq!(rec.state, zz_orchestrator::model::ReplicaState::Stopped);
        rec.state = zz_orchestrator::model::ReplicaState::Active;
        rec.handle = Some(zz_orchestrator::backend::Handle {
            name: "kv-e0".into(),
            generation: rec.generation,
            token: format!("{pid}:{start_ticks}"),
        });
        store.apply(&[zz_orchestrator::store::Change::Replica(rec)]).unwrap();
    }

    let mut o = start(dir.path(), dep, ids, marker(6)).await;
    let ev = o.wait_event("attached", Some("kv-e0")).await;
    assert!(ev["seq"].as_u64().unwrap() > last_seq, "event seqs restart: {ev}");
    // Earlier events are still served.
    let evs = o.get_json("/v1/events?since=0").await;
    assert_eq!(evs[0]["seq"], 1);
    let e0 = o.replica("kv-e0").await;
    assert_eq!(e0["state"], "active");
    assert_eq!(e0["generation"], 1, "re-attached, not re-provisioned");
    // The others were started afresh.
    assert_eq!(o.replica("kv-e1").await["generation"], 2);
    o.shutdown().await;
    // Owned again: killed at shutdown.
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "re-attached replica survived shutdown");
    let _ = child.try_wait();
    assert!(children(&o.marker).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_both_active_replicas_are_fenced_a_replacement_restores_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    let mut o = start(dir.path(), dep, ids, marker(5)).await;
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let mut nodes = Vec::new();
    for n in 0..2 {
        let who = Principal::Node(NodeId(n));
        let (_rx, tx) = o.connect(who).await;
        nodes.push((o.id(who), tx));
    }
    // f+1 nodes blame both active replicas at once.
    for bad in [0u16, 1] {
        for (n, (id, tx)) in nodes.iter_mut().enumerate() {
            let f = Fault {
                node: NodeId(u16::try_from(n).unwrap()),
                replica: replica(bad),
                seq: 9,
                certified_digest: Digest::ZERO,
                their_digest: Some(Digest([1; 32])),
            };
            tx.send(&Msg::Fault(id.sign(f))).await.unwrap();
        }
    }
    o.wait_replicas("e0 and e1 replaced", |v| {
        v[0]["generation"] == 2 && v[1]["generation"] == 2
    })
    .await;
    // The one standby was woken; the first replacement ready makes f+1 again.
    o.wait_replicas("two active, one standby", |v| {
        let active = (0..3).filter(|i| v[*i]["state"] == "active").count();
        let paused = (0..3).filter(|i| v[*i]["state"] == "paused").count();
        active == 2 && paused == 1
    })
    .await;
    o.shutdown().await;
    assert!(children(&o.marker).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_instances_last_heartbeats_do_not_pass_its_replacement_off_as_a_synced_standby() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    // No grace: a standby is paused only once its own heartbeat shows it synced.
    let slow_grace = zz_orchestrator::controller::Tuning {
        standby_grace_ms: 600_000,
        ..tuning()
    };
    let mut o = start_tuned(dir.path(), dep, ids, marker(6), slow_grace).await;
    let hb = |o: &common::Orch, r: u16| {
        let who = Principal::Replica(replica(r));
        Msg::Heartbeat(o.id(who).sign(heartbeat(who, 0)))
    };
    let (_r2, mut e2) = o.connect(Principal::Replica(replica(2))).await;
    e2.send(&hb(&o, 2)).await.unwrap();
    o.wait_replicas("e2 paused", |v| v[2]["state"] == "paused").await;
    let (_r1, mut old_e1) = o.connect(Principal::Replica(replica(1))).await;
    old_e1.send(&hb(&o, 1)).await.unwrap();
    let mut nodes = Vec::new();
    for n in 0..2 {
        let who = Principal::Node(NodeId(n));
        let (_rx, tx) = o.connect(who).await;
        nodes.push((o.id(who), tx));
    }
    for (n, (id, tx)) in nodes.iter_mut().enumerate() {
        let f = Fault {
            node: NodeId(u16::try_from(n).unwrap()),
            replica: replica(1),
            seq: 9,
            certified_digest: Digest::ZERO,
            their_digest: Some(Digest([1; 32])),
        };
        tx.send(&Msg::Fault(id.sign(f))).await.unwrap();
    }
    o.wait_replicas("e1 replaced", |v| v[1]["generation"] == 2).await;
    // The fenced instance's link still delivers a heartbeat (it was in
    // flight): it says nothing about the replacement, which holds nothing.
    old_e1.send(&hb(&o, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(o.replica("kv-e1").await["state"], "provisioning");
    // The replacement's own link and heartbeat (with its own key) make it
    // the standby.
    let who = Principal::Replica(replica(1));
    let key = std::fs::read_to_string(dir.path().join("data/replica-keys/kv-e1-g2.key")).unwrap();
    let new = zz_wire::Identity::from_secret_hex(who, &key).unwrap();
    let s = tokio::net::TcpStream::connect(o.dep.orchestrator.addr).await.unwrap();
    let (_, _r1, mut new_e1) = zz_wire::frame::handshake(s, &new, &o.dep.keyring(), Some(Principal::Orchestrator))
        .await
        .unwrap();
    new_e1.send(&Msg::Heartbeat(new.sign(heartbeat(who, 0)))).await.unwrap();
    o.wait_replicas("e1 standby", |v| v[1]["state"] == "paused").await;
    o.shutdown().await;
    assert!(children(&o.marker).is_empty());
}
