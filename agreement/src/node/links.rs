//! Authenticated TCP links. Every link has a reader task that decodes and
//! checks the author, a writer task that drains a bounded queue, and all
//! links of a process share one checker task that verifies the signatures
//! of whatever the readers have queued in one batch, then hands the
//! verified messages to the single event loop. Frames for a full queue are
//! dropped and counted, never waited for.

use super::budget::LinkBudget;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use zz_wire::crypto::Batch;
use zz_wire::frame::{handshake, LinkReader, LinkWriter};
use zz_wire::{Deployment, Identity, Keyring, Msg, NodeId, Principal, SigError};

/// Frames queued per link before new ones are dropped.
pub const LINK_QUEUE: usize = 8192;
/// Bytes queued per link before new frames are dropped. Orders carry whole
/// proposals (tens of KB each at load, up to 4 MiB with large values), so a
/// bound in frames alone let a link that does not drain hold GBs. 32 MiB
/// holds a full pipeline of the largest proposals; one frame is always let
/// through onto an empty queue. A link that stops draining (a paused
/// standby, a wedged replica) is shed after `zz_wire::outbox::STALL` and
/// holds nothing until its peer reads again.
pub const LINK_QUEUE_BYTES: usize = 32 << 20;
pub const EVENT_QUEUE: usize = 16384;
/// Most messages whose signatures are checked in one batch.
const CHECK_BATCH: usize = 64;

pub use zz_wire::outbox::{Outbox, OutboxRx, Refused};

/// A link queue of at most [`LINK_QUEUE`] frames and [`LINK_QUEUE_BYTES`] bytes.
pub fn outbox() -> (Outbox, OutboxRx) {
    zz_wire::outbox::outbox(LINK_QUEUE, LINK_QUEUE_BYTES)
}

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
        tx: Outbox,
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

/// Whether a node may send `msg` at all, by the message's own fields, checked
/// before any of its signatures (a pre-prepare can carry thousands of nested
/// client signatures): pre-prepares and new views come from the primary of
/// their view, prepares from a backup. `n` is the number of agreement nodes.
pub fn authorised(msg: &Msg, n: usize) -> bool {
    let primary = |view: u64| u64::try_from(n).ok().filter(|n| *n > 0).map(|n| view % n);
    match msg {
        Msg::PrePrepare(m) => primary(m.body.view) == Some(u64::from(m.body.node.0)),
        Msg::NewView(m) => primary(m.body.view) == Some(u64::from(m.body.node.0)),
        Msg::Prepare(m) => primary(m.body.0.view) != Some(u64::from(m.body.0.node.0)),
        _ => true,
    }
}

/// A message read off a link, its signatures not yet checked.
struct Unchecked {
    from: Principal,
    msg: Msg,
    link: Arc<Closing>,
}

/// Set by the checker when a message of the link fails: the reader stops,
/// and what the link sent after that message is dropped unread or unchecked.
#[derive(Default)]
struct Closing {
    closed: AtomicBool,
    notify: Notify,
}

