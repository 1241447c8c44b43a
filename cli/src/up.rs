//! `zz up` and the single-role commands (`agreement`, `orchestrator`, `keygen`).

use crate::gateway;
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use zz_agreement::client::{Client, ClientOptions};
use zz_wire::config::{generate, GenerateOptions};
use zz_wire::{Deployment, NodeId, Principal};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where replicas run: `process` (child processes, no hypervisor needed)
    /// or `libvirt` (virtual machines).
    #[arg(long, default_value = "process")]
    pub backend: String,
    /// Faults tolerated (3f+1 agreement nodes, 2f+1 replicas per app). Default 1.
    #[arg(long)]
    pub f: Option<usize>,
    /// Apps to host, comma-separated. Default kv,bank.
    #[arg(long, value_delimiter = ',')]
    pub apps: Option<Vec<String>>,
    /// Deployment, keys, stores, logs and the admin token live here.
    #[arg(long, default_value = "zz-data")]
    pub data_dir: PathBuf,
    /// Admin API and dashboard address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub admin: SocketAddr,
    /// Gateway (HTTP front door) address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: SocketAddr,
    /// Use this deployment file instead of the one in the data dir.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct OrchestratorArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// Store, token and replica logs; defaults to `orchestrator/` beside the config.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub admin: SocketAddr,
    #[arg(long, default_value = "process")]
    pub backend: String,
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

fn keys_dir(config: &Path) -> PathBuf {
    config.parent().map(|p| p.join("keys")).unwrap_or_else(|| PathBuf::from("keys"))
}

pub fn start_client(dep: &Arc<Deployment>, config: &Path, name: &str) -> anyhow::Result<Client> {
    let who = dep
        .parse_principal(name)
        .filter(|p| matches!(p, Principal::Client(_)))
        .with_context(|| format!("no client named {name:?} in the deployment"))?;
    let id = dep.load_identity(&keys_dir(config), who)?;
    Client::start(dep.clone(), id, ClientOptions::default())
}

pub fn agent_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("ZZ_AGENT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("zz-agent");
    if !p.exists() {
        anyhow::bail!(
            "zz-agent not found beside {} (build it with `cargo build --release --bins`, or set ZZ_AGENT_BIN)",
            exe.display()
        );
    }
    Ok(p)
}

pub fn keygen(
    out: &Path,
    f: usize,
    apps: &[String],
    nodes: Vec<SocketAddr>,
    orchestrator: Option<SocketAddr>,
) -> anyhow::Result<()> {
    if out.join("deployment.toml").exists() {
        anyhow::bail!("{} already holds a deployment; choose another --out", out.display());
    }
    let mut opts = GenerateOptions::local(f, &apps.iter().map(String::as_str).collect::<Vec<_>>())?;
    if !nodes.is_empty() {
        opts.node_addrs = nodes;
    }
    if let Some(o) = orchestrator {
        opts.orchestrator_addr = o;
    }
    let (dep, ids) = generate(&opts)?;
    let path = dep.write(out, &ids)?;
    println!("wrote {} and {} keys in {}", path.display(), ids.len(), out.join("keys").display());
    Ok(())
}

