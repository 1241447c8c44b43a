//! `zz up` supervises its agreement nodes as systemd would: a node killed
//! with SIGKILL comes back from its durable state, commits again, and the
//! restart is in the orchestrator's event log.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::ZzUp;

/// How long a killed node may take to be running again (the first backoff
/// is 100 ms; a debug build on a busy machine starts slowly).
const BACK_LIMIT: Duration = Duration::from_secs(20);
/// How long the restarted node may take to commit again.
const COMMIT_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agreement_node_is_restarted_commits_again_and_the_restart_is_an_event() {
    let mut up = ZzUp::start();
    let http = support::http();
    up.wait_ready(&http).await;

    let victim = "a1";
    // Some history first, so "committing again" means more than zero.
    for i in 0..5 {
        up.expect(
            http.put(up.gateway_url(&format!("/kv/before-{i}"))).body("x"),
            "kv PUT before the kill",
            200,
        )
        .await;
    }
    // Heartbeats carry commits to the orchestrator: wait until all show some.
    let start = Instant::now();
    loop {
        let nodes = cluster(&up, &http).await;
        if nodes.len() == 4 && nodes.iter().all(|n| n["last_committed"].as_u64().unwrap_or(0) > 0) {
            break;
        }
        if start.elapsed() > COMMIT_LIMIT {
            up.fail(format!("not every node reports a commit: {nodes:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old = node_pid(&up, victim).unwrap_or_else(|| up.fail(format!("no process for agreement node {victim}")));
    let killed_at_ms = wall_ms();
    kill(Pid::from_raw(i32::try_from(old).expect("pid")), Signal::SIGKILL).expect("SIGKILL the node");
    println!("killed {victim} (pid {old})");

    let start = Instant::now();
    let new = loop {
        match node_pid(&up, victim) {
            Some(p) if p != old => break p,
            _ => {}
        }
        if start.elapsed() > BACK_LIMIT {
            up.fail(format!(
                "agreement node {victim} not running again {BACK_LIMIT:?} after SIGKILL"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{victim} back as pid {new} after {:?}", start.elapsed());

    // Committing again: a heartbeat from its new life reports more than
    // any node had committed when it came back, with requests flowing.
    let target = cluster(&up, &http)
        .await
        .iter()
        .filter_map(|n| n["last_committed"].as_u64())
        .max()
        .unwrap_or(0);
    let start = Instant::now();
    let mut i = 0u64;
    loop {
        i += 1;
        let _ = http
            .put(up.gateway_url(&format!("/kv/after-restart-{i}")))
            .body("x")
            .send()
            .await;
        let nodes = cluster(&up, &http).await;
        let me = nodes.iter().find(|n| n["id"] == victim).cloned().unwrap_or_default();
        let fresh = me["last_heartbeat_ms"].as_u64().is_some_and(|t| t > killed_at_ms);
        if fresh && me["connected"] == true && me["last_committed"].as_u64().unwrap_or(0) > target {
            println!("{victim} committed {} (> {target})", me["last_committed"]);
            break;
        }
        if start.elapsed() > COMMIT_LIMIT {
            up.fail(format!(
                "{victim} not committing past {target} within {COMMIT_LIMIT:?}: {me}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let events = get(&up, &http, "/v1/events").await;
    let restarted: Vec<&Value> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "node-restarted")
        .collect();
    if !restarted
        .iter()
        .any(|e| e["detail"].as_str().is_some_and(|d| d.contains(victim)))
    {
        up.fail(format!("no node-restarted event for {victim} in {events}"));
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The pid of `zz agreement --id N` under this `zz up`.
fn node_pid(up: &ZzUp, node: &str) -> Option<u32> {
    let id = node.trim_start_matches('a');
    up.descendants()
        .into_iter()
        .find(|p| p.cmdline.contains(" agreement ") && p.cmdline.contains(&format!(" --id {id} ")))
        .map(|p| p.pid)
}

async fn get(up: &ZzUp, http: &reqwest::Client, path: &str) -> Value {
    let r = http
        .get(up.admin_url(path))
        .bearer_auth(up.token())
        .send()
        .await
        .unwrap_or_else(|e| up.fail(format!("GET {path}: {e}")));
    r.json()
        .await
        .unwrap_or_else(|e| up.fail(format!("GET {path}: not JSON: {e}")))
}

async fn cluster(up: &ZzUp, http: &reqwest::Client) -> Vec<Value> {
    get(up, http, "/v1/cluster").await["agreement"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}
