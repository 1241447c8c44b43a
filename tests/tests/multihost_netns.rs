//! Every role on a host of its own: the four agreement nodes, the
//! orchestrator (with its replicas as child processes) and the gateway each
//! run in a network namespace with its own address on a bridge the test
//! makes (`zz_tests::netns`), from a deployment written by `zz keygen`, with
//! the command lines of the systemd units keygen wrote for that host (paths
//! moved into the test's temp dir). Nothing uses loopback: every link,
//! every agent's dial and every HTTP request crosses the bridge.
//!
//! Drives kv and bank through the gateway, injects a corrupt-reply fault
//! into an active kv replica, checks every answer and that the app heals,
//! then tears the hosts down and checks nothing is left.
//!
//! Needs root and iproute2; skipped without them unless `CI=true` or
//! `ZZ_REQUIRE_NETNS=1`.

use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};
use zz_tests::netns::{self, Host, Lab};
use zz_tests::roles::{count, healed, spawn, summary, Api, Roles};

/// Nodes, orchestrator and gateway up, replicas active, first answer.
const READY: Duration = Duration::from_secs(120);
/// The corrupted replica fenced and replaced, the app back to 2 + 1.
const HEAL: Duration = Duration::from_secs(120);
const NODE_PORT: u16 = 7100;
const ORCH_PORT: u16 = 7090;
const ADMIN_PORT: u16 = 7070;
const GATEWAY_PORT: u16 = 8080;

/// The `ExecStart=` of a unit keygen wrote, as words (keygen quotes nothing).
fn exec_start(unit: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(unit).unwrap_or_else(|e| panic!("{}: {e}", unit.display()));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{}: no ExecStart", unit.display()));
    line.split_whitespace().map(str::to_string).collect()
}

/// A unit's command with the host's paths moved into the test's dirs:
/// `/usr/local/bin/zz` is the built binary, `/etc/zz/` the host's tree from
/// keygen, `/var/lib/zz/` the host's data dir.
fn localize(words: Vec<String>, tree: &Path, data: &Path) -> Vec<String> {
    words
        .into_iter()
        .map(|w| {
            if w == "/usr/local/bin/zz" {
                zz_tests::bin("zz").display().to_string()
            } else if let Some(rest) = w.strip_prefix("/etc/zz/") {
                tree.join("etc/zz").join(rest).display().to_string()
            } else if let Some(rest) = w.strip_prefix("/var/lib/zz/") {
                data.join(rest).display().to_string()
            } else {
                w
            }
        })
        .collect()
}

