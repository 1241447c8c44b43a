//! Starts a whole deployment on this machine (agreement nodes as child
//! processes, orchestrator and gateway in-process) and stops all of it.
//! Shared by `zz up`, `zz demo` and `zz bench`.

use crate::apps::{AppInstaller, Routes};
use crate::gateway;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zz_agreement::client::{Client, ClientOptions};
use zz_orchestrator::backend::BackendEvent;
use zz_orchestrator::model::{EVENT_NODE_EXITED, EVENT_NODE_RESTARTED};
use zz_wire::{Deployment, NodeId, Principal};

pub fn keys_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .map(|p| p.join("keys"))
        .unwrap_or_else(|| PathBuf::from("keys"))
}

pub fn start_client(dep: &Arc<Deployment>, config: &Path, name: &str, opts: ClientOptions) -> anyhow::Result<Client> {
    let who = dep
        .parse_principal(name)
        .filter(|p| matches!(p, Principal::Client(_)))
        .with_context(|| format!("no client named {name:?} in the deployment"))?;
    let id = dep.load_identity(&keys_dir(config), who)?;
    Client::start(dep.clone(), id, opts)
}

/// Where Wasm components deployed at run time are kept: next to the
/// deployment file, where agents look for them.
pub fn components_dir(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("components")
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

/// `--backend` and the libvirt backend's options, shared by `zz up`, `zz
/// demo`, `zz orchestrator` and `zz bench recovery`.
#[derive(clap::Args, Clone, Debug)]
pub struct BackendArgs {
    /// Where replicas run: `process` (child processes, no hypervisor needed)
    /// or `libvirt` (virtual machines; needs a build with `--features libvirt`).
    #[arg(long, default_value = "process")]
    pub backend: String,
    /// libvirt: the guest image (`vmlinuz`, `initramfs.cpio.gz`). Default:
    /// `$ZZ_VM_IMAGE_DIR`, else `vm-images/out` in the current directory.
    #[arg(long)]
    pub image_dir: Option<PathBuf>,
    /// libvirt: domain type, `kvm`, `qemu` (software emulation) or `auto`
    /// (kvm if a probe VM boots with it, else qemu).
    #[arg(long, default_value = "auto")]
    pub accel: String,
    /// libvirt: a hypervisor host by libvirt URI (`qemu:///system`,
    /// `qemu+ssh://host2/system`, `qemu+tcp://10.0.0.21/system`); repeat for
    /// more hosts. Replica i of an app goes to host i mod hosts, or the next
    /// host that answers. Default: `qemu:///system`.
    #[arg(long = "libvirt-host", value_name = "URI")]
    pub libvirt_hosts: Vec<String>,
    /// libvirt: memory of each replica VM, in MiB. A replica holds its app's
    /// whole state in memory: give it room (1 GB of kv state needs about
    /// 2048).
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub vm_memory_mib: u32,
}

/// A checked `--backend` choice.
#[derive(Clone, Debug)]
pub enum Backend {
    Process,
    #[cfg(feature = "libvirt")]
    Libvirt {
        image_dir: PathBuf,
        accel: zz_orchestrator::backend::libvirt::AccelMode,
        hosts: Vec<String>,
        memory_mib: u32,
    },
}

impl BackendArgs {
    /// Checks the choice before anything starts, so a missing image or a
    /// build without libvirt fails with advice instead of half a deployment.
    pub fn resolve(&self) -> anyhow::Result<Backend> {
        match self.backend.as_str() {
            "process" => Ok(Backend::Process),
            "libvirt" => self.libvirt(),
            other => anyhow::bail!("unknown backend {other:?}: expected process or libvirt"),
        }
    }

    #[cfg(not(feature = "libvirt"))]
    fn libvirt(&self) -> anyhow::Result<Backend> {
        anyhow::bail!(
            "this zz was built without libvirt support; rebuild it with \
             `cargo build --release --bins --workspace --features zz/libvirt` \
             (needs libvirt-dev), or use --backend process"
        )
    }

    #[cfg(feature = "libvirt")]
    fn libvirt(&self) -> anyhow::Result<Backend> {
        let accel = self.accel.parse().map_err(|e| anyhow::anyhow!("--accel: {e}"))?;
        let image_dir = match (&self.image_dir, std::env::var_os("ZZ_VM_IMAGE_DIR")) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => PathBuf::from(d),
            (None, None) => PathBuf::from("vm-images/out"),
        };
        for f in ["vmlinuz", "initramfs.cpio.gz"] {
            if !image_dir.join(f).is_file() {
                anyhow::bail!(
                    "no guest image in {} (missing {f}): build it with vm-images/prepare.sh, \
                     or point --image-dir / ZZ_VM_IMAGE_DIR at one",
                    image_dir.display()
                );
            }
        }
        let hosts = if self.libvirt_hosts.is_empty() {
            vec!["qemu:///system".to_string()]
        } else {
            self.libvirt_hosts.clone()
        };
        Ok(Backend::Libvirt {
            image_dir,
            accel,
            hosts,
            memory_mib: self.vm_memory_mib,
        })
    }
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Process => "process",
            #[cfg(feature = "libvirt")]
            Backend::Libvirt { .. } => "libvirt",
        }
    }

    /// How long a fresh deployment may take until every app has f+1 active
    /// and f paused replicas: VMs boot slowly under software emulation.
    pub fn ready_timeout(&self) -> Duration {
        match self {
            Backend::Process => Duration::from_secs(90),
            #[cfg(feature = "libvirt")]
            Backend::Libvirt { .. } => Duration::from_secs(300),
        }
    }
}

