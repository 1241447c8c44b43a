//! A tenant's Wasm app through `zz up` with real processes: refused when it
//! is not a valid, allowed component; deployed at run time through the
//! admin API; answering through the gateway; still answering correctly with
//! `corrupt-reply` in one of its active replicas (a standby woken); upgraded
//! to another component with its state kept; removed with its replicas. A
//! `zz gateway` apart from `zz up` routes the app while it is deployed.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::ZzUp;

/// An incident needs traffic, detection, f+1 WAKEs and the woken standby.
const INCIDENT_LIMIT: Duration = Duration::from_secs(60);

fn component(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn deploy_raw(up: &ZzUp, http: &reqwest::Client, name: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let (status, body) = up
        .send(
            http.post(up.admin_url(&format!("/v1/apps?name={name}")))
                .bearer_auth(up.token())
                .header("content-type", "application/wasm")
                .body(bytes),
            "POST /v1/apps",
        )
        .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

async fn apps(up: &ZzUp, http: &reqwest::Client) -> Vec<Value> {
    let body = up
        .expect(
            http.get(up.admin_url("/v1/apps")).bearer_auth(up.token()),
            "GET /v1/apps",
            200,
        )
        .await;
    serde_json::from_str(&body).unwrap_or_default()
}

/// `zz gateway --apps-from <admin URL>` on the deployment `zz up` wrote, as
/// the `bench` client (the `gateway` identity is `zz up`'s own gateway's).
struct StandaloneGateway {
    child: std::process::Child,
    base: String,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl StandaloneGateway {
    fn start(up: &ZzUp) -> StandaloneGateway {
        use std::io::BufRead as _;
        let dir = up.data_dir();
        let mut child = std::process::Command::new(zz_tests::bin("zz"))
            .arg("gateway")
            .arg("--config")
            .arg(dir.join("deployment.toml"))
            .args(["--listen", "127.0.0.1:0", "--client", "bench", "--apps-from"])
            .arg(up.admin_url(""))
            .arg("--token-file")
            .arg(dir.join("admin.token"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| up.fail(format!("spawning zz gateway: {e}")));
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (out, lines) = (child.stdout.take(), stdout.clone());
        std::thread::spawn(move || {
            for line in out
                .into_iter()
                .flat_map(|o| std::io::BufReader::new(o).lines().map_while(Result::ok))
            {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        let start = Instant::now();
        let base = loop {
            let printed = stdout.lock().map(|l| l.clone()).unwrap_or_default();
            if let Some(url) = printed.iter().find_map(|l| l.strip_prefix("gateway listening on ")) {
                break url.trim().to_string();
            }
            if let Ok(Some(status)) = child.try_wait() {
                up.fail(format!("zz gateway exited with {status}: {printed:?}"));
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                up.fail(format!("zz gateway printed no address within 30 s: {printed:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        println!("standalone gateway at {base}");
        StandaloneGateway { child, base, stdout }
    }

    /// GETs `path` until it answers `want` with a body that contains
    /// `saying` (20 s at most); the last answer otherwise.
    async fn poll_status(
        &self,
        http: &reqwest::Client,
        path: &str,
        want: StatusCode,
        saying: &str,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let got = match http.get(format!("{}{path}", self.base)).send().await {
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    if status == want && body.contains(saying) {
                        return Ok(());
                    }
                    format!("{status} {body}")
                }
                Err(e) => e.to_string(),
            };
            if start.elapsed() > Duration::from_secs(20) {
                let printed = self.stdout.lock().map(|l| l.clone()).unwrap_or_default();
                return Err(format!(
                    "GET {path} still answers {got} (wanted {want}); it printed {printed:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for StandaloneGateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `POST /counter/incr` until a certified answer; a 503 may have counted.
async fn incr(up: &ZzUp, http: &reqwest::Client) -> Option<u64> {
    let (status, body) = up.send(http.post(up.gateway_url("/counter/incr")), "incr").await;
    match status.as_u16() {
        200 => serde_json::from_str::<Value>(&body).ok()?["count"].as_u64(),
        503 => None,
        s => up.fail(format!("POST /counter/incr: {s} {body}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_app_is_deployed_survives_a_fault_and_keeps_its_state_across_an_upgrade() {
    let http = support::http();
    let mut up = ZzUp::start();
    up.wait_ready(&http).await;

    // Bad components are refused with the reason, and change nothing.
    let (s, b) = deploy_raw(&up, &http, "bad", b"\0asm\x01\0\0\0 nonsense".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or("")
            .contains("not a valid WebAssembly component"),
        "{b}"
    );
    let forbidden = component("execution-agent/tests/components/forbidden/forbidden.wasm");
    let (s, b) = deploy_raw(&up, &http, "bad", forbidden).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["error"].as_str().unwrap_or("").contains("wasi:filesystem"), "{b}");
    let wrong = component("execution-agent/tests/components/wrong-world/wrong-world.wasm");
    let (s, b) = deploy_raw(&up, &http, "bad", wrong).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["error"].as_str().unwrap_or("").contains("incoming-handler"), "{b}");
    let counter = component("examples/counter/counter.wasm");
    let (s, b) = deploy_raw(&up, &http, "kv", counter.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a built-in app's name is taken: {b}");
    let kinds: Vec<String> = apps(&up, &http)
        .await
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["name"].as_str().unwrap_or(""),
                a["kind"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(kinds, ["kv:builtin", "bank:builtin"]);

    // Deployed at run time: version 1, its replicas started.
    let (s, b) = deploy_raw(&up, &http, "counter", counter).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["version"], 1, "{b}");
    let app = apps(&up, &http).await.into_iter().find(|a| a["name"] == "counter");
    let app = app.unwrap_or_else(|| up.fail("counter not listed"));
    assert_eq!(app["kind"], "wasm");
    let replicas: Vec<String> = app["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    assert_eq!(replicas.len(), 3, "{app}");

    // Answers through the gateway, counting one by one.
    let mut count = 0u64;
    for _ in 0..10 {
        if let Some(n) = incr(&up, &http).await {
            assert!(n > count, "count went from {count} to {n}");
            count = n;
        }
    }
    assert!(count >= 1);

    // A gateway apart from the orchestrator routes the app too, once it
    // follows the admin API's list.
    let mut gateway = StandaloneGateway::start(&up);
    let through = gateway.poll_status(&http, "/counter/", StatusCode::OK, "count").await;
    if let Err(e) = through {
        up.fail(format!("the standalone gateway never routed counter: {e}"));
    }

    // corrupt-reply in an active replica: answers stay correct, a standby wakes.
    let rs = up.replicas(&http).await.unwrap_or_else(|e| up.fail(e));
    let target = rs
        .iter()
        .find(|r| replicas.iter().any(|n| r["id"] == n.as_str()) && r["state"] == "active")
        .and_then(|r| r["id"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| up.fail("no active counter replica"));
    up.expect(
        http.post(up.admin_url("/v1/faults"))
            .bearer_auth(up.token())
            .json(&serde_json::json!({"target": target, "kind": "corrupt-reply"})),
        "inject corrupt-reply",
        201,
    )
    .await;
    let start = Instant::now();
    let slot = app["slot"].as_str().unwrap_or("").to_string();
    loop {
        if let Some(n) = incr(&up, &http).await {
            assert!(
                n > count,
                "a wrong answer was certified: count went from {count} to {n}"
            );
            count = n;
        }
        let body = up
            .expect(
                http.get(up.admin_url("/v1/incidents")).bearer_auth(up.token()),
                "incidents",
                200,
            )
            .await;
        let incidents: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        let healed = incidents
            .iter()
            .any(|i| i["app"] == slot.as_str() && !i["certified_at"].is_null());
        if healed {
            break;
        }
        if start.elapsed() > INCIDENT_LIMIT {
            up.fail(format!(
                "no certified incident of {slot} within {INCIDENT_LIMIT:?}: {body}"
            ));
        }
    }
    println!("incident certified; count {count}");

    // Upgraded to the kv component: same keys, so it reads the counter.
    let kv = component("examples/kv/kv.wasm");
    let (s, body) = up
        .send(
            http.put(up.admin_url("/v1/apps/counter"))
                .bearer_auth(up.token())
                .header("content-type", "application/wasm")
                .body(kv),
            "PUT /v1/apps/counter",
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let b: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(b["version"], 2, "{b}");
    // The last answer may have been a 503 that counted: read what is there.
    let stored = loop {
        let r = http.get(up.gateway_url("/counter/count")).send().await;
        match r {
            Ok(r) if r.status() == StatusCode::OK => break r.bytes().await.unwrap_or_default(),
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => continue,
            Ok(r) => up.fail(format!("GET /counter/count after the upgrade: {}", r.status())),
            Err(e) => up.fail(format!("GET /counter/count: {e}")),
        }
    };
    let n = u64::from_le_bytes(stored.as_ref().try_into().unwrap_or_else(|_| up.fail("not 8 bytes")));
    assert!(n >= count, "the upgrade lost state: {n} < {count}");

    // Removed: gone from the list and from the gateway.
    up.expect(
        http.delete(up.admin_url("/v1/apps/counter")).bearer_auth(up.token()),
        "DELETE /v1/apps/counter",
        204,
    )
    .await;
    assert!(apps(&up, &http).await.iter().all(|a| a["name"] != "counter"));
    up.expect(http.get(up.gateway_url("/counter/count")), "GET after removal", 404)
        .await;
    if let Err(e) = gateway
        .poll_status(&http, "/counter/", StatusCode::NOT_FOUND, "no app named")
        .await
    {
        up.fail(format!("the standalone gateway still routes the removed app: {e}"));
    }
    gateway.stop();
    let rs = up.replicas(&http).await.unwrap_or_else(|e| up.fail(e));
    for r in rs.iter().filter(|r| replicas.iter().any(|n| r["id"] == n.as_str())) {
        assert_eq!(r["state"], "stopped", "{r}");
    }
}
