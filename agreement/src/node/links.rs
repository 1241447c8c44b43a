//! Authenticated TCP links. Every link has a reader task that decodes,
//! checks the author and the signature, and hands verified messages to the
//! node's single event loop, and a writer task that drains a bounded queue.
//! Frames for a full queue are dropped and counted, never waited for.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use zz_wire::frame::{handshake, LinkReader, LinkWriter};
use zz_wire::{Deployment, Identity, Keyring, Msg, NodeId, Principal};

/// Frames queued per link before new ones are dropped (a paused replica's
/// link just fills and drops).
pub const LINK_QUEUE: usize = 8192;
pub const EVENT_QUEUE: usize = 16384;

#[derive(Debug)]
pub enum Event {
    /// A verified message, from an authenticated peer.
    Msg {
        from: Principal,
        msg: Msg,
    },
    /// A peer dialled in; frames for it go to `tx`.
    Up {
        who: Principal,
        conn: u64,
        tx: mpsc::Sender<Bytes>,
    },
    Down {
        who: Principal,
        conn: u64,
    },
}

/// Whether `peer` may deliver `msg` on its link: the author must be the
/// peer itself, except client requests that a backup forwards to the
/// primary, and other nodes' checkpoint votes that a node serving a log
/// fetch sends as the stable checkpoint's proof (signatures still checked).
pub fn allowed(peer: Principal, msg: &Msg) -> bool {
    match (peer, msg) {
        (Principal::Node(_), Msg::Request(_)) => true,
        (Principal::Node(_), Msg::LogCheckpoint(c)) => matches!(c.author(), Principal::Node(_)),
        (_, Msg::CheckpointCert(_)) => false,
        (p, m) => m.author() == Some(p),
    }
}

async fn read_loop(peer: Principal, mut reader: LinkReader, keys: Arc<Keyring>, events: mpsc::Sender<Event>) {
    loop {
        let msg = match reader.recv().await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                metrics::counter!("zz_agreement_invalid_frames_total").increment(1);
                tracing::warn!(%peer, error = %e, "bad frame; closing link");
                return;
            }
        };
        if !allowed(peer, &msg) {
            metrics::counter!("zz_agreement_invalid_messages_total", "reason" => "author").increment(1);
            tracing::warn!(%peer, kind = msg.kind(), "message not authored by the link's peer; closing link");
            return;
        }
        if let Err(e) = msg.verify(&keys).and_then(|()| verify_client_requests(&msg, &keys)) {
            metrics::counter!("zz_agreement_invalid_messages_total", "reason" => "signature").increment(1);
            tracing::warn!(%peer, kind = msg.kind(), error = %e, "bad signature; closing link");
            return;
        }
        if events.send(Event::Msg { from: peer, msg }).await.is_err() {
            return;
        }
    }
}

/// A proposal carries clients' signed batches; a primary must not be able to
/// slip in requests no client made. Checked here, off the event loop, so the
/// work spreads over the reader tasks.
pub fn verify_client_requests(msg: &Msg, keys: &Keyring) -> Result<(), zz_wire::SigError> {
    match msg {
        Msg::PrePrepare(pp) => zz_wire::crypto::verify_all(&pp.body.proposal.requests, keys),
        Msg::NewView(nv) => nv
            .body
            .pre_prepares
            .iter()
            .try_for_each(|pp| zz_wire::crypto::verify_all(&pp.body.proposal.requests, keys)),
        Msg::LogEntries(le) => le
            .body
            .entries
            .iter()
            .try_for_each(|(_, p)| zz_wire::crypto::verify_all(&p.requests, keys)),
        _ => Ok(()),
    }
}

async fn write_loop(mut writer: LinkWriter, rx: &mut mpsc::Receiver<Bytes>) -> Result<(), zz_wire::frame::FrameError> {
    while let Some(first) = rx.recv().await {
        writer.feed_encoded(first).await?;
        while let Ok(more) = rx.try_recv() {
            writer.feed_encoded(more).await?;
        }
        writer.flush().await?;
    }
    Ok(())
}

