//! Shared by the `zz up` end-to-end tests (`up_cli`, `dashboard_chromium`):
//! runs `zz up` in its own process group with a temp data dir, parses the
//! URLs it prints, and finds every process it started, so a test can prove
//! that none is left behind and a failing test kills them all.

// Each test crate compiles this module and uses a different part of it.
#![allow(dead_code)]

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use reqwest::StatusCode;
use std::fmt::Display;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `zz up` must print its URLs within this long.
const STARTUP: Duration = Duration::from_secs(30);
/// Replicas must be active and the first request certified within this long.
const READY: Duration = Duration::from_secs(90);

/// An HTTP client that never goes through a proxy from the environment
/// (everything here is on loopback).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A running `zz up`. Dropping it kills its process group and anything else
/// whose command line names its data dir.
pub struct ZzUp {
    /// The data dir (`--data-dir`).
    pub dir: tempfile::TempDir,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub pid: u32,
    child: Child,
    exited: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr_path: PathBuf,
}

impl ZzUp {
    /// Starts `zz up --data-dir <tmp> --admin 127.0.0.1:0 --gateway 127.0.0.1:0`
    /// and waits for the URLs it prints.
    pub fn start() -> ZzUp {
        ZzUp::start_with_nofile(None)
    }

    /// `start`, with the open-file limit (soft and hard) of `zz up` and all
    /// it starts set to `nofile` (through the shell's `ulimit`, which then
    /// `exec`s `zz`, so the pid is `zz up`'s).
    pub fn start_with_nofile(nofile: Option<u64>) -> ZzUp {
        let dir = tempfile::Builder::new()
            .prefix("zz-up-e2e-")
            .tempdir()
            .expect("temp dir");
        // stderr (the tracing log) goes beside the data dir, not into it, so
        // `zz up` finds an empty data dir and writes a fresh deployment.
        let stderr_path = PathBuf::from(format!("{}.stderr", dir.path().display()));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = match nofile {
            None => Command::new(zz_tests::bin("zz")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(zz_tests::bin("zz"));
                c
            }
        };
        let mut child = cmd
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--admin", "127.0.0.1:0", "--gateway", "127.0.0.1:0"])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env_remove("ZZ_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            // Its own group: the test signals `zz up` alone, and a failing
            // test can still kill the whole tree at once.
            .process_group(0)
            .spawn()
            .expect("spawning zz up");
        let pid = child.id();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let lines = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().expect("stdout lines").push(line);
            }
        });
        let mut up = ZzUp {
            dir,
            gateway: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            pid,
            child,
            exited: None,
            stdout,
            stderr_path,
        };
        let start = Instant::now();
        loop {
            let printed = up.stdout_lines();
            let gw = printed.iter().find_map(|l| url_after(l, "gateway"));
            let admin = printed.iter().find_map(|l| url_after(l, "admin API"));
            if let (Some(gw), Some(admin)) = (gw, admin) {
                up.gateway = gw;
                up.admin = admin;
                println!(
                    "zz up (pid {pid}) in {}: gateway {gw}, admin {admin}",
                    up.dir.path().display()
                );
                return up;
            }
            if let Some(status) = up.try_exit() {
                up.fail(format!("zz up exited before printing its URLs: {status}"));
            }
            if start.elapsed() > STARTUP {
                up.fail(format!("zz up printed no gateway/admin URLs within {STARTUP:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn gateway_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn token(&self) -> String {
        let p = self.data_dir().join("admin.token");
        match std::fs::read_to_string(&p) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            other => self.fail(format!("no admin token in {}: {other:?}", p.display())),
        }
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lines").clone()
    }

    /// `GET /v1/replicas` as JSON.
    pub async fn replicas(&self, http: &reqwest::Client) -> Result<Vec<serde_json::Value>, String> {
        let r = http
            .get(self.admin_url("/v1/replicas"))
            .bearer_auth(self.token())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != StatusCode::OK {
            return Err(format!("GET /v1/replicas: {}", r.status()));
        }
        r.json().await.map_err(|e| e.to_string())
    }

    /// Waits until every app has at least `f + 1` active replicas and a kv
    /// request is certified end to end.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let start = Instant::now();
        let mut last: String;
        loop {
            match self.replicas(http).await {
                Ok(rs) if enough_active(&rs) => break,
                Ok(rs) => last = format!("replicas not yet active: {}", summarize(&rs)),
                Err(e) => last = e,
            }
            self.check_alive(&last);
            if start.elapsed() > READY {
                self.fail(format!("replicas not active within {READY:?}; last: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The first request may race the replicas' first connections;
        // a probe key keeps the test's own keys untouched.
        loop {
            match http.put(self.gateway_url("/kv/__ready")).body("1").send().await {
                Ok(r) if r.status() == StatusCode::OK => break,
                Ok(r) => last = format!("probe PUT: {} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = format!("probe PUT: {e}"),
            }
            self.check_alive(&last);
            if start.elapsed() > READY {
                self.fail(format!(
                    "no certified answer through the gateway within {READY:?}; last: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("ready after {:?}", start.elapsed());
    }

    /// Sends one request through any client and returns status and body,
    /// failing the test (with context) on a transport error.
    pub async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> (StatusCode, String) {
        match req.send().await {
            Ok(r) => {
                let status = r.status();
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => self.fail(format!("{what}: {e}")),
        }
    }

    /// Sends `req` and fails the test unless the status is `want`.
    pub async fn expect(&self, req: reqwest::RequestBuilder, what: &str, want: u16) -> String {
        let (status, body) = self.send(req, what).await;
        if status.as_u16() != want {
            self.fail(format!("{what}: expected {want}, got {status} {body:?}"));
        }
        body
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    fn check_alive(&mut self, last: &str) {
        if let Some(status) = self.try_exit() {
            self.fail(format!("zz up exited ({status}); last: {last}"));
        }
    }

    /// Sends SIGINT to `zz up` alone (not its group: stopping the children
    /// is its job) and waits up to `limit` for it to exit.
    pub fn interrupt(&mut self, limit: Duration) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.pid).expect("pid"));
        if let Err(e) = kill(pid, Signal::SIGINT) {
            self.fail(format!("SIGINT to zz up: {e}"));
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                println!("zz up exited {status} {:?} after SIGINT", start.elapsed());
                return status;
            }
            if start.elapsed() > limit {
                self.fail(format!("zz up still running {limit:?} after SIGINT"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Processes `zz up` started (other than itself): those whose command
    /// line names the data dir, or whose parent chain leads to `zz up`.
    pub fn descendants(&self) -> Vec<Proc> {
        let root = self.exited.is_none().then_some(self.pid);
        let needle = self.data_dir().to_string_lossy().into_owned();
        processes()
            .into_iter()
            .filter(|p| p.pid != self.pid)
            .filter(|p| p.cmdline.contains(&needle) || root.is_some_and(|r| p.has_ancestor(r)))
            .collect()
    }

    /// Everything useful when a test fails: what `zz up` printed and the
    /// tail of every log under the data dir.
    pub fn context(&self) -> String {
        let mut s = format!("==== zz up stdout\n{}\n", self.stdout_lines().join("\n"));
        s += &format!(
            "==== zz up stderr (tail) {}\n{}",
            self.stderr_path.display(),
            tail(&self.stderr_path, 60)
        );
        let logs = self.data_dir().join("logs");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&logs)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "log")) {
            s += &format!("==== {} (tail)\n{}", f.display(), tail(f, 30));
        }
        s
    }

    /// Prints the context and fails the test.
    pub fn fail(&self, msg: impl Display) -> ! {
        eprintln!("{}", self.context());
        panic!("{msg}");
    }
}

impl Drop for ZzUp {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            if let Ok(pid) = i32::try_from(self.pid) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = self.child.wait();
            self.exited = self.child.try_wait().ok().flatten();
        }
        // Anything that left the group (or outlived a crash) but still
        // names the data dir.
        kill_all(&self.descendants());
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// The address in a line such as `  gateway    http://127.0.0.1:8080/   e.g. ...`.
fn url_after(line: &str, label: &str) -> Option<SocketAddr> {
    let rest = line.trim_start().strip_prefix(label)?;
    let url = rest.split_whitespace().next()?.strip_prefix("http://")?;
    url.split('/').next()?.parse().ok()
}

fn enough_active(replicas: &[serde_json::Value]) -> bool {
    let mut per_app: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in replicas {
        let app = r["app"].as_str().unwrap_or("?");
        let n = per_app.entry(app).or_default();
        if r["state"] == "active" {
            *n += 1;
        }
    }
    // f = 1 (the `zz up` default): two active replicas per app.
    !per_app.is_empty() && per_app.values().all(|&n| n >= 2)
}

pub fn summarize(replicas: &[serde_json::Value]) -> String {
    replicas
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                r["id"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})\n"));
    let all: Vec<&str> = text.lines().collect();
    let mut s = all[all.len().saturating_sub(lines)..].join("\n");
    s.push('\n');
    s
}

/// One live (non-zombie) process from /proc.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub cmdline: String,
}

impl Proc {
    pub fn has_ancestor(&self, root: u32) -> bool {
        let mut ppid = self.ppid;
        // Bounded: a pid reused mid-scan could in theory form a cycle.
        for _ in 0..64 {
            if ppid == root {
                return true;
            }
            if ppid <= 1 {
                return false;
            }
            match stat(ppid) {
                Some((_, next)) => ppid = next,
                None => return false,
            }
        }
        false
    }
}

/// (state, ppid) from /proc/PID/stat; the command name may hold spaces and
/// parentheses, so parse after the last ')'.
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = s.get(s.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (state, ppid) = stat(pid)?;
            if state == 'Z' {
                return None;
            }
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_string();
            Some(Proc { pid, ppid, cmdline })
        })
        .collect()
}

pub fn kill_all(procs: &[Proc]) {
    for p in procs {
        if let Ok(pid) = i32::try_from(p.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