impl Closing {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Where link tasks hand what they read: link events go straight to the
/// event loop, messages through the signature checker first.
#[derive(Clone)]
pub struct Inbox {
    events: mpsc::Sender<Event>,
    check: mpsc::Sender<Unchecked>,
    /// Agreement nodes in the deployment, for `authorised`.
    nodes: usize,
    /// Read budgets per proven principal (at most one per key of the
    /// deployment), kept across its links: reconnecting does not refill them.
    budgets: Arc<Budgets>,
}

/// The read budgets of every principal that has had a link, on one clock.
struct Budgets {
    started: tokio::time::Instant,
    by_peer: std::sync::Mutex<BTreeMap<Principal, LinkBudget>>,
}

impl Budgets {
    /// Charges `msg` to `peer`; how long its link should stop reading.
    fn charge(&self, peer: Principal, msg: &Msg, bytes: usize) -> Duration {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Ok(mut by_peer) = self.by_peer.lock() else {
            return Duration::ZERO;
        };
        by_peer
            .entry(peer)
            .or_insert_with(|| LinkBudget::new(peer, now))
            .charge(msg, bytes, now)
    }
}

impl Inbox {
    /// Starts the checker task, in `tasks`, in front of `events`.
    pub fn new(keys: Arc<Keyring>, events: mpsc::Sender<Event>, tasks: &mut JoinSet<()>) -> Inbox {
        let (check, rx) = mpsc::channel(EVENT_QUEUE);
        let nodes = keys.node_count();
        tasks.spawn(check_loop(rx, keys, events.clone()));
        let budgets = Arc::new(Budgets {
            started: tokio::time::Instant::now(),
            by_peer: std::sync::Mutex::new(BTreeMap::new()),
        });
        Inbox {
            events,
            check,
            nodes,
            budgets,
        }
    }
}

/// Checks what the readers queued, as many messages at a time as are
/// waiting (one batch verification is several times cheaper per signature
/// than checking each alone), and passes on the ones that verify in the
/// order they came. A message that fails is dropped, counted, and its link
/// closed.
async fn check_loop(mut rx: mpsc::Receiver<Unchecked>, keys: Arc<Keyring>, events: mpsc::Sender<Event>) {
    let mut buf = Vec::with_capacity(CHECK_BATCH);
    while rx.recv_many(&mut buf, CHECK_BATCH).await > 0 {
        buf.retain(|u| !u.link.is_closed());
        let verdicts = check_batch(buf.iter().map(|u| &u.msg), &keys);
        for (u, verdict) in buf.drain(..).zip(verdicts) {
            if u.link.is_closed() {
                continue; // after a bad message of the same link
            }
            match verdict {
                Ok(()) => {
                    if events
                        .send(Event::Msg {
                            from: u.from,
                            msg: u.msg,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    metrics::counter!("zz_agreement_invalid_messages_total", "reason" => "signature").increment(1);
                    tracing::warn!(peer = %u.from, kind = u.msg.kind(), error = %e, "bad signature; closing link");
                    u.link.close();
                }
            }
        }
    }
}

/// Every signature of each message (its own and those of the client batches
/// it carries), checked in one batch; one by one only when the batch fails,
/// to tell which messages are bad.
fn check_batch<'a>(msgs: impl ExactSizeIterator<Item = &'a Msg> + Clone, keys: &Keyring) -> Vec<Result<(), SigError>> {
    // One signature alone is cheaper to check without the batch machinery.
    if msgs.clone().map(|m| 1 + client_requests(m).count()).sum::<usize>() < 2 {
        return msgs.map(|m| verify_msg(m, keys)).collect();
    }
    let mut batch = Batch::new(keys);
    let mut verdicts: Vec<Result<(), SigError>> = msgs.clone().map(|m| queue_msg(m, &mut batch)).collect();
    if !batch.verify() {
        for (v, m) in verdicts.iter_mut().zip(msgs) {
            if v.is_ok() {
                *v = verify_msg(m, keys);
            }
        }
    }
    verdicts
}

fn verify_msg(msg: &Msg, keys: &Keyring) -> Result<(), SigError> {
    msg.verify(keys).and_then(|()| verify_client_requests(msg, keys))
}

fn queue_msg(msg: &Msg, batch: &mut Batch) -> Result<(), SigError> {
    msg.queue(batch)?;
    client_requests(msg).try_for_each(|r| r.queue(batch))
}

async fn read_loop(peer: Principal, mut reader: LinkReader, inbox: Inbox) {
    let link = Arc::new(Closing::default());
    loop {
        let (msg, bytes) = tokio::select! {
            r = reader.recv_sized() => match r {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    metrics::counter!("zz_agreement_invalid_frames_total").increment(1);
                    tracing::warn!(%peer, error = %e, "bad frame; closing link");
                    return;
                }
            },
            () = link.notify.notified() => return,
        };
        if !allowed(peer, &msg) {
            metrics::counter!("zz_agreement_invalid_messages_total", "reason" => "author").increment(1);
            tracing::warn!(%peer, kind = msg.kind(), "message not authored by the link's peer; closing link");
            return;
        }
        if !authorised(&msg, inbox.nodes) {
            metrics::counter!("zz_agreement_invalid_messages_total", "reason" => "authority").increment(1);
            tracing::warn!(%peer, kind = msg.kind(), "message its author may not send in that view; closing link");
            return;
        }
        let wait = inbox.budgets.charge(peer, &msg, bytes);
        let u = Unchecked {
            from: peer,
            msg,
            link: link.clone(),
        };
        if inbox.check.send(u).await.is_err() {
            return;
        }
        if !wait.is_zero() {
            // Over its budget: read nothing more from this peer for now
            // (TCP pushes back on it alone).
            metrics::counter!("zz_link_budget_waits_total").increment(1);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = link.notify.notified() => return,
            }
        }
    }
}

