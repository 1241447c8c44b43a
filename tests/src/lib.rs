//! Harness for end-to-end tests: real binaries as child processes, talking
//! real TCP on loopback ports, in a temp dir. Every child is killed when the
//! harness is dropped, so a failing test leaves nothing running.

pub mod netns;
pub mod roles;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zz_agreement::client::{Client, ClientOptions};
use zz_wire::config::{generate, GenerateOptions};
use zz_wire::{Deployment, NodeId, Principal};

/// Directory holding the workspace's built binaries (`scripts/test.sh`
/// builds them first). Tests run from `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("ZZ_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target dir")
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --bins --workspace` (scripts/test.sh does)",
        p.display()
    );
    p
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub dep: Arc<Deployment>,
    pub config: PathBuf,
    children: Vec<(String, Child)>,
}

impl Cluster {
    /// A fresh deployment in a temp dir; nothing started yet.
    pub fn new(f: usize, apps: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = GenerateOptions::local(f, apps).expect("ports");
        let (dep, ids) = generate(&opts).expect("deployment");
        let config = dep.write(dir.path(), &ids).expect("write deployment");
        Cluster {
            dir,
            dep: Arc::new(dep),
            config,
            children: Vec::new(),
        }
    }

    pub fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn spawn(&mut self, name: &str, mut cmd: Command) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        self.children.push((name.to_string(), child));
    }

    pub fn start_node(&mut self, n: u16) {
        let mut cmd = Command::new(bin("zz-agreement"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--id")
            .arg(n.to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("a{n}")));
        self.spawn(&format!("a{n}"), cmd);
    }

    pub fn start_nodes(&mut self) {
        for n in 0..self.dep.n() {
            self.start_node(u16::try_from(n).expect("node id"));
        }
    }

    /// Starts `zz-agent` for a replica such as `kv-e0`, outside any orchestrator.
    pub fn start_agent(&mut self, replica: &str) {
        let mut cmd = Command::new(bin("zz-agent"));
        cmd.arg("--deployment")
            .arg(&self.config)
            .arg("--key")
            .arg(self.keys().join(format!("{replica}.key")))
            .arg("--replica")
            .arg(replica);
        self.spawn(replica, cmd);
    }

    /// `start_agent` with a key file of its own (a replacement's, beside
    /// its announcement `<key>.cert`).
    pub fn start_agent_with_key(&mut self, replica: &str, key: &std::path::Path) {
        let mut cmd = Command::new(bin("zz-agent"));
        cmd.arg("--deployment")
            .arg(&self.config)
            .arg("--key")
            .arg(key)
            .arg("--replica")
            .arg(replica);
        self.spawn(replica, cmd);
    }

    /// Kills a child by name (SIGKILL), as a crash would.
    pub fn kill(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.retain(|(n, _)| n != name);
    }

    pub fn client(&self, name: &str, timeout: Duration) -> Client {
        let who = self.dep.parse_principal(name).expect("client name");
        assert!(matches!(who, Principal::Client(_)));
        let id = self.dep.load_identity(&self.keys(), who).expect("client key");
        Client::start(
            self.dep.clone(),
            id,
            ClientOptions {
                timeout,
                ..ClientOptions::default()
            },
        )
        .expect("client")
    }

    pub fn node_log(&self, n: NodeId) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{n}.log"))).unwrap_or_default()
    }

    /// Prints every child's log; call before failing a test.
    pub fn dump_logs(&self) {
        for (name, _) in &self.children {
            let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- {name} (last lines)");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Retries `f` until it returns Some or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a `zz` subcommand run printed, and how it ended.
pub struct ZzRun {
    pub output: String,
    pub success: bool,
}

/// Runs the built `zz ARGS` in its own process group, stdout and stderr
/// into `log`; the whole group is killed if it outlives `limit` (a bench
/// that hangs must fail the test, not the CI job). `ZZ_*` tuning variables
/// of the caller's environment are not passed on, so runs are reproducible.
pub fn run_zz(args: &[&str], log: &Path, limit: Duration) -> ZzRun {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).expect("create the log file");
    let t = Instant::now();
    let mut child = Command::new(bin("zz"))
        .args(args)
        .env_remove("ZZ_AGENT_CATCHUP")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone the log file"))
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("start zz");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for zz") {
            break s;
        }
        if t.elapsed() > limit {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait();
            panic!(
                "zz {} did not finish in {limit:?}:\n{}",
                args.join(" "),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    println!(
        "zz {} ({:.1} s, {status}):\n{output}",
        args.join(" "),
        t.elapsed().as_secs_f64()
    );
    ZzRun {
        output,
        success: status.success(),
    }
}

/// Like [`run_zz`], and the run must succeed.
pub fn zz_ok(args: &[&str], log: &Path, limit: Duration) -> String {
    let r = run_zz(args, log, limit);
    assert!(r.success, "zz {} failed", args.join(" "));
    r.output
}

/// A JSON result file a bench wrote.
pub fn read_json(p: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

/// A numeric field of a bench result.
pub fn num(v: &serde_json::Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing or not a number in {v}"))
}

/// The data dir a bench run with `--keep` left, from its "data kept in DIR"
/// line.
pub fn kept_dir(output: &str) -> PathBuf {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("data kept in "))
        .unwrap_or_else(|| panic!("no 'data kept in' line:\n{output}"));
    PathBuf::from(line.trim())
}
