//! The zz orchestrator: owns the execution replicas' lives (where they run,
//! which are active or paused), wakes standbys on f+1 WAKEs, fences and
//! replaces faulty replicas on f+1 FAULTs, and reports it all through a
//! REST admin API.
//!
//! It acts on certificates of f+1 agreement nodes, never on one node's or
//! one replica's word, and it is not on the request path: it orders
//! nothing and executes nothing.

pub mod api;
pub mod backend;
pub mod certs;
pub mod controller;
pub mod links;
pub mod metrics;
pub mod model;
pub mod series;
pub mod store;
pub mod timeline;
mod token;

use anyhow::Context as _;
use backend::{Backend, BackendEvent, Launch, ProcessBackend};
use controller::{Command, Controller, Tuning, COMMAND_QUEUE};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use zz_wire::Principal;

pub struct OrchestratorConfig {
    pub deployment: zz_wire::Deployment,
    /// Passed to agents.
    pub deployment_path: PathBuf,
    /// Holds orchestrator.key and the replicas' keys.
    pub keys_dir: PathBuf,
    /// Store, admin.token, logs/.
    pub data_dir: PathBuf,
    /// The zz-agent executable.
    pub agent_bin: PathBuf,
    /// Overrides `ZZ_ADMIN_TOKEN` and `<data_dir>/admin.token`.
    pub admin_token: Option<String>,
    /// Replicas each app keeps executing; default f+1 (see `Tuning`).
    pub active_replicas: Option<usize>,
    /// Refresh a due standby even while the machine is busy (see
    /// `Tuning::refresh_max_busy`): for the recovery benchmark, which waits
    /// for a current standby before each round whatever else runs.
    pub refresh_when_busy: bool,
    /// Deploys tenants' Wasm apps through `/v1/apps` (see `api::apps`).
    pub apps: Option<Arc<dyn api::apps::Installer>>,
    /// Told the tenant apps at start and after every change.
    pub on_apps: Option<controller::AppsHook>,
}

/// Runs the orchestrator with the process backend until `shutdown`; returns
/// with every child process killed and reaped.
pub async fn run(
    cfg: OrchestratorConfig,
    admin: TcpListener,
    links: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let launch = Launch::agent(&cfg.agent_bin, &cfg.deployment_path, &cfg.keys_dir);
    run_with(cfg, launch, Tuning::default(), admin, links, shutdown).await
}

/// `run` with the replica command line and the pool's timeouts given
/// (tests start stand-in agents and shorten timeouts).
pub async fn run_with(
    cfg: OrchestratorConfig,
    launch: Launch,
    tuning: Tuning,
    admin: TcpListener,
    links: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let logs = cfg.data_dir.join("logs");
    let (backend_tx, backend_rx) = mpsc::channel(256);
    let backend = Arc::new(ProcessBackend::new(launch, logs, backend_tx));
    run_with_backend(cfg, backend, backend_rx, tuning, admin, links, shutdown).await
}

/// Runs the orchestrator on any backend; `backend_events` carries the
/// backend's unsolicited reports (exits). Returns after `shutdown` with the
/// backend shut down.
pub async fn run_with_backend(
    cfg: OrchestratorConfig,
    backend: Arc<dyn Backend>,
    backend_events: mpsc::Receiver<BackendEvent>,
    tuning: Tuning,
    admin: TcpListener,
    links: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tuning = Tuning {
        active_replicas: cfg.active_replicas.or(tuning.active_replicas),
        refresh_max_busy: tuning.refresh_max_busy.filter(|_| !cfg.refresh_when_busy),
        ..tuning
    };
    let dep = cfg.deployment;
    let data_dir = cfg.data_dir;
    std::fs::create_dir_all(data_dir.join("logs")).with_context(|| format!("creating {}", data_dir.display()))?;
    let token = token::admin_token(cfg.admin_token, &data_dir)?;
    let identity = dep
        .load_identity(&cfg.keys_dir, Principal::Orchestrator)
        .context("loading the orchestrator's key")?;
    metrics::register(&dep.apps.iter().map(|a| a.name.clone()).collect::<Vec<_>>());

    let store = store::Store::open(&data_dir.join("orchestrator.redb")).context("opening the store")?;
    let mut controller = Controller::new(dep.clone(), identity.clone(), backend, store, tuning)?;
    // Shared: a replacement's key opens links the moment it is announced.
    let keys = controller.keyring();
    if let Some(hook) = cfg.on_apps {
        controller = controller.with_apps_hook(hook);
    }
    let apps_installer = cfg.apps;
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(COMMAND_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);

    let components = apps_installer.clone().map(|installer| links::Components {
        installer,
        slots: Arc::new(
            dep.apps
                .iter()
                .filter(|a| a.kind == zz_wire::config::WASM_KIND)
                .filter_map(|a| dep.app_by_name(&a.name))
                .collect(),
        ),
    });
    let link_task = tokio::spawn(links::serve(
        links,
        identity,
        keys,
        components,
        cmd_tx.clone(),
        stop_rx.clone(),
    ));
    let state = api::ApiState {
        commands: cmd_tx,
        dep: Arc::new(dep),
        token: Arc::new(token),
        shutdown: stop_rx.clone(),
        apps: apps_installer,
    };
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(api::serve(
        admin,
        api::router(state),
        api::HttpLimits::from_env(),
        "admin",
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    ));
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let result = controller.run(cmd_rx, backend_events, signal).await;
    // The controller is done (children reaped); stop serving.
    let _ = link_task.await;
    let served = http.await;
    result.context("controller")?;
    served.context("admin API task")?.context("admin API")?;
    Ok(())
}
