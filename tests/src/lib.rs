//! Harness for end-to-end tests: real binaries as child processes, talking
//! real TCP on loopback ports, in a temp dir. Every child is killed when the
//! harness is dropped, so a failing test leaves nothing running.

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
