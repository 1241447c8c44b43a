//! `zz-agreement`: runs one agreement node of a deployment.

use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use zz_agreement::node::{run, NodeConfig};
use zz_wire::{Deployment, NodeId, Principal};

/// Run agreement node N of a zz deployment.
///
/// Example: zz-agreement --config zz-data/deployment.toml --id 0
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// The deployment file (as written by `zz keygen` or `zz up`).
    #[arg(long)]
    config: PathBuf,
    /// This node's id (0..3f).
    #[arg(long)]
    id: u16,
    /// Directory of key files; defaults to `keys/` beside the config.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Where the node keeps its durable state; defaults to `nodes/aN/` beside the config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics (dropped/invalid messages, commits, view
    /// changes) on this address.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
}

/// One thread, as for `zz agreement` (see cli/src/main.rs).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    zz_wire::fdlimit::raise_nofile_limit();
    let dep = Deployment::load(&args.config)?;
    let base = args.config.parent().map(PathBuf::from).unwrap_or_default();
    let keys = args.keys.unwrap_or_else(|| base.join("keys"));
    let me = NodeId(args.id);
    let Some(addr) = dep.node_addr(me) else {
        anyhow::bail!("node a{} is not in {}", args.id, args.config.display());
    };
    let identity = dep.load_identity(&keys, Principal::Node(me))?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| base.join("nodes").join(format!("a{}", args.id)));
    if let Some(m) = args.metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(m)
            .install()?;
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    run(
        NodeConfig {
            deployment: Arc::new(dep),
            identity,
            data_dir,
        },
        listener,
        shutdown,
    )
    .await
}
