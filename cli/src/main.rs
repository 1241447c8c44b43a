//! `zz`: run, demo, benchmark and operate a zz deployment.

/// See the workspace manifest: measured cheaper than glibc's malloc and mimalloc here.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod admin;
mod apps;
mod attack;
mod bench;
mod demo;
mod demo_plot;
mod gateway;
mod launch;
mod oracle;
mod plot;
mod procstat;
mod recovery;
mod report;
mod standby_cost;
mod units;
mod unreplicated;
mod up;
mod viewchange;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// zz — a Byzantine-fault-tolerant host for web applications.
///
/// An agreement cluster of 3f+1 nodes orders requests; only f+1 execution
/// replicas run, f more wait paused and are woken when the active ones
/// disagree or go silent.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const EXAMPLES: &str = "Examples:
  zz up                                  # f=1, apps kv and bank, process backend
  curl -X PUT --data hello localhost:8080/kv/greeting
  curl localhost:8080/kv/greeting
  zz status
  zz inject kv-e1 corrupt-reply
  zz app deploy guestbook examples/guestbook/guestbook.wasm   # then localhost:8080/guestbook/
  zz demo --scenario byzantine-reply";

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a whole deployment on this machine: agreement nodes, orchestrator
    /// with its replicas, admin API, dashboard and gateway. Ctrl-C stops it all.
    Up(up::UpArgs),
    /// A narrated failure-injection run: start, load, inject, watch it heal, check.
    Demo(demo::DemoArgs),
    /// Measure throughput and latency on a real local deployment.
    Bench(bench::BenchArgs),
    /// Show the cluster and the replicas (a client of the admin API).
    Status(admin::AdminArgs),
    /// Inject a fault: TARGET is a replica (kv-e1) or an agreement node (a0).
    ///
    /// Replica kinds: crash, hang, corrupt-reply, corrupt-state, bad-checkpoint,
    /// serve-bad-state, slow. Node kinds: crash, mute, equivocate, slow,
    /// slow-primary.
    Inject {
        target: String,
        kind: String,
        /// Clear the fault automatically after this many milliseconds.
        #[arg(long)]
        duration_ms: Option<u64>,
        /// Inject even if more than f replicas of the app (or more than f
        /// agreement nodes) would then be faulty at once: beyond f, wrong
        /// answers can certify, which shows the model broken, not zz.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Tenants' WebAssembly apps: deploy, upgrade, remove, list.
    App {
        #[command(subcommand)]
        cmd: admin::AppCmd,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Write a fresh deployment (keys + deployment.toml) for a multi-host
    /// setup, and per host (`OUT/hosts/IP/`) the files to copy to its root:
    /// the deployment file, the keys its roles read and a systemd unit per role.
    Keygen {
        /// Output directory.
        #[arg(long, default_value = "zz-deployment")]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        f: usize,
        /// Comma-separated apps (kv, bank).
        #[arg(long, default_value = "kv,bank", value_delimiter = ',')]
        apps: Vec<String>,
        /// Agreement node addresses, comma-separated (3f+1 of them); defaults
        /// to free loopback ports.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<SocketAddr>,
        /// Where agreement nodes and agents reach the orchestrator.
        #[arg(long)]
        orchestrator: Option<SocketAddr>,
        /// The `--backend` the orchestrator's systemd unit runs with.
        #[arg(long, default_value = "libvirt")]
        unit_backend: String,
    },
    /// Run one agreement node of a deployment.
    Agreement {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        id: u16,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the orchestrator of a deployment (replicas, admin API, dashboard).
    Orchestrator(up::OrchestratorArgs),
    /// Run a gateway: the HTTP front door for web clients.
    Gateway {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The client identity this gateway uses (a name from the deployment).
        #[arg(long, default_value = "gateway")]
        client: String,
        /// Also route tenants' Wasm apps, as this admin API lists them (read
        /// every second), e.g. `http://127.0.0.1:7070`. Without it only the
        /// built-in apps are served.
        #[arg(long, value_name = "ADMIN_URL")]
        apps_from: Option<String>,
        /// The admin token for `--apps-from` (written by `zz up`).
        #[arg(long, default_value = "zz-data/admin.token")]
        token_file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // An agreement node runs on one thread: its link tasks, signature
    // checker and protocol loop hand each message on, and across threads
    // every hand-off was a futex wake (a fifth of a node's CPU under load,
    // with four nodes sharing two cores anyway).
    let rt = match cli.cmd {
        Cmd::Agreement { .. } => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        // The load generator and its client likewise: on two worker threads
        // every call and answer crossed threads, and the harness spent about
        // as much CPU as the system it measured (the unreplicated ceiling
        // read ~135k ops/s instead of 250-310k).
        Cmd::Bench(_) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The demo and the benchmark narrate for themselves; keep logs to warnings.
    let default = match cli.cmd {
        Cmd::Demo(_) | Cmd::Bench(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into()))
        .with_writer(std::io::stderr)
        .init();
    // Servers and the roles that start them hold a descriptor per
    // connection; the thin clients need no more than they have.
    if !matches!(
        cli.cmd,
        Cmd::Status(_) | Cmd::Inject { .. } | Cmd::App { .. } | Cmd::Keygen { .. }
    ) {
        zz_wire::fdlimit::raise_nofile_limit();
    }
    match cli.cmd {
        Cmd::Up(a) => up::up(a).await,
        Cmd::Demo(a) => demo::demo(a).await,
        Cmd::Bench(a) => match a.cmd.clone() {
            Some(bench::BenchCmd::Recovery(r)) => recovery::recovery(r).await.map(|_| ()),
            Some(bench::BenchCmd::StandbyCost(c)) => standby_cost::standby_cost(c).await.map(|_| ()),
            Some(bench::BenchCmd::ViewChange(v)) => viewchange::view_change(v).await.map(|_| ()),
            Some(bench::BenchCmd::Report(r)) => report::report(&r),
            None if a.attack.is_some() => attack::bench_attack(a).await.map(|_| ()),
            None => bench::bench(a).await.map(|_| ()),
        },
        Cmd::Status(a) => admin::status(&a).await,
        Cmd::Inject {
            target,
            kind,
            duration_ms,
            force,
            admin,
        } => admin::inject(&admin, &target, &kind, duration_ms, force).await,
        Cmd::App { cmd, admin } => admin::app(&admin, &cmd).await,
        Cmd::Keygen {
            out,
            f,
            apps,
            nodes,
            orchestrator,
            unit_backend,
        } => up::keygen(&out, f, &apps, nodes, orchestrator, &unit_backend),
        Cmd::Agreement { config, id, data_dir } => up::agreement(&config, id, data_dir).await,
        Cmd::Orchestrator(a) => up::orchestrator(a).await,
        Cmd::Gateway {
            config,
            listen,
            client,
            apps_from,
            token_file,
        } => {
            let dep = Arc::new(zz_wire::Deployment::load(&config)?);
            let client = launch::start_client(&dep, &config, &client, Default::default())?;
            let routes = apps::Routes::default();
            if let Some(url) = &apps_from {
                let token = std::fs::read_to_string(&token_file).with_context(|| {
                    format!("reading the admin token for --apps-from from {}", token_file.display())
                })?;
                routes.follow(admin::AdminClient::new(url, token.trim().to_string()), dep.clone());
            }
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("gateway listening on http://{}", listener.local_addr()?);
            match &apps_from {
                Some(url) => println!("routing tenants' apps as {url} lists them"),
                None => println!("serving the built-in apps (tenants' apps need --apps-from ADMIN_URL)"),
            }
            gateway::serve(dep, client, routes, listener, up::shutdown_signal()).await
        }
    }
}
