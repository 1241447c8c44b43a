//! Agreement nodes killed with SIGKILL under load, at seeded random moments,
//! come back from their store (the `Durable` snapshot plus the write-ahead
//! records synced before each vote) and the cluster loses no acknowledged
//! write (issue 25, item 1; the fork itself is shown in the simulator's
//! `sim_restart`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zz_tests::{eventually, Cluster};
use zz_wire::{AppRequest, NodeId};

/// The log without its colour escapes (`ESC [ ... m`).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The `records=N` field of the node's "restoring" log line.
fn restored_records(log: &str) -> Option<u64> {
    let log = plain(log);
    let line = log.lines().find(|l| l.contains("restoring"))?;
    let field = line.split_whitespace().find_map(|w| w.strip_prefix("records="))?;
    field.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_under_load_restart_from_their_records_and_lose_no_write() {
    let seed: u64 = std::env::var("ZZ_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261206);
    println!("seed {seed} (replay with ZZ_TEST_SEED={seed})");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut c = Cluster::new(1, &["kv"]);
    c.start_nodes();
    c.start_agent("kv-e0");
    c.start_agent("kv-e1");
    let client = c.client("gateway", Duration::from_secs(20));
    let app = c.dep.app_by_name("kv").expect("kv app");

    // Writers put distinct keys once each: an acknowledged key must read
    // back its value; an unanswered one may or may not have been applied.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/kv/w{w}-{i}");
                let put = client
                    .call(app, AppRequest::new("PUT", &key, key.clone().into_bytes()))
                    .await;
                let ok = put.is_ok_and(|r| r.status == 200);
                acked.lock().expect("lock").insert(key, ok);
                i += 1;
            }
        }));
    }

    for round in 0..4 {
        let victim: u16 = rng.gen_range(0..4);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..800))).await;
        let name = format!("a{victim}");
        println!("round {round}: kill -9 {name}");
        c.kill(&name);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
        c.start_node(victim);
        let restored = eventually(Duration::from_secs(20), || {
            let log = c.node_log(NodeId(victim));
            async move { restored_records(&log) }
        })
        .await;
        if restored.is_none() {
            c.dump_logs();
            panic!("{name} did not restore from its store after kill -9");
        }
        println!("round {round}: {name} restored with {restored:?} records");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    let acked = acked.lock().expect("lock").clone();
    let answered = acked.values().filter(|ok| **ok).count();
    println!("{} PUTs, {answered} acknowledged", acked.len());
    assert!(answered > 20, "the cluster kept answering through the restarts");
    for (key, ok) in &acked {
        let got = client
            .call(app, AppRequest::new("GET", key, Vec::new()))
            .await
            .unwrap_or_else(|e| panic!("GET {key}: {e}"));
        match (ok, got.status) {
            (_, 200) => assert_eq!(got.body, key.as_bytes(), "{key} holds another value"),
            (false, 404) => {} // never answered: maybe not applied
            (true, s) => {
                c.dump_logs();
                panic!("acknowledged {key} reads back {s}");
            }
            (false, s) => panic!("GET {key}: {s}"),
        }
    }
}