pub async fn agreement(config: &Path, id: u16, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dep = Deployment::load(config)?;
    let me = NodeId(id);
    let addr = dep
        .node_addr(me)
        .with_context(|| format!("node a{id} is not in {}", config.display()))?;
    let identity = dep.load_identity(&keys_dir(config), Principal::Node(me))?;
    let data_dir = data_dir.unwrap_or_else(|| {
        config
            .parent()
            .unwrap_or(Path::new("."))
            .join("nodes")
            .join(format!("a{id}"))
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    zz_agreement::node::run(
        zz_agreement::node::NodeConfig {
            deployment: Arc::new(dep),
            identity,
            data_dir,
        },
        listener,
        shutdown_signal(),
    )
    .await
}

fn orchestrator_config(config: &Path, dep: &Deployment, data_dir: PathBuf) -> anyhow::Result<zz_orchestrator::OrchestratorConfig> {
    Ok(zz_orchestrator::OrchestratorConfig {
        deployment: dep.clone(),
        deployment_path: config.to_path_buf(),
        keys_dir: keys_dir(config),
        data_dir,
        agent_bin: agent_bin()?,
        admin_token: std::env::var("ZZ_ADMIN_TOKEN").ok(),
    })
}

fn check_backend(b: &str) -> anyhow::Result<()> {
    match b {
        "process" => Ok(()),
        "libvirt" => anyhow::bail!("the libvirt backend is not available in this build yet; use --backend process"),
        other => anyhow::bail!("unknown backend {other:?}: expected process or libvirt"),
    }
}

pub async fn orchestrator(a: OrchestratorArgs) -> anyhow::Result<()> {
    check_backend(&a.backend)?;
    let dep = Deployment::load(&a.config)?;
    let data_dir = a
        .data_dir
        .unwrap_or_else(|| a.config.parent().unwrap_or(Path::new(".")).join("orchestrator"));
    let cfg = orchestrator_config(&a.config, &dep, data_dir)?;
    let admin = tokio::net::TcpListener::bind(a.admin).await.with_context(|| format!("binding {}", a.admin))?;
    let links = tokio::net::TcpListener::bind(dep.orchestrator.addr)
        .await
        .with_context(|| format!("binding {}", dep.orchestrator.addr))?;
    zz_orchestrator::run(cfg, admin, links, shutdown_signal()).await
}

/// Loads the deployment in the data dir, or writes a fresh one.
fn prepare_deployment(a: &UpArgs) -> anyhow::Result<(Deployment, PathBuf)> {
    if let Some(c) = &a.config {
        return Ok((Deployment::load(c)?, c.clone()));
    }
    let path = a.data_dir.join("deployment.toml");
    if path.exists() {
        let dep = Deployment::load(&path)?;
        if a.f.is_some_and(|f| f != dep.f) {
            anyhow::bail!(
                "{} holds a deployment with f={}; use another --data-dir for f={}",
                a.data_dir.display(),
                dep.f,
                a.f.unwrap_or_default()
            );
        }
        if let Some(apps) = &a.apps {
            let have: Vec<&str> = dep.apps.iter().map(|x| x.name.as_str()).collect();
            if apps.iter().map(String::as_str).ne(have.iter().copied()) {
                anyhow::bail!(
                    "{} holds a deployment with apps {}; use another --data-dir for {}",
                    a.data_dir.display(),
                    have.join(","),
                    apps.join(",")
                );
            }
        }
        return Ok((dep, path));
    }
    let apps = a.apps.clone().unwrap_or_else(|| vec!["kv".into(), "bank".into()]);
    for app in &apps {
        if !matches!(app.as_str(), "kv" | "bank") {
            anyhow::bail!("unknown app {app:?}: built-in apps are kv and bank");
        }
    }
    let f = a.f.unwrap_or(1);
    let opts = GenerateOptions::local(f, &apps.iter().map(String::as_str).collect::<Vec<_>>())?;
    let (dep, ids) = generate(&opts)?;
    dep.write(&a.data_dir, &ids)?;
    Ok((dep, path))
}

/// The agreement nodes run as child processes of `zz up`.
struct Nodes {
    children: Vec<Child>,
}

impl Nodes {
    fn spawn(dep: &Deployment, config: &Path, data_dir: &Path) -> anyhow::Result<Nodes> {
        let exe = std::env::current_exe()?;
        let logs = data_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut children = Vec::new();
        for n in dep.node_ids() {
            let log = std::fs::File::create(logs.join(format!("{n}.log")))?;
            let child = Command::new(&exe)
                .arg("agreement")
                .arg("--config")
                .arg(config)
                .arg("--id")
                .arg(n.0.to_string())
                .arg("--data-dir")
                .arg(data_dir.join("nodes").join(n.to_string()))
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting agreement node {n}"))?;
            children.push(child);
        }
        Ok(Nodes { children })
    }

    /// SIGTERM, then SIGKILL after a grace period; always reaps.
    async fn stop(mut self) {
        for c in &self.children {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for c in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(3), c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }
}

pub async fn up(a: UpArgs) -> anyhow::Result<()> {
    check_backend(&a.backend)?;
    std::fs::create_dir_all(&a.data_dir)?;
    let (dep, config) = prepare_deployment(&a)?;
    let dep = Arc::new(dep);
    let admin = tokio::net::TcpListener::bind(a.admin)
        .await
        .with_context(|| format!("binding the admin API to {} (use --admin)", a.admin))?;
    let gw_listener = tokio::net::TcpListener::bind(a.gateway)
        .await
        .with_context(|| format!("binding the gateway to {} (use --gateway)", a.gateway))?;
    let links = tokio::net::TcpListener::bind(dep.orchestrator.addr)
        .await
        .with_context(|| format!("binding the orchestrator link port {}", dep.orchestrator.addr))?;
    let admin_addr = admin.local_addr()?;
    let gw_addr = gw_listener.local_addr()?;

    let nodes = Nodes::spawn(&dep, &config, &a.data_dir)?;
    let stop = CancellationToken::new();
    let orch_cfg = orchestrator_config(&config, &dep, a.data_dir.clone())?;
    let orch = tokio::spawn(zz_orchestrator::run(orch_cfg, admin, links, stop.clone().cancelled_owned()));
    let client = start_client(&dep, &config, "gateway")?;
    let gw = tokio::spawn(gateway::serve(dep.clone(), client, gw_listener, stop.clone().cancelled_owned()));

    let apps: Vec<&str> = dep.apps.iter().map(|x| x.name.as_str()).collect();
    println!("zz is up: f={}, apps {}, backend {}", dep.f, apps.join(", "), a.backend);
    println!("  gateway    http://{gw_addr}/   e.g. curl -X PUT --data hello http://{gw_addr}/kv/greeting");
    println!("  admin API  http://{admin_addr}/v1/   token in {}", a.data_dir.join("admin.token").display());
    println!("  dashboard  http://{admin_addr}/");
    println!("  logs       {}", a.data_dir.join("logs").display());
    println!("Press Ctrl-C to stop.");

    let mut orch = orch;
    tokio::select! {
        _ = shutdown_signal() => println!("stopping..."),
        r = &mut orch => {
            stop.cancel();
            let _ = gw.await;
            nodes.stop().await;
            return match r {
                Ok(Ok(())) => Err(anyhow::anyhow!("the orchestrator stopped unexpectedly")),
                Ok(Err(e)) => Err(e.context("orchestrator failed")),
                Err(e) => Err(e.into()),
            };
        }
    }
    stop.cancel();
    let _ = gw.await;
    // The orchestrator kills and reaps its replicas before returning.
    if let Ok(Err(e)) = orch.await {
        tracing::error!(error = %e, "orchestrator shutdown");
    }
    nodes.stop().await;
    println!("stopped");
    Ok(())
}