/// A channel for the backend's unsolicited reports; `zz up` also sends its
/// node supervisor's restarts down it, so they reach the event log.
pub fn backend_events() -> (mpsc::Sender<BackendEvent>, mpsc::Receiver<BackendEvent>) {
    mpsc::channel(256)
}

/// Runs the orchestrator on the chosen backend until `shutdown`.
pub async fn run_orchestrator(
    cfg: zz_orchestrator::OrchestratorConfig,
    backend: Backend,
    admin: tokio::net::TcpListener,
    links: tokio::net::TcpListener,
    (tx, rx): (mpsc::Sender<BackendEvent>, mpsc::Receiver<BackendEvent>),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match backend {
        Backend::Process => {
            use zz_orchestrator::backend::{Launch, ProcessBackend};
            let launch = Launch::agent(&cfg.agent_bin, &cfg.deployment_path, &cfg.keys_dir);
            let procs = Arc::new(ProcessBackend::new(launch, cfg.data_dir.join("logs"), tx));
            let tuning = zz_orchestrator::controller::Tuning::default();
            zz_orchestrator::run_with_backend(cfg, procs, rx, tuning, admin, links, shutdown).await
        }
        #[cfg(feature = "libvirt")]
        Backend::Libvirt {
            image_dir,
            accel,
            hosts,
            memory_mib,
        } => {
            use zz_orchestrator::backend::libvirt::{LibvirtBackend, LibvirtConfig};
            // Names this deployment's domains, so two deployments on one
            // host never touch each other's VMs.
            let tag: String = cfg.deployment.orchestrator.public_key.0.as_bytes()[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mut lc = LibvirtConfig::new(
                &tag,
                cfg.deployment_path.clone(),
                cfg.keys_dir.clone(),
                image_dir,
                cfg.data_dir.join("libvirt"),
            );
            lc.accel = accel;
            lc.hosts = hosts;
            lc.memory_mib = memory_mib;
            let vms = LibvirtBackend::new(lc, tx).context("starting the libvirt backend")?;
            let vms = Arc::new(vms);
            zz_orchestrator::run_with_backend(cfg, vms, rx, vm_tuning(), admin, links, shutdown).await
        }
    }
}

/// VMs under software emulation take seconds to boot (more when several
/// boot at once on few cores) and a restored managed save takes seconds to
/// answer: the process backend's grace periods would fence them as silent.
#[cfg(feature = "libvirt")]
fn vm_tuning() -> zz_orchestrator::controller::Tuning {
    zz_orchestrator::controller::Tuning {
        silence_ms: 5_000,
        startup_grace_ms: 60_000,
        standby_grace_ms: 60_000,
        waking_grace_ms: 20_000,
        ..Default::default()
    }
}

pub fn orchestrator_config(
    config: &Path,
    dep: &Deployment,
    data_dir: PathBuf,
    active_replicas: Option<usize>,
    backend: &Backend,
) -> anyhow::Result<zz_orchestrator::OrchestratorConfig> {
    // VMs carry their own agent in the guest image.
    let agent_bin = match backend {
        Backend::Process => agent_bin()?,
        #[cfg(feature = "libvirt")]
        Backend::Libvirt { .. } => PathBuf::from("zz-agent"),
    };
    Ok(zz_orchestrator::OrchestratorConfig {
        deployment: dep.clone(),
        deployment_path: config.to_path_buf(),
        keys_dir: keys_dir(config),
        data_dir,
        agent_bin,
        admin_token: std::env::var("ZZ_ADMIN_TOKEN").ok(),
        active_replicas,
        refresh_when_busy: false,
        apps: None,
        on_apps: None,
    })
}

/// Shortest and longest wait before restarting a node that exited on its
/// own; the wait doubles per exit and resets once a node ran `STABLE`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const STABLE: Duration = Duration::from_secs(60);
/// How long a node has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What a node's supervisor is asked, besides stopping.
enum NodeCmd {
    /// Kill the node (if it runs) and start it again now.
    Restart(oneshot::Sender<anyhow::Result<()>>),
}

/// The agreement nodes run as child processes, each owned by a supervisor
/// task that restarts it when it exits on its own (as systemd would).
struct Nodes {
    /// Cancelled first on shutdown: no restart from then on.
    no_restart: CancellationToken,
    /// Cancelled last: each supervisor stops its node and returns.
    stop: CancellationToken,
    supervisors: Vec<(NodeId, mpsc::Sender<NodeCmd>, JoinHandle<()>)>,
}

/// Where and how a node is started, and where its supervisor reports.
#[derive(Clone)]
struct NodeLaunch {
    config: PathBuf,
    data_dir: PathBuf,
    /// Restart nodes that exit on their own; `zz bench view-change` crashes
    /// nodes on purpose and restarts them itself, when it measures from.
    restart: bool,
    events: mpsc::Sender<BackendEvent>,
}

impl Nodes {
    fn spawn(dep: &Deployment, how: &NodeLaunch) -> anyhow::Result<Nodes> {
        std::fs::create_dir_all(how.data_dir.join("logs"))?;
        let no_restart = CancellationToken::new();
        let stop = CancellationToken::new();
        let mut nodes = Nodes {
            no_restart: no_restart.clone(),
            stop: stop.clone(),
            supervisors: Vec::new(),
        };
        for n in dep.node_ids() {
            // On an error `nodes` is dropped: the children started so far
            // are killed (kill_on_drop) as their supervisors are aborted.
            let child = Self::spawn_one(&how.config, &how.data_dir, n)?;
            let (tx, rx) = mpsc::channel(1);
            let task = tokio::spawn(supervise(n, child, how.clone(), rx, no_restart.clone(), stop.clone()));
            nodes.supervisors.push((n, tx, task));
        }
        Ok(nodes)
    }

    /// One node: `zz agreement` with its own data dir; the log is appended
    /// to, so a restarted node's earlier life stays readable.
    fn spawn_one(config: &Path, data_dir: &Path, n: NodeId) -> anyhow::Result<Child> {
        let exe = std::env::current_exe()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("logs").join(format!("{n}.log")))?;
        Command::new(&exe)
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
            .with_context(|| format!("starting agreement node {n}"))
    }

    async fn restart(&self, n: NodeId) -> anyhow::Result<()> {
        let (_, tx, _) = self
            .supervisors
            .iter()
            .find(|(id, _, _)| *id == n)
            .with_context(|| format!("no agreement node {n}"))?;
        let (reply, answer) = oneshot::channel();
        tx.send(NodeCmd::Restart(reply))
            .await
            .map_err(|_| anyhow::anyhow!("the supervisor of {n} has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the supervisor of {n} has stopped"))?
    }

    /// Stops restarting, then each supervisor stops its node (SIGTERM, then
    /// SIGKILL after a grace period; always reaped).
    async fn stop(mut self) {
        self.no_restart.cancel();
        self.stop.cancel();
        for (n, _, task) in std::mem::take(&mut self.supervisors) {
            if let Err(e) = task.await {
                tracing::error!(node = %n, error = %e, "node supervisor");
            }
        }
    }
}

