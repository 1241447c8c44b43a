//! An orchestrator on port 0 in a temp dir, with `/bin/sleep` as the agent
//! and fake agents / agreement nodes speaking real zz links.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use zz_orchestrator::backend::Launch;
use zz_orchestrator::controller::Tuning;
use zz_orchestrator::{run_with, OrchestratorConfig};
use zz_wire::config::generate;
use zz_wire::frame::{handshake, LinkReader, LinkWriter};
use zz_wire::{AppId, Deployment, GenerateOptions, Heartbeat, Identity, Principal, ReplicaId};

pub const TOKEN: &str = "test-token-123";

/// The deployment's first app.
pub const KV: AppId = AppId(0);

pub fn replica(index: u16) -> ReplicaId {
    ReplicaId { app: KV, index }
}

/// A heartbeat from `from` about KV at `last_executed`.
pub fn heartbeat(from: Principal, last_executed: u64) -> Heartbeat {
    Heartbeat {
        from,
        app: KV,
        view: 0,
        last_executed,
        last_checkpoint: 0,
        fetched_objects: 0,
        stale_objects: 0,
        time_ms: 0,
    }
}

pub struct Orch {
    pub dep: Deployment,
    pub ids: Vec<Identity>,
    pub url: String,
    pub http: reqwest::Client,
    /// The `sleep` argument that marks this orchestrator's children.
    pub marker: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn tuning() -> Tuning {
    Tuning {
        tick: Duration::from_millis(50),
        standby_grace_ms: 300,
        // Stand-in agents never heartbeat; keep them from being declared dead.
        startup_grace_ms: 600_000,
        ..Tuning::default()
    }
}

/// A deployment (f=1, app kv) written under `dir`.
pub fn deployment(dir: &Path) -> (Deployment, Vec<Identity>) {
    let opts = GenerateOptions::local(1, &["kv"]).unwrap();
    let (dep, ids) = generate(&opts).unwrap();
    dep.write(dir, &ids).unwrap();
    (dep, ids)
}

pub async fn start(dir: &Path, dep: Deployment, ids: Vec<Identity>, marker: u64) -> Orch {
    start_tuned(dir, dep, ids, marker, tuning()).await
}

pub async fn start_tuned(dir: &Path, dep: Deployment, ids: Vec<Identity>, marker: u64, tuning: Tuning) -> Orch {
    start_program(dir, dep, ids, marker, tuning, Path::new("/bin/sleep")).await
}

/// `start_tuned` with instances started as `<program> <marker>` (a stand-in
/// for `sleep`, such as a link to it that is not there yet).
pub async fn start_program(
    dir: &Path,
    dep: Deployment,
    ids: Vec<Identity>,
    marker: u64,
    tuning: Tuning,
    program: &Path,
) -> Orch {
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", admin.local_addr().unwrap());
    let links = TcpListener::bind(dep.orchestrator.addr).await.unwrap();
    let cfg = OrchestratorConfig {
        deployment: dep.clone(),
        deployment_path: dir.join("deployment.toml"),
        keys_dir: dir.join("keys"),
        data_dir: dir.join("data"),
        agent_bin: "/bin/false".into(),
        admin_token: Some(TOKEN.into()),
        active_replicas: None,
        refresh_when_busy: false,
        apps: None,
        on_apps: None,
    };
    let launch = Launch {
        program: program.to_path_buf(),
        args: vec![marker.to_string()],
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_with(cfg, launch, tuning, admin, links, async move {
        let _ = stopped.await;
    }));
    Orch {
        dep,
        ids,
        url,
        http: reqwest::Client::new(),
        marker: marker.to_string(),
        stop: Some(stop),
        task: Some(task),
    }
}

impl Orch {
    pub async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("orchestrator did not stop")
                .unwrap()
                .unwrap();
        }
    }

    pub fn id(&self, who: Principal) -> Identity {
        self.ids.iter().find(|i| i.who == who).unwrap().clone()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn replica(&self, name: &str) -> serde_json::Value {
        let all = self.get_json("/v1/replicas").await;
        all.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == name)
            .cloned()
            .unwrap()
    }

    /// Polls until `pred` holds on the replica list (or panics after 10 s).
    pub async fn wait_replicas(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        for _ in 0..200 {
            if pred(&self.get_json("/v1/replicas").await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}: {}", self.get_json("/v1/replicas").await);
    }

    pub async fn wait_event(&self, kind: &str, replica: Option<&str>) -> serde_json::Value {
        for _ in 0..200 {
            let evs = self.get_json("/v1/events?since=0").await;
            if let Some(e) = evs
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["kind"] == kind && replica.is_none_or(|r| e["replica"] == r))
            {
                return e.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {kind} event for {replica:?}");
    }

    /// Opens a zz link as `who` (a fake agent or agreement node).
    pub async fn connect(&self, who: Principal) -> (LinkReader, LinkWriter) {
        let me = self.id(who);
        let s = TcpStream::connect(self.dep.orchestrator.addr).await.unwrap();
        let (peer, r, w) = handshake(s, &me, &self.dep.keyring(), Some(Principal::Orchestrator))
            .await
            .unwrap();
        assert_eq!(peer, Principal::Orchestrator);
        (r, w)
    }
}

/// Live `sleep <marker>` processes (our stand-in agents), by pid.
pub fn children(marker: &str) -> Vec<u32> {
    let want = format!("/bin/sleep\0{marker}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            cmd == want.as_bytes() && !stat.contains(") Z ")
        })
        .collect()
}

/// A per-test marker: sleeps long enough, and distinct across tests.
pub fn marker(salt: u64) -> u64 {
    900_000 + u64::from(std::process::id() % 10_000) * 10 + salt
}
