//! `zz up` and the single-role commands (`agreement`, `orchestrator`, `keygen`).

use crate::launch::{
    backend_events, keys_dir, orchestrator_config, run_orchestrator, BackendArgs, LaunchOptions, Running,
};
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zz_wire::config::{generate, GenerateOptions};
use zz_wire::{Deployment, NodeId, Principal};

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
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
    /// Room for tenants' Wasm apps deployed at run time (`zz app deploy`),
    /// when a new deployment is made.
    #[arg(long, default_value_t = 2)]
    pub wasm_slots: usize,
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
    #[command(flatten)]
    pub backend: BackendArgs,
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

pub fn keygen(
    out: &Path,
    f: usize,
    apps: &[String],
    nodes: Vec<SocketAddr>,
    orchestrator: Option<SocketAddr>,
    unit_backend: &str,
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
    println!(
        "wrote {} and {} keys in {}",
        path.display(),
        ids.len(),
        out.join("keys").display()
    );
    let layout = crate::units::Layout {
        backend: unit_backend.to_string(),
        ..Default::default()
    };
    for host in crate::units::write(out, &dep, &layout)? {
        println!("   {}: copy to that host's / (README, \"Multi-host\")", host.display());
    }
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
    crate::units::check_data_dir(&data_dir)?;
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

pub async fn orchestrator(a: OrchestratorArgs) -> anyhow::Result<()> {
    let backend = a.backend.resolve()?;
    let dep = Deployment::load(&a.config)?;
    let data_dir = a
        .data_dir
        .unwrap_or_else(|| a.config.parent().unwrap_or(Path::new(".")).join("orchestrator"));
    crate::units::check_data_dir(&data_dir)?;
    let cfg = orchestrator_config(&a.config, &dep, data_dir, None, &backend)?;
    let admin = tokio::net::TcpListener::bind(a.admin)
        .await
        .with_context(|| format!("binding {}", a.admin))?;
    let links = tokio::net::TcpListener::bind(dep.orchestrator.addr)
        .await
        .with_context(|| format!("binding {}", dep.orchestrator.addr))?;
    run_orchestrator(cfg, backend, admin, links, backend_events(), shutdown_signal()).await
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
            let have: Vec<&str> = dep
                .apps
                .iter()
                .filter(|x| x.kind != zz_wire::config::WASM_KIND)
                .map(|x| x.name.as_str())
                .collect();
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
    let mut opts = GenerateOptions::local(f, &apps.iter().map(String::as_str).collect::<Vec<_>>())?;
    opts.wasm_slots = a.wasm_slots;
    let (dep, ids) = generate(&opts)?;
    dep.write(&a.data_dir, &ids)?;
    Ok((dep, path))
}

pub async fn up(a: UpArgs) -> anyhow::Result<()> {
    let backend = a.backend.resolve()?;
    std::fs::create_dir_all(&a.data_dir)?;
    let (dep, config) = prepare_deployment(&a)?;
    let mut running = Running::start(LaunchOptions {
        dep: Arc::new(dep),
        config,
        data_dir: a.data_dir.clone(),
        admin: a.admin,
        gateway: a.gateway,
        active_replicas: None,
        refresh_when_busy: false,
        backend,
        restart_nodes: true,
    })
    .await?;
    let (dep, gw, admin) = (
        running.info.dep.clone(),
        running.info.gateway_addr,
        running.info.admin_addr,
    );
    let apps: Vec<&str> = dep
        .apps
        .iter()
        .filter(|x| x.kind != zz_wire::config::WASM_KIND)
        .map(|x| x.name.as_str())
        .collect();
    let slots = dep.apps.len() - apps.len();
    println!(
        "zz is up: f={}, apps {}, backend {}",
        dep.f,
        apps.join(", "),
        running.info.backend.name()
    );
    println!("  gateway    http://{gw}/   e.g. curl -X PUT --data hello http://{gw}/kv/greeting");
    println!(
        "  admin API  http://{admin}/v1/   token in {}",
        a.data_dir.join("admin.token").display()
    );
    println!("  dashboard  http://{admin}/");
    if slots > 0 {
        println!("  your apps  zz app deploy NAME FILE.wasm   ({slots} Wasm slots; served at http://{gw}/NAME/)");
    }
    println!("  logs       {}", a.data_dir.join("logs").display());
    println!("Press Ctrl-C to stop.");
    tokio::select! {
        _ = shutdown_signal() => println!("stopping..."),
        e = running.failed() => {
            running.stop().await;
            return Err(e);
        }
    }
    running.stop().await;
    println!("stopped");
    Ok(())
}