impl Drop for Nodes {
    /// Without `stop` (a failed start): aborting a supervisor drops its
    /// child, which kills it (`kill_on_drop`).
    fn drop(&mut self) {
        self.no_restart.cancel();
        for (_, _, task) in &self.supervisors {
            task.abort();
        }
    }
}

/// Owns node `n`'s process until `stop`: restarts it with exponential
/// backoff when it exits on its own (a clean exit, status 0, is a node
/// told to stop by a signal, and is left stopped), and reports both the
/// exit and the restart to the orchestrator's event log.
async fn supervise(
    n: NodeId,
    mut child: Child,
    how: NodeLaunch,
    mut cmds: mpsc::Receiver<NodeCmd>,
    no_restart: CancellationToken,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut started = Instant::now();
    // False while the node is down for good (a clean exit, shutdown, or
    // restarting off), until a `Restart` command.
    let mut running = true;
    loop {
        tokio::select! {
            // Shutdown wins over an exit seen in the same poll.
            biased;
            () = stop.cancelled() => {
                if running {
                    terminate(n, &mut child).await;
                }
                return;
            }
            Some(NodeCmd::Restart(reply)) = cmds.recv() => {
                if running {
                    let _ = child.kill().await;
                }
                let r = Nodes::spawn_one(&how.config, &how.data_dir, n);
                running = r.is_ok();
                let _ = reply.send(r.map(|c| {
                    child = c;
                    started = Instant::now();
                }));
            }
            status = child.wait(), if running => {
                running = false;
                let status = match status {
                    Ok(s) if s.success() => {
                        tracing::info!(node = %n, "agreement node stopped cleanly; not restarted");
                        continue;
                    }
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                if no_restart.is_cancelled() || !how.restart {
                    tracing::warn!(node = %n, %status, "agreement node exited");
                    continue;
                }
                if started.elapsed() >= STABLE {
                    backoff = BACKOFF_MIN;
                }
                tracing::warn!(node = %n, %status, "agreement node exited; restarting in {backoff:?}");
                let ms = backoff.as_millis();
                note(&how, EVENT_NODE_EXITED, format!("{n} exited ({status}); restarting in {ms} ms")).await;
                let Some((c, waited)) = respawn(n, &how, &mut backoff, &no_restart).await else {
                    continue;
                };
                child = c;
                running = true;
                started = Instant::now();
                let pid = child.id().unwrap_or_default();
                tracing::info!(node = %n, pid, "agreement node restarted");
                let ms = waited.as_millis();
                note(&how, EVENT_NODE_RESTARTED, format!("{n} restarted as pid {pid} after {ms} ms")).await;
            }
        }
    }
}

/// Waits out the backoff and starts node `n` again, doubling the backoff
/// each try and retrying while the start itself fails; returns the child
/// and the last wait, or `None` once shutdown begins.
async fn respawn(
    n: NodeId,
    how: &NodeLaunch,
    backoff: &mut Duration,
    no_restart: &CancellationToken,
) -> Option<(Child, Duration)> {
    loop {
        let wait = *backoff;
        tokio::select! {
            () = no_restart.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
        *backoff = (wait * 2).min(BACKOFF_MAX);
        match Nodes::spawn_one(&how.config, &how.data_dir, n) {
            Ok(c) => return Some((c, wait)),
            Err(e) => tracing::error!(node = %n, error = %e, "restarting agreement node"),
        }
    }
}

/// SIGTERM, then SIGKILL after `STOP_GRACE`; reaps either way.
async fn terminate(n: NodeId, child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        tracing::warn!(node = %n, "agreement node ignored SIGTERM; killing it");
        let _ = child.kill().await;
    }
}

/// Records a supervisor event; the orchestrator may already be gone at
/// shutdown, which is fine.
async fn note(how: &NodeLaunch, kind: &'static str, detail: String) {
    let _ = how.events.send(BackendEvent::Host { kind, detail }).await;
}

pub struct LaunchOptions {
    pub dep: Arc<Deployment>,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub admin: SocketAddr,
    pub gateway: SocketAddr,
    /// Active replicas per app; default f+1 (the rest paused). `zz bench
    /// --mode full` asks for 2f+1.
    pub active_replicas: Option<usize>,
    /// See `OrchestratorConfig::refresh_when_busy`.
    pub refresh_when_busy: bool,
    pub backend: Backend,
    /// Restart an agreement node that exits on its own (with backoff);
    /// off where a run crashes nodes on purpose and restarts them itself.
    pub restart_nodes: bool,
}

impl LaunchOptions {
    /// A fresh local deployment in `dir` (the demo's and the benches'):
    /// writes its deployment file and keys there and picks loopback ports
    /// for its admin API and gateway. f+1 active replicas, standbys
    /// refreshed only when idle, crashed nodes restarted.
    pub fn local(dir: &Path, dep: Deployment, ids: &[zz_wire::Identity], backend: Backend) -> anyhow::Result<Self> {
        let config = dep.write(dir, ids)?;
        let ports = zz_wire::config::free_ports(2)?;
        Ok(LaunchOptions {
            dep: Arc::new(dep),
            config,
            data_dir: dir.to_path_buf(),
            admin: ports[0],
            gateway: ports[1],
            active_replicas: None,
            refresh_when_busy: false,
            backend,
            restart_nodes: true,
        })
    }
}

/// Where a running deployment can be reached.
#[derive(Clone, Debug)]
pub struct Info {
    pub dep: Arc<Deployment>,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub admin_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    pub backend: Backend,
}

impl Info {
    /// A client of this deployment's admin API.
    pub fn admin(&self) -> anyhow::Result<crate::admin::AdminClient> {
        Ok(crate::admin::AdminClient::new(
            &format!("http://{}", self.admin_addr),
            self.token()?,
        ))
    }

    /// The BFT client the benches load the deployment with, as `bench`.
    pub fn bench_client(&self, timeout: Duration) -> anyhow::Result<Client> {
        start_client(
            &self.dep,
            &self.config,
            "bench",
            ClientOptions {
                timeout,
                ..ClientOptions::default()
            },
        )
    }

    pub fn token(&self) -> anyhow::Result<String> {
        if let Ok(t) = std::env::var("ZZ_ADMIN_TOKEN") {
            return Ok(t);
        }
        let p = self.data_dir.join("admin.token");
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string())
    }
}

