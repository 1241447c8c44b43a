//! `zz-agent`: one execution replica (inside a VM, or a child process of the
//! `process` backend); `zz-agent serve`: one app alone, unreplicated.

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;
use zz_agent::cli::{load, Args, Cmd, ServeArgs};
use zz_agent::unreplicated::{self, Counters, ServeOptions};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    zz_wire::fdlimit::raise_nofile_limit();
    if let Some(Cmd::Serve(s)) = &args.cmd {
        return serve(s);
    }
    let settings = args.settings()?;
    let loaded = load(&settings).context("loading the replica's configuration")?;
    tracing::info!(
        replica = %loaded.deployment.replica_name(loaded.me),
        alias = ?settings.host_alias,
        "zz-agent starting"
    );
    // The replica runs on a thread of its own; one more thread for the
    // links is enough, and cheaper than waking a second worker per message.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(zz_agent::net::run(
        loaded.deployment,
        loaded.identity,
        loaded.me,
        loaded.replica,
        loaded.components,
        settings.host_alias,
        shutdown(),
    ))?;
    Ok(())
}

fn serve(s: &ServeArgs) -> anyhow::Result<()> {
    let app = s.build_app()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(s.listen)
            .await
            .with_context(|| format!("listening on {}", s.listen))?;
        tracing::info!(app = %s.app, addr = %listener.local_addr()?, "zz-agent serving unreplicated");
        let counters = Arc::new(Counters::default());
        let opts = ServeOptions {
            checkpoint_interval: s.checkpoint_interval,
            ..ServeOptions::default()
        };
        unreplicated::serve(listener, app, opts, counters.clone(), shutdown()).await?;
        tracing::info!(
            executed = Counters::get(&counters.executed),
            batches = Counters::get(&counters.batches),
            connections = Counters::get(&counters.connections),
            malformed = Counters::get(&counters.malformed),
            "zz-agent stopped"
        );
        Ok(())
    })
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