/// Replaces the value after `flag` (which must be there).
fn set(words: &mut [String], flag: &str, value: String) {
    let i = words
        .iter()
        .position(|w| w == flag)
        .unwrap_or_else(|| panic!("{flag} not in {words:?}"));
    words[i + 1] = value;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_on_separate_hosts_serve_kv_and_bank_through_a_replica_fault() {
    if let Some(why) = netns::unavailable() {
        if netns::required() {
            panic!("network namespaces are required here (CI=true or ZZ_REQUIRE_NETNS=1) but: {why}");
        }
        eprintln!("skipping: {why}");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("zz-netns-")
        .tempdir()
        .expect("temp dir");
    let mut lab = Lab::new().expect("bridge");
    let lab_pid = lab.pid();
    let orch = lab.host("orch", 10).expect("orchestrator host");
    let nodes: Vec<Host> = (0..4u8)
        .map(|i| lab.host(&format!("a{i}"), 11 + i).expect("node host"))
        .collect();
    let gw = lab.host("gw", 20).expect("gateway host");
    let at = |a: Ipv4Addr, port: u16| format!("{a}:{port}");

    let dep = tmp.path().join("dep");
    let node_list: Vec<String> = nodes.iter().map(|h| at(h.addr, NODE_PORT)).collect();
    let out = std::process::Command::new(zz_tests::bin("zz"))
        .arg("keygen")
        .arg("--out")
        .arg(&dep)
        .args(["--f", "1", "--apps", "kv,bank", "--unit-backend", "process"])
        .args(["--orchestrator", &at(orch.addr, ORCH_PORT)])
        .args(["--nodes", &node_list.join(",")])
        .output()
        .expect("zz keygen");
    assert!(
        out.status.success(),
        "zz keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let tree = |h: &Host| dep.join("hosts").join(h.addr.to_string());
    let data = |h: &Host| {
        let d = tmp.path().join("data").join(h.addr.to_string());
        std::fs::create_dir_all(&d).expect("data dir");
        d
    };
    let units = |h: &Host| tree(h).join("etc/systemd/system");

    let mut roles = Roles(Vec::new());
    for (i, h) in nodes.iter().enumerate() {
        let words = localize(
            exec_start(&units(h).join(format!("zz-agreement-a{i}.service"))),
            &tree(h),
            &data(h),
        );
        roles.0.push(spawn(h, &format!("a{i}"), &words, &logs));
    }
    // The orchestrator's unit keeps the admin API on its host's loopback;
    // here the gateway is on another host, so the API listens on the
    // orchestrator's address (README, "Multi-host": open 7070 to it).
    let orch_data = data(&orch);
    let mut words = localize(
        exec_start(&units(&orch).join("zz-orchestrator.service")),
        &tree(&orch),
        &orch_data,
    );
    set(&mut words, "--admin", at(orch.addr, ADMIN_PORT));
    roles.0.push(spawn(&orch, "orchestrator", &words, &logs));

    let token_file = orch_data.join("orchestrator/admin.token");
    let started = Instant::now();
    roles.wait_for_file(&token_file, started, READY).await;
    // The gateway reads the orchestrator host's tree and token (copied to
    // its host, in a real deployment) and the admin API across the bridge.
    let mut words = localize(
        exec_start(&units(&orch).join("zz-gateway.service")),
        &tree(&orch),
        &orch_data,
    );
    set(
        &mut words,
        "--apps-from",
        format!("http://{}", at(orch.addr, ADMIN_PORT)),
    );
    roles.0.push(spawn(&gw, "gateway", &words, &logs));

    let api = Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client"),
        admin: format!("http://{}", at(orch.addr, ADMIN_PORT)),
        gateway: format!("http://{}", at(gw.addr, GATEWAY_PORT)),
        token: std::fs::read_to_string(&token_file).expect("token").trim().to_string(),
    };

    // Ready: two active replicas per app, then a certified answer.
    loop {
        roles.check_alive();
        let last = match api.replicas().await {
            Ok(rs) if count(&rs, "kv", "active") >= 2 && count(&rs, "bank", "active") >= 2 => {
                match api.send(api.http.put(api.gw("/kv/__ready")).body("1")).await {
                    Ok((200, _)) => break,
                    Ok((s, b)) => format!("probe PUT: {s} {b}"),
                    Err(e) => format!("probe PUT: {e}"),
                }
            }
            Ok(rs) => summary(&rs),
            Err(e) => e,
        };
        assert!(started.elapsed() < READY, "not ready within {READY:?}; last: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("ready after {:.1} s", started.elapsed().as_secs_f64());

    // kv and bank before the fault.
    for i in 0..5 {
        let url = api.gw(&format!("/kv/k{i}"));
        api.expect(api.http.put(&url).body(format!("v{i}")), "kv PUT", 200)
            .await;
        assert_eq!(api.expect(api.http.get(&url), "kv GET", 200).await, format!("v{i}"));
    }
    for (id, balance) in [("alice", 100), ("bob", 50)] {
        api.expect(
            api.http
                .post(api.gw("/bank/accounts"))
                .json(&json!({"id": id, "balance": balance})),
            "create account",
            201,
        )
        .await;
    }

    // A corrupt-reply fault in an active kv replica.
    let before = api.replicas().await.expect("replicas");
    let victim = before
        .iter()
        .find(|r| r["app"] == "kv" && r["state"] == "active")
        .expect("an active kv replica")
        .clone();
    let victim_id = victim["id"].as_str().expect("id").to_string();
    let victim_gen = victim["generation"].as_u64().expect("generation");
    api.expect(
        api.http
            .post(format!("{}/v1/faults", api.admin))
            .bearer_auth(&api.token)
            .json(&json!({"target": victim_id, "kind": "corrupt-reply"})),
        "inject corrupt-reply",
        201,
    )
    .await;
    println!("injected corrupt-reply into {victim_id} (generation {victim_gen})");

    // Every answer is right while the app heals; an unanswered request
    // (timeout, 503) may or may not have been applied, so its key is not
    // read back as a certainty.
    let fault_at = Instant::now();
    // Transfers of 1 from alice's 100: answered ones certainly moved,
    // unanswered ones maybe.
    const MAX_TRANSFERS: u64 = 60;
    let (mut moved, mut tried) = (0u64, 0u64);
    let mut i = 0u64;
    let back = loop {
        roles.check_alive();
        i += 1;
        let url = api.gw(&format!("/kv/after{i}"));
        let put = api.send(api.http.put(&url).body(format!("w{i}"))).await;
        if let Ok((200, _)) = put {
            let got = api.send(api.http.get(&url)).await;
            match got {
                Ok((200, body)) => assert_eq!(body, format!("w{i}"), "kv GET after{i} during the fault"),
                Ok((503, _)) | Err(_) => {}
                Ok((s, body)) => panic!("kv GET after{i}: {s} {body:?}"),
            }
        }
        if tried < MAX_TRANSFERS {
            tried += 1;
            let transfer = json!({"from": "alice", "to": "bob", "amount": 1});
            match api.send(api.http.post(api.gw("/bank/transfer")).json(&transfer)).await {
                Ok((200, _)) => moved += 1,
                Ok((503, _)) | Err(_) => {}
                Ok((s, body)) => panic!("transfer: {s} {body:?}"),
            }
        }
        let rs = api.replicas().await.unwrap_or_default();
        if healed(&rs, "kv", &victim_id, victim_gen) {
            break rs;
        }
        assert!(
            fault_at.elapsed() < HEAL,
            "kv not healed within {HEAL:?} of the fault: {}",
            summary(&rs)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "healed {:.1} s after the fault: {}",
        fault_at.elapsed().as_secs_f64(),
        summary(&back)
    );

    // What was written before the fault is intact; the bank conserved money.
    for i in 0..5 {
        assert_eq!(
            api.expect(api.http.get(api.gw(&format!("/kv/k{i}"))), "kv GET", 200)
                .await,
            format!("v{i}")
        );
    }
    let audit: Value =
        serde_json::from_str(&api.expect(api.http.get(api.gw("/bank/audit")), "audit", 200).await).expect("audit JSON");
    assert_eq!(audit["total"], 150, "bank total after the fault: {audit}");
    let alice: Value = serde_json::from_str(
        &api.expect(api.http.get(api.gw("/bank/accounts/alice")), "alice", 200)
            .await,
    )
    .expect("account JSON");
    let alice = alice["balance"].as_u64().expect("balance");
    assert!(
        (100 - tried..=100 - moved).contains(&alice),
        "alice has {alice}: {moved} transfers of 1 were answered, {tried} sent"
    );
    let incidents = api.get_json("/v1/incidents").await.expect("incidents");
    assert!(
        incidents.as_array().is_some_and(|a| !a.is_empty()),
        "no incident recorded for the fault: {incidents}"
    );

    // Tear-down: the hosts go, with everything that ran on them.
    drop(roles);
    drop(lab);
    let left = Lab::leftovers(lab_pid);
    assert!(left.is_empty(), "namespaces or bridge left after tear-down: {left:?}");
    let tmp_path = tmp.path().display().to_string();
    let strays: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&tmp_path))
        .collect();
    assert!(strays.is_empty(), "processes left after tear-down: {strays:?}");
}
