//! The gateway alone (`zz gateway`), with no agreement node running: the
//! answers it must give without the cluster (413, 404) and the one it must
//! give when the cluster is gone (503 with a JSON error, after its deadline).

use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The contract's body limit for a kv value.
const MAX_BODY: usize = 1 << 20;
/// The gateway's client deadline is 10 s; allow for a slow machine.
const DEADLINE_LIMIT: Duration = Duration::from_secs(30);

struct Gateway {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Child,
}

impl Gateway {
    fn start() -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("dep");
        let keygen = Command::new(zz_tests::bin("zz"))
            .arg("keygen")
            .arg("--out")
            .arg(&out)
            .output()
            .expect("running zz keygen");
        assert!(keygen.status.success(), "zz keygen failed: {keygen:?}");
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
        let mut child = Command::new(zz_tests::bin("zz"))
            .arg("gateway")
            .arg("--config")
            .arg(out.join("deployment.toml"))
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning zz gateway");
        let stdout = child.stdout.take().expect("piped stdout");
        // The first line names the bound address; later output is not needed.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(20));
        let addr = match &line {
            Ok(Some(Ok(l))) => l
                .strip_prefix("gateway listening on http://")
                .and_then(|a| a.trim().trim_end_matches('/').parse().ok()),
            _ => None,
        };
        let mut gw = Gateway {
            dir,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            child,
        };
        match addr {
            Some(a) => gw.addr = a,
            None => gw.fail(format!("zz gateway printed no address: {line:?}")),
        }
        gw
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn fail(&self, msg: impl std::fmt::Display) -> ! {
        eprintln!("==== gateway log\n{}", tail(&self.dir.path().join("gateway.log"), 40));
        panic!("{msg}");
    }

    /// Fails unless the response is `want` with a JSON `{"error": "<non-empty>"}` body.
    async fn expect_json_error(&self, resp: reqwest::Result<reqwest::Response>, what: &str, want: StatusCode) {
        let resp = match resp {
            Ok(r) => r,
            Err(e) => self.fail(format!("{what}: {e}")),
        };
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status != want {
            self.fail(format!("{what}: expected {want}, got {status} {body:?}"));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| self.fail(format!("{what}: body is not JSON ({e}): {body:?}")));
        if v["error"].as_str().is_none_or(str::is_empty) {
            self.fail(format!("{what}: no \"error\" string in {body}"));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_one_mib_is_413() {
    let gw = Gateway::start();
    let resp = http()
        .put(gw.url("/kv/big"))
        .body(vec![b'x'; MAX_BODY + 1])
        .send()
        .await;
    gw.expect_json_error(resp, "PUT of 1 MiB + 1 byte", StatusCode::PAYLOAD_TOO_LARGE)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_app_is_404_with_json_error() {
    let gw = Gateway::start();
    let http = http();
    gw.expect_json_error(
        http.get(gw.url("/nope/x")).send().await,
        "GET /nope/x",
        StatusCode::NOT_FOUND,
    )
    .await;
    gw.expect_json_error(
        http.put(gw.url("/nope/x")).body("v").send().await,
        "PUT /nope/x",
        StatusCode::NOT_FOUND,
    )
    .await;
}

/// No agreement node is running, so no answer can be certified: the gateway
/// must say so within its deadline. A body of exactly 1 MiB is within the
/// limit, so it too must reach the cluster (and time out), not be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cluster_is_503_with_json_error_within_the_deadline() {
    let gw = Gateway::start();
    let http = http();
    let start = Instant::now();
    let (small, full) = tokio::join!(
        tokio::time::timeout(DEADLINE_LIMIT, http.put(gw.url("/kv/x")).body("v").send()),
        tokio::time::timeout(
            DEADLINE_LIMIT,
            http.put(gw.url("/kv/full")).body(vec![b'x'; MAX_BODY]).send()
        ),
    );
    let elapsed = start.elapsed();
    println!("503s after {elapsed:?}");
    let (Ok(small), Ok(full)) = (small, full) else {
        gw.fail(format!("the gateway did not answer within {DEADLINE_LIMIT:?}"));
    };
    gw.expect_json_error(small, "PUT /kv/x with no cluster", StatusCode::SERVICE_UNAVAILABLE)
        .await;
    gw.expect_json_error(
        full,
        "PUT of exactly 1 MiB with no cluster",
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    // A 503 that comes at once would mean the gateway never tried.
    if elapsed < Duration::from_secs(1) {
        gw.fail(format!(
            "503 after only {elapsed:?}: the request cannot have been tried"
        ));
    }
}

/// A client that sends its headers and then only part of the body it
/// announced must not hold its connection (and a slot of the gateway's
/// connection cap) for ever: 408 with a JSON error once the body deadline
/// passes, then the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_body_is_408_and_closed_after_the_body_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start();
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"PUT /kv/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .expect("send half a request");
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    if tokio::time::timeout(DEADLINE_LIMIT, read).await.is_err() {
        gw.fail(format!(
            "a half-sent body held its connection for {DEADLINE_LIMIT:?}; got {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    let text = String::from_utf8_lossy(&got);
    println!("after {:?}: {text}", start.elapsed());
    if !text.starts_with("HTTP/1.1 408") || !text.contains("\"error\"") {
        gw.fail(format!("expected 408 with a JSON error, got {text:?}"));
    }
}