/// The client batches a message carries (a proposal's, a log fetch
/// answer's, a body fetch answer's; view changes and new views carry
/// headers only).
fn client_requests(msg: &Msg) -> Box<dyn Iterator<Item = &zz_wire::Signed<zz_wire::ClientBatch>> + '_> {
    match msg {
        Msg::PrePrepare(pp) => Box::new(pp.body.proposal.requests.iter()),
        Msg::LogEntries(le) => Box::new(le.body.entries.iter().flat_map(|(_, p)| p.requests.iter())),
        Msg::Bodies(b) => Box::new(b.body.proposals.iter().flat_map(|(_, p)| p.requests.iter())),
        _ => Box::new(std::iter::empty()),
    }
}

/// A proposal carries clients' signed batches; a primary must not be able to
/// slip in requests no client made. The link checker checks them with the
/// message's own signature (the simulator's driver with this), and the core
/// relies on it.
pub fn verify_client_requests(msg: &Msg, keys: &Keyring) -> Result<(), zz_wire::SigError> {
    zz_wire::crypto::verify_all(client_requests(msg), keys)
}

async fn write_loop(mut writer: LinkWriter, rx: &mut OutboxRx) -> Result<(), zz_wire::frame::FrameError> {
    while let Some(first) = rx.recv().await {
        writer.feed_encoded(first).await?;
        while let Some(more) = rx.try_recv() {
            writer.feed_encoded(more).await?;
        }
        writer.flush().await?;
    }
    Ok(())
}

/// Connections still in their handshake, at most (fewer under a low
/// open-file limit: see `AcceptLimits::default`). A connection past the cap
/// is closed as soon as it is accepted, so unauthenticated connections
/// cannot take the descriptors the node needs for its links and store.
pub const PENDING_MAX: usize = 256;
/// A connection that has not proven its key within this is closed.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// Bounds on connections that have not finished their handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptLimits {
    pub pending: usize,
    pub handshake: Duration,
}

impl Default for AcceptLimits {
    /// `PENDING_MAX`, or an eighth of the open-file soft limit if less.
    fn default() -> Self {
        let fd_share =
            zz_wire::fdlimit::nofile_limit().map_or(PENDING_MAX, |n| usize::try_from(n / 8).unwrap_or(usize::MAX));
        AcceptLimits {
            pending: PENDING_MAX.min(fd_share).max(1),
            handshake: HANDSHAKE_DEADLINE,
        }
    }
}

/// Accepts links from anyone in the deployment (peers, replicas, clients).
pub async fn accept_loop(listener: TcpListener, me: Identity, keys: Arc<Keyring>, inbox: Inbox) {
    accept_loop_with(listener, me, keys, inbox, AcceptLimits::default()).await;
}

/// `accept_loop` with the pending-connection bounds given.
pub async fn accept_loop_with(
    listener: TcpListener,
    me: Identity,
    keys: Arc<Keyring>,
    inbox: Inbox,
    limits: AcceptLimits,
) {
    let pending = Arc::new(Semaphore::new(limits.pending));
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
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    metrics::counter!("zz_agreement_refused_connections_total").increment(1);
                    tracing::debug!(%addr, "too many connections in their handshake; closed");
                    continue;
                };
                next_conn += 1;
                conns.spawn(serve_inbound(
                    stream,
                    addr,
                    next_conn,
                    me.clone(),
                    keys.clone(),
                    inbox.clone(),
                    (permit, limits.handshake),
                ));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// `pending`: the slot this connection holds until its handshake is done,