/// Accepts links from anyone in the deployment (peers, replicas, clients).
pub async fn accept_loop(listener: TcpListener, me: Identity, keys: Arc<Keyring>, events: mpsc::Sender<Event>) {
    let mut conns = JoinSet::new();
    let mut next_conn = 0u64;
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let (stream, addr) = match acc {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                next_conn += 1;
                conns.spawn(serve_inbound(stream, addr, next_conn, me.clone(), keys.clone(), events.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_inbound(
    stream: TcpStream,
    addr: SocketAddr,
    conn: u64,
    me: Identity,
    keys: Arc<Keyring>,
    events: mpsc::Sender<Event>,
) {
    let (who, reader, writer) = match handshake(stream, &me, &keys, None).await {
        Ok(x) => x,
        Err(e) => {
            metrics::counter!("zz_agreement_rejected_links_total").increment(1);
            tracing::warn!(%addr, error = %e, "handshake failed");
            return;
        }
    };
    tracing::debug!(%who, %addr, "link up");
    let (tx, mut rx) = mpsc::channel(LINK_QUEUE);
    if events.send(Event::Up { who, conn, tx }).await.is_err() {
        return;
    }
    tokio::select! {
        _ = read_loop(who, reader, keys, events.clone()) => {}
        _ = write_loop(writer, &mut rx) => {}
    }
    let _ = events.send(Event::Down { who, conn }).await;
}

/// Keeps a link up to every agreement node of `dep` except `except` (a node
/// does not dial itself), each with its own bounded queue; returns the queues.
pub fn dial_nodes(
    dep: &Deployment,
    except: Option<NodeId>,
    me: &Identity,
    keys: &Arc<Keyring>,
    events: &mpsc::Sender<Event>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<BTreeMap<NodeId, mpsc::Sender<Bytes>>> {
    let mut queues = BTreeMap::new();
    for n in dep.node_ids().filter(|n| Some(*n) != except) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let addr = dep.node_addr(n).ok_or_else(|| anyhow::anyhow!("no address for {n}"))?;
        tasks.spawn(dial_loop(
            addr,
            Principal::Node(n),
            rx,
            me.clone(),
            keys.clone(),
            events.clone(),
        ));
        queues.insert(n, tx);
    }
    Ok(queues)
}

/// Keeps a link to `target` at `addr` up, reconnecting with backoff, and
/// sends it whatever arrives on `rx`. Messages the target sends back on this
/// link are delivered as events too.
pub async fn dial_loop(
    addr: SocketAddr,
    target: Principal,
    mut rx: mpsc::Receiver<Bytes>,
    me: Identity,
    keys: Arc<Keyring>,
    events: mpsc::Sender<Event>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let link = match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => handshake(s, &me, &keys, Some(target)).await.map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connect timed out".into()),
        };
        match link {
            Ok((_, reader, writer)) => {
                backoff = Duration::from_millis(20);
                tracing::debug!(%target, %addr, "dialled");
                tokio::select! {
                    _ = read_loop(target, reader, keys.clone(), events.clone()) => {}
                    r = write_loop(writer, &mut rx) => {
                        if r.is_ok() {
                            return; // our side is shutting down
                        }
                    }
                }
            }
            Err(e) => tracing::trace!(%target, %addr, error = %e, "dial failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;
    use zz_wire::{AppId, ClientId, Digest, Identity, LogCheckpoint, Msg, NodeId, Principal};

    fn log_checkpoint(by: u16) -> Msg {
        let id = Identity::from_seed(Principal::Node(NodeId(by)), [7; 32]);
        Msg::LogCheckpoint(id.sign(LogCheckpoint {
            node: NodeId(by),
            app: AppId(0),
            seq: 128,
            log_digest: Digest::ZERO,
        }))
    }

    #[test]
    fn a_node_may_relay_other_nodes_checkpoint_votes_as_a_log_fetch_proof() {
        assert!(allowed(Principal::Node(NodeId(1)), &log_checkpoint(1)));
        assert!(allowed(Principal::Node(NodeId(1)), &log_checkpoint(2)));
        assert!(!allowed(Principal::Client(ClientId(0)), &log_checkpoint(2)));
    }
}