/// A running deployment.
pub struct Running {
    pub info: Info,
    stop: CancellationToken,
    nodes: Nodes,
    orch: JoinHandle<anyhow::Result<()>>,
    gw: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn start(o: LaunchOptions) -> anyhow::Result<Running> {
        std::fs::create_dir_all(&o.data_dir)?;
        let admin = tokio::net::TcpListener::bind(o.admin)
            .await
            .with_context(|| format!("binding the admin API to {} (use --admin)", o.admin))?;
        let gw_listener = tokio::net::TcpListener::bind(o.gateway)
            .await
            .with_context(|| format!("binding the gateway to {} (use --gateway)", o.gateway))?;
        let links = tokio::net::TcpListener::bind(o.dep.orchestrator.addr)
            .await
            .with_context(|| format!("binding the orchestrator link port {}", o.dep.orchestrator.addr))?;
        let admin_addr = admin.local_addr()?;
        let gateway_addr = gw_listener.local_addr()?;
        let mut orch_cfg = orchestrator_config(&o.config, &o.dep, o.data_dir.clone(), o.active_replicas, &o.backend)?;
        orch_cfg.refresh_when_busy = o.refresh_when_busy;
        let routes = Routes::default();
        orch_cfg.on_apps = Some(routes.hook(o.dep.clone()));
        if o.dep.clients.iter().any(|c| c.name == zz_agent::replica::ADMIN_CLIENT) {
            let client = start_client(
                &o.dep,
                &o.config,
                zz_agent::replica::ADMIN_CLIENT,
                ClientOptions::default(),
            )?;
            orch_cfg.apps = Some(Arc::new(AppInstaller {
                components: components_dir(&o.config),
                client,
            }));
        }
        let events = backend_events();
        let nodes = Nodes::spawn(
            &o.dep,
            &NodeLaunch {
                config: o.config.clone(),
                data_dir: o.data_dir.clone(),
                restart: o.restart_nodes,
                events: events.0.clone(),
            },
        )?;
        let stop = CancellationToken::new();
        let orch = tokio::spawn(run_orchestrator(
            orch_cfg,
            o.backend.clone(),
            admin,
            links,
            events,
            stop.clone().cancelled_owned(),
        ));
        let client = start_client(&o.dep, &o.config, "gateway", ClientOptions::default())?;
        let gw = tokio::spawn(gateway::serve(
            o.dep.clone(),
            client,
            routes,
            gw_listener,
            stop.clone().cancelled_owned(),
        ));
        // Ready once the admin API answers (the token file exists by then).
        let health = format!("http://{admin_addr}/v1/health");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if orch.is_finished() {
                break;
            }
            if matches!(http.get(&health).send().await, Ok(r) if r.status().is_success()) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the admin API did not come up within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Running {
            info: Info {
                dep: o.dep,
                config: o.config,
                data_dir: o.data_dir,
                admin_addr,
                gateway_addr,
                backend: o.backend,
            },
            stop,
            nodes,
            orch,
            gw,
        })
    }

    /// Resolves if the orchestrator stops on its own (an error).
    pub async fn failed(&mut self) -> anyhow::Error {
        match (&mut self.orch).await {
            Ok(Ok(())) => anyhow::anyhow!("the orchestrator stopped unexpectedly"),
            Ok(Err(e)) => e.context("orchestrator failed"),
            Err(e) => e.into(),
        }
    }

    /// Starts node `n` again with the same command and data dir (it
    /// restores from its store), killing and reaping its previous process
    /// first if that still runs.
    pub async fn restart_node(&mut self, n: NodeId) -> anyhow::Result<()> {
        self.nodes.restart(n).await
    }

    /// Stops the gateway, the orchestrator (which kills and reaps its
    /// replicas) and the agreement nodes.
    pub async fn stop(self) {
        // Nodes are not restarted from here on, whatever exits.
        self.nodes.no_restart.cancel();
        self.stop.cancel();
        let _ = self.gw.await;
        if !self.orch.is_finished() {
            if let Ok(Err(e)) = self.orch.await {
                tracing::error!(error = %e, "orchestrator shutdown");
            }
        }
        self.nodes.stop().await;
    }
}