/// and how long that may take.
async fn serve_inbound(
    stream: TcpStream,
    addr: SocketAddr,
    conn: u64,
    me: Identity,
    keys: Arc<Keyring>,
    inbox: Inbox,
    pending: (OwnedSemaphorePermit, Duration),
) {
    let (permit, deadline) = pending;
    let shaken = tokio::time::timeout(deadline, handshake(stream, &me, &keys, None)).await;
    drop(permit);
    let (who, reader, writer) = match shaken {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            metrics::counter!("zz_agreement_rejected_links_total").increment(1);
            tracing::warn!(%addr, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            metrics::counter!("zz_agreement_rejected_links_total").increment(1);
            tracing::warn!(%addr, "no handshake within {deadline:?}; closed");
            return;
        }
    };
    tracing::debug!(%who, %addr, "link up");
    let (tx, mut rx) = outbox();
    if inbox.events.send(Event::Up { who, conn, tx }).await.is_err() {
        return;
    }
    tokio::select! {
        () = read_loop(who, reader, inbox.clone()) => {}
        _ = write_loop(writer, &mut rx) => {}
    }
    let _ = inbox.events.send(Event::Down { who, conn }).await;
}

/// Keeps a link up to every agreement node of `dep` except `except` (a node
/// does not dial itself), each with its own bounded queue; returns the queues.
pub fn dial_nodes(
    dep: &Deployment,
    except: Option<NodeId>,
    me: &Identity,
    keys: &Arc<Keyring>,
    inbox: &Inbox,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<BTreeMap<NodeId, Outbox>> {
    let mut queues = BTreeMap::new();
    for n in dep.node_ids().filter(|n| Some(*n) != except) {
        let (tx, rx) = outbox();
        let addr = dep.node_addr(n).ok_or_else(|| anyhow::anyhow!("no address for {n}"))?;
        tasks.spawn(dial_loop(
            addr,
            Principal::Node(n),
            rx,
            me.clone(),
            keys.clone(),
            inbox.clone(),
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
    mut rx: OutboxRx,
    me: Identity,
    keys: Arc<Keyring>,
    inbox: Inbox,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        rx.disconnected();
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
                    () = read_loop(target, reader, inbox.clone()) => {}
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
    use super::{accept_loop, accept_loop_with, allowed, authorised, check_batch, AcceptLimits, Event, Inbox};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::mpsc;
    use tokio::task::JoinSet;
    use zz_wire::frame::handshake;
    use zz_wire::{
        AppId, AppRequest, ClientBatch, ClientId, Commit, Digest, Identity, Keyring, LogCheckpoint, Msg, NodeId,
        NonDet, PrePrepare, Prepare, Principal, Proposal, Signed, Vote,
    };

    fn node(i: u8) -> Identity {
        Identity::from_seed(Principal::Node(NodeId(u16::from(i))), [i + 1; 32])
    }

    fn client() -> Identity {
        Identity::from_seed(Principal::Client(ClientId(0)), [99; 32])
    }

    fn ring() -> Keyring {
        let mut k = Keyring::new();
        for id in [node(0), node(1), node(2), client()] {
            k.insert(id.who, id.public());
        }
        k
    }

    fn request(first_id: u64) -> Signed<ClientBatch> {
        client().sign(
            ClientBatch::new(
                ClientId(0),
                AppId(0),
                first_id,
                &[AppRequest::new("PUT", "/kv/a", b"1".to_vec())],
            )
            .expect("pack"),
        )
    }

    fn vote(by: u16, seq: u64) -> Vote {
        Vote {
            node: NodeId(by),
            app: AppId(0),
            view: 0,
            seq,
            digest: Digest::ZERO,
        }
    }

    fn pre_prepare(requests: Vec<Signed<ClientBatch>>) -> Msg {
        let proposal = Proposal {
            requests,
            nondet: NonDet::default(),
        };
        let digest = proposal.digest();
        Msg::PrePrepare(node(0).sign(PrePrepare {
            node: NodeId(0),
            app: AppId(0),
            view: 0,
            seq: 1,
            proposal,
            digest,
        }))
    }

    #[test]
    fn one_batch_check_names_each_bad_message_and_passes_the_rest() {
        let keys = ring();
        let mut forged_prepare = node(1).sign(Prepare(vote(1, 1)));
        forged_prepare.body.0.seq = 2;
        let mut forged_request = request(10);
        forged_request.body.first_id = 11;
        let stranger = Identity::from_seed(Principal::Node(NodeId(7)), [7; 32]);
        let msgs = [
            Msg::Request(request(1)),
            Msg::Prepare(forged_prepare),
            Msg::Prepare(node(2).sign(Prepare(vote(2, 1)))),
            // Its own signature is good; a client batch it carries is not.
            pre_prepare(vec![request(5), forged_request]),
            pre_prepare(vec![request(5), request(6)]),
            Msg::Prepare(stranger.sign(Prepare(vote(7, 1)))),
        ];
        let verdicts: Vec<bool> = check_batch(msgs.iter(), &keys).iter().map(Result::is_ok).collect();
        assert_eq!(verdicts, [true, false, true, false, true, false]);
        // All good: one batch, all pass.
        let good = [&msgs[0], &msgs[2], &msgs[4]];
        assert!(check_batch(good.into_iter(), &keys).iter().all(Result::is_ok));
        // A single message is checked alone, with the same answer.
        assert!(check_batch([&msgs[1]].into_iter(), &keys)[0].is_err());
        assert!(check_batch([&msgs[3]].into_iter(), &keys)[0].is_err());
    }

    #[tokio::test]
    async fn a_link_that_sends_a_bad_signature_is_closed_after_what_it_sent_before() {
        let keys = Arc::new(ring());
        let (ev_tx, mut events) = mpsc::channel(64);
        let mut tasks = JoinSet::new();
        let inbox = Inbox::new(keys.clone(), ev_tx, &mut tasks);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tasks.spawn(accept_loop(listener, node(0), keys.clone(), inbox));

        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (_, mut reader, mut writer) = handshake(stream, &client(), &keys, Some(Principal::Node(NodeId(0))))
            .await
            .expect("handshake");
        let mut forged = request(2);
        forged.body.first_id = 3;
        for m in [Msg::Request(request(1)), Msg::Request(forged), Msg::Request(request(4))] {
            writer.send(&m).await.expect("send");
        }
        let mut seen = Vec::new();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("an event within 5 s")
                .expect("events open");
            match ev {
                Event::Up { who, .. } => seen.push(format!("up {who}")),
                Event::Msg {
                    msg: Msg::Request(r), ..
                } => seen.push(format!("request {}", r.body.first_id)),
                Event::Msg { msg, .. } => seen.push(msg.kind().to_string()),
                Event::Down { who, .. } => {
                    seen.push(format!("down {who}"));
                    break;
                }
            }
        }
        assert_eq!(seen, ["up c0", "request 1", "down c0"]);
        // The node's side closed the connection.
        let end = tokio::time::timeout(Duration::from_secs(5), reader.recv())
            .await
            .expect("closed within 5 s");
        assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    }

    /// A peer that is down (crashed, or an impersonator dialled in while the
    /// real one is away) must not make the link to it hold up to
    /// `LINK_QUEUE_BYTES`: under `zz bench --attack flood-node` the answers
    /// to the impersonator's log fetches piled up there.
    #[tokio::test]
    async fn a_link_whose_peer_stays_down_sheds_its_queue_after_the_stall_period() {
        use zz_wire::outbox::{Refused, SHED_MIN_BYTES, STALL};
        let keys = Arc::new(ring());
        let (ev_tx, _events) = mpsc::channel(64);
        let mut tasks = JoinSet::new();
        let inbox = Inbox::new(keys.clone(), ev_tx, &mut tasks);
        let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = gone.local_addr().expect("addr");
        drop(gone); // nothing listens there
        let (tx, rx) = super::outbox();
        tasks.spawn(super::dial_loop(
            addr,
            Principal::Node(NodeId(1)),
            rx,
            node(0),
            keys,
            inbox,
        ));
        let chunk = bytes::Bytes::from(vec![0u8; 64 << 10]);
        let frames = 2 * SHED_MIN_BYTES / chunk.len();
        for _ in 0..frames {
            tx.try_send(chunk.clone())
                .expect("room: the queue is far from its bound");
        }
        tokio::time::sleep(STALL + Duration::from_millis(300)).await;
        let r = tx.try_send(chunk.clone());
        assert_eq!(r, Err(Refused::Shed { frames }), "queued {} frames", tx.len());
        assert_eq!(tx.len(), 0);
        assert_eq!(
            tx.try_send(chunk),
            Err(Refused::Stalled),
            "refused while the peer stays away"
        );
    }

    #[tokio::test]
    async fn connections_past_the_pending_cap_are_closed_at_once_and_the_rest_at_the_handshake_deadline() {
        use tokio::io::AsyncReadExt;
        let keys = Arc::new(ring());
        let (ev_tx, _events) = mpsc::channel(64);
        let mut tasks = JoinSet::new();
        let inbox = Inbox::new(keys.clone(), ev_tx, &mut tasks);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let limits = AcceptLimits {
            pending: 3,
            handshake: Duration::from_secs(2),
        };
        tasks.spawn(accept_loop_with(listener, node(0), keys.clone(), inbox, limits));

        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        let t0 = tokio::time::Instant::now();
        let mut readers = JoinSet::new();
        for mut s in idle {
            readers.spawn(async move {
                // The node's hello, then the close.
                let mut buf = [0u8; 256];
                let read_all = async { while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {} };
                tokio::time::timeout(Duration::from_secs(5), read_all)
                    .await
                    .expect("closed within 5 s");
                t0.elapsed()
            });
        }
        let closed_after: Vec<Duration> = readers.join_all().await;
        let early = closed_after.iter().filter(|d| **d < Duration::from_secs(1)).count();
        assert_eq!(early, 7, "{closed_after:?}");
        assert!(
            closed_after
                .iter()
                .all(|d| *d < Duration::from_secs(1) || *d >= Duration::from_millis(1800)),
            "{closed_after:?}"
        );
        // With the slots free again, a real peer gets in.
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        handshake(stream, &client(), &keys, Some(Principal::Node(NodeId(0))))
            .await
            .expect("handshake after the flood");
    }

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
    fn an_unsigned_message_is_only_taken_from_its_author_s_link() {
        let commit = Msg::Commit(Commit(vote(2, 1)));
        assert!(allowed(Principal::Node(NodeId(2)), &commit));
        assert!(!allowed(Principal::Node(NodeId(1)), &commit));
        assert!(!allowed(Principal::Client(ClientId(0)), &commit));
    }

    /// Checked before a single signature: only view v's primary (v mod n)
    /// may send its pre-prepares, and it sends no prepares.
    #[test]
    fn only_the_primary_of_its_view_may_send_a_pre_prepare() {
        let pp = pre_prepare(vec![request(1)]); // node 0, view 0
        assert!(authorised(&pp, 4));
        let Msg::PrePrepare(mut m) = pp.clone() else {
            unreachable!()
        };
        m.body.view = 1;
        assert!(!authorised(&Msg::PrePrepare(m.clone()), 4), "view 1 is node 1's");
        m.body.view = 4;
        assert!(authorised(&Msg::PrePrepare(m), 4));
        let prep = |by: u16| Msg::Prepare(node(u8::try_from(by).unwrap()).sign(Prepare(vote(by, 1))));
        assert!(!authorised(&prep(0), 4), "the primary does not prepare");
        assert!(authorised(&prep(1), 4));
    }

    #[test]
    fn a_node_may_relay_other_nodes_checkpoint_votes_as_a_log_fetch_proof() {
        assert!(allowed(Principal::Node(NodeId(1)), &log_checkpoint(1)));
        assert!(allowed(Principal::Node(NodeId(1)), &log_checkpoint(2)));
        assert!(!allowed(Principal::Client(ClientId(0)), &log_checkpoint(2)));
    }
}
