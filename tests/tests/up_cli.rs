//! `zz up` as an operator runs it: a subprocess that prints its URLs, serves
//! the kv and bank apps through the gateway with the contract's status
//! codes, and on SIGINT stops every process it started.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::ZzUp;

/// How long `zz up` may take to stop after SIGINT (its own grace periods
/// are a few seconds per role).
const STOP_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_kv_and_bank_and_leaves_no_process_after_sigint() {
    let mut up = ZzUp::start();
    let http = support::http();
    up.wait_ready(&http).await;

    kv_round_trip(&up, &http).await;
    bank_conserves_money(&up, &http).await;

    // The scan must see what `zz up` started, or "nothing left" proves nothing.
    let running = up.descendants();
    let nodes = running.iter().filter(|p| p.cmdline.contains(" agreement ")).count();
    let agents = running.iter().filter(|p| p.cmdline.contains("zz-agent")).count();
    println!(
        "before SIGINT: {nodes} agreement nodes, {agents} agents, {} processes",
        running.len()
    );
    if nodes < 4 || agents < 4 {
        up.fail(format!(
            "expected 4 agreement nodes and at least 2 agents per app under zz up, found:\n{}",
            list(&running)
        ));
    }

    let status = up.interrupt(STOP_LIMIT);
    if !status.success() {
        up.fail(format!("zz up exited with {status} after SIGINT"));
    }
    // Children killed without a wait may take a moment to disappear.
    let start = Instant::now();
    let mut left = up.descendants();
    while !left.is_empty() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
        left = up.descendants();
    }
    if !left.is_empty() {
        up.fail(format!("processes left behind after zz up exited:\n{}", list(&left)));
    }
    if !up.stdout_lines().iter().any(|l| l.trim() == "stopped") {
        up.fail("zz up did not print `stopped`");
    }
}

async fn kv_round_trip(up: &ZzUp, http: &reqwest::Client) {
    let url = up.gateway_url("/kv/greeting");
    up.expect(http.put(&url).body("hello, zz"), "kv PUT", 200).await;
    let got = up.expect(http.get(&url), "kv GET", 200).await;
    if got != "hello, zz" {
        up.fail(format!("kv GET returned {got:?}, expected the PUT body"));
    }
    up.expect(http.delete(&url), "kv DELETE", 204).await;
    up.expect(http.get(&url), "kv GET after DELETE", 404).await;
    up.expect(http.delete(&url), "kv DELETE of a missing key", 404).await;
}

async fn bank_conserves_money(up: &ZzUp, http: &reqwest::Client) {
    let accounts = up.gateway_url("/bank/accounts");
    let transfer = up.gateway_url("/bank/transfer");
    for (id, balance) in [("alice", 100), ("bob", 50)] {
        let body = json!({ "id": id, "balance": balance });
        up.expect(http.post(&accounts).json(&body), &format!("create {id}"), 201)
            .await;
    }
    let ok = json!({ "from": "alice", "to": "bob", "amount": 30 });
    up.expect(http.post(&transfer).json(&ok), "transfer 30 alice→bob", 200)
        .await;
    let overdraw = json!({ "from": "bob", "to": "alice", "amount": 1000 });
    up.expect(http.post(&transfer).json(&overdraw), "overdraw bob", 409)
        .await;

    for (id, want) in [("alice", 70), ("bob", 80)] {
        let body = up
            .expect(
                http.get(up.gateway_url(&format!("/bank/accounts/{id}"))),
                "balance",
                200,
            )
            .await;
        let v = parse(up, &body);
        if v["id"] != id || v["balance"] != want {
            up.fail(format!("account {id}: expected balance {want}, got {body}"));
        }
    }
    let audit = up.expect(http.get(up.gateway_url("/bank/audit")), "audit", 200).await;
    let v = parse(up, &audit);
    if v["accounts"] != 2 || v["total"] != 150 {
        up.fail(format!("audit: expected 2 accounts holding 150 in total, got {audit}"));
    }
}

fn parse(up: &ZzUp, body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| up.fail(format!("not JSON ({e}): {body:?}")))
}

fn list(procs: &[support::Proc]) -> String {
    procs
        .iter()
        .map(|p| format!("  pid {} (ppid {}): {}", p.pid, p.ppid, p.cmdline))
        .collect::<Vec<_>>()
        .join("\n")
}
