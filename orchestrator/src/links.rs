//! zz links from agreement nodes and replicas: authenticated handshake,
//! then every inbound message is checked (kind, author = proven peer,
//! signature) before the controller sees it; Control goes out through a
//! bounded per-link queue. Replicas' `ComponentFetch`es are answered here,
//! off the controller's loop.

use crate::api::apps::Installer;
use crate::certs;
use crate::controller::Command;
use crate::metrics as m;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use zz_wire::frame::handshake;
use zz_wire::{AppId, ComponentChunk, ComponentFetch, Identity, Keyring, Msg, Principal, COMPONENT_CHUNK};

/// Outbound messages queued per link before new ones are dropped.
const LINK_QUEUE: usize = 64;

/// Where replicas' `ComponentFetch`es are answered from.
#[derive(Clone)]
pub struct Components {
    pub installer: Arc<dyn Installer>,
    /// The apps whose replicas may fetch: the Wasm slots.
    pub slots: Arc<BTreeSet<AppId>>,
}

impl Components {
    /// The chunk answering `f`; one with `total` 0 when the component is
    /// not here (or `f.offset` is past its end), so the replica stops
    /// asking at once.
    async fn chunk(&self, f: ComponentFetch) -> ComponentChunk {
        let installer = self.installer.clone();
        let bytes = tokio::task::spawn_blocking(move || installer.component(&f.hash))
            .await
            .ok()
            .flatten();
        let part = bytes.as_ref().and_then(|b| {
            let start = usize::try_from(f.offset).ok().filter(|o| *o < b.len())?;
            Some(&b[start..b.len().min(start + COMPONENT_CHUNK)])
        });
        match (bytes.as_ref(), part) {
            (Some(b), Some(part)) => ComponentChunk {
                hash: f.hash,
                offset: f.offset,
                total: b.len() as u64,
                bytes: part.to_vec(),
            },
            _ => ComponentChunk {
                hash: f.hash,
                offset: f.offset,
                total: 0,
                bytes: Vec::new(),
            },
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    identity: Identity,
    keys: Keyring,
    components: Option<Components>,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new((identity, keys, components));
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
                        if let Err(e) = connection(stream, link, &ctx.0, &ctx.1, ctx.2.as_ref(), commands).await {
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
    components: Option<&Components>,
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
    let (tx, mut rx) = mpsc::channel::<Msg>(LINK_QUEUE);
    let sender = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if writer.send(&msg).await.is_err() {
                break;
            }
        }
    });
    let up = commands
        .send(Command::LinkUp {
            peer,
            link,
            tx: tx.clone(),
        })
        .await
        .map_err(|_| LinkFailure::Controller);
    let result = match up {
        Ok(()) => read_loop(peer, link, &mut reader, keys, components, &tx, &commands).await,
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
    components: Option<&Components>,
    tx: &mpsc::Sender<Msg>,
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
            // Answered in turn: a replica that floods fetches waits on its
            // own link's queue, no one else's.
            Ok(()) if matches!(msg, Msg::ComponentFetch(_)) => {
                let Msg::ComponentFetch(f) = msg else { continue };
                match components.filter(|c| c.slots.contains(&f.body.replica.app)) {
                    Some(c) => {
                        let chunk = c.chunk(f.body).await;
                        metrics::counter!(m::COMPONENT_CHUNKS, "found" => if chunk.total > 0 { "yes" } else { "no" })
                            .increment(1);
                        if tx.send(Msg::ComponentChunk(chunk)).await.is_err() {
                            return Ok(());
                        }
                    }
                    None => {
                        metrics::counter!(m::DROPPED, "reason" => "component-fetch-not-a-slot").increment(1);
                    }
                }
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

    use super::*;
    use futures::future::BoxFuture;

    /// Holds one component, 10 MiB long.
    struct OneComponent(Vec<u8>);

    impl Installer for OneComponent {
        fn validate(&self, _: &[u8]) -> Result<(), String> {
            Ok(())
        }
        fn store(&self, _: &[u8]) -> Result<String, String> {
            Err("not in this test".into())
        }
        fn install(&self, _: AppId, _: String, _: String) -> BoxFuture<'static, Result<u64, String>> {
            Box::pin(async { Err("not in this test".to_string()) })
        }
        fn remove(&self, _: AppId) -> BoxFuture<'static, Result<(), String>> {
            Box::pin(async { Err("not in this test".to_string()) })
        }
        fn component(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
            (*hash == [1; 32]).then(|| self.0.clone())
        }
    }

    fn fetch(hash: [u8; 32], offset: u64) -> ComponentFetch {
        ComponentFetch {
            replica: zz_wire::ReplicaId {
                app: AppId(2),
                index: 0,
            },
            hash,
            offset,
        }
    }

    #[tokio::test]
    async fn a_component_is_served_in_chunks_and_an_unknown_one_as_total_zero() {
        let bytes: Vec<u8> = (0..10u32 << 20).map(|i| u8::try_from(i % 253).unwrap()).collect();
        let c = Components {
            installer: Arc::new(OneComponent(bytes.clone())),
            slots: Arc::new([AppId(2)].into()),
        };
        let mut got = Vec::new();
        while got.len() < bytes.len() {
            let chunk = c.chunk(fetch([1; 32], got.len() as u64)).await;
            assert_eq!(chunk.total, bytes.len() as u64);
            assert_eq!(chunk.offset, got.len() as u64);
            assert!(!chunk.bytes.is_empty() && chunk.bytes.len() <= COMPONENT_CHUNK);
            got.extend(chunk.bytes);
        }
        assert_eq!(got, bytes);
        let past = c.chunk(fetch([1; 32], bytes.len() as u64)).await;
        assert_eq!((past.total, past.bytes.len()), (0, 0), "an offset past the end");
        let unknown = c.chunk(fetch([2; 32], 0)).await;
        assert_eq!((unknown.total, unknown.bytes.len()), (0, 0), "a component not here");
    }
}
