//! zz links from agreement nodes and replicas: authenticated handshake,
//! then every inbound message is checked (kind, author = proven peer,
//! signature) before the controller sees it; Control goes out through a
//! bounded per-link queue.

use crate::certs;
use crate::controller::Command;
use crate::metrics as m;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use zz_wire::frame::handshake;
use zz_wire::{Identity, Keyring, Principal};

/// Outbound messages queued per link before new ones are dropped.
const LINK_QUEUE: usize = 64;

pub async fn serve(
    listener: TcpListener,
    identity: Identity,
    keys: Keyring,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new((identity, keys));
    let mut conns = JoinSet::new();
    let mut next_link = 0u64;
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    next_link += 1;
                    let link = next_link;
                    let ctx = ctx.clone();
                    let commands = commands.clone();
                    conns.spawn(async move {
                        if let Err(e) = connection(stream, link, &ctx.0, &ctx.1, commands).await {
                            tracing::debug!(%addr, "link closed: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

#[derive(Debug, thiserror::Error)]
enum LinkFailure {
    #[error(transparent)]
    Handshake(#[from] zz_wire::frame::LinkError),
    #[error("{0} has no business on the orchestrator's link")]
    Role(Principal),
    #[error(transparent)]
    Frame(#[from] zz_wire::frame::FrameError),
    #[error("controller gone")]
    Controller,
}

async fn connection(
    stream: tokio::net::TcpStream,
    link: u64,
    me: &Identity,
    keys: &Keyring,
    commands: mpsc::Sender<Command>,
) -> Result<(), LinkFailure> {
    let (peer, mut reader, mut writer) = match handshake(stream, me, keys, None).await {
        Ok(x) => x,
        Err(e) => {
            metrics::counter!(m::DROPPED, "reason" => "handshake").increment(1);
            return Err(e.into());
        }
    };
    if !matches!(peer, Principal::Node(_) | Principal::Replica(_)) {
        metrics::counter!(m::DROPPED, "reason" => "unexpected").increment(1);
        return Err(LinkFailure::Role(peer));
    }
    let (tx, mut rx) = mpsc::channel(LINK_QUEUE);
    let sender = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if writer.send(&msg).await.is_err() {
                break;
            }
        }
    });
    let up = commands
        .send(Command::LinkUp { peer, link, tx })
        .await
        .map_err(|_| LinkFailure::Controller);
    let result = match up {
        Ok(()) => read_loop(peer, link, &mut reader, keys, &commands).await,
        Err(e) => Err(e),
    };
    sender.abort();
    let _ = commands.send(Command::LinkDown { peer, link }).await;
    result
}

async fn read_loop(
    peer: Principal,
    link: u64,
    reader: &mut zz_wire::frame::LinkReader,
    keys: &Keyring,
    commands: &mpsc::Sender<Command>,
) -> Result<(), LinkFailure> {
    loop {
        let msg = match reader.recv().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(()),
            Err(e) => {
                metrics::counter!(m::DROPPED, "reason" => "malformed").increment(1);
                return Err(e.into());
            }
        };
        match certs::check(peer, &msg, keys) {
            Ok(()) => commands
                .send(Command::Inbound { peer, link, msg })
                .await
                .map_err(|_| LinkFailure::Controller)?,
            Err(reason) => {
                tracing::debug!(%peer, kind = msg.kind(), "dropped: {reason}");
                metrics::counter!(m::DROPPED, "reason" => reason.as_str()).increment(1);
            }
        }
    }
}
