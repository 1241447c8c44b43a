//! `zz-agent`: one execution replica (inside a VM, or a child process of the
//! `process` backend).

use anyhow::Context;
use clap::Parser;
use zz_agent::cli::{load, Args};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let settings = args.settings()?;
    let loaded = load(&settings).context("loading the replica's configuration")?;
    tracing::info!(
        replica = %loaded.deployment.replica_name(loaded.me),
        alias = ?settings.host_alias,
        "zz-agent starting"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(zz_agent::net::run(
        loaded.deployment,
        loaded.identity,
        loaded.me,
        loaded.replica,
        settings.host_alias,
        shutdown(),
    ))?;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
