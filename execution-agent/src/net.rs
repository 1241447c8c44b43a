//! The TCP driver around the replica state machine.
//!
//! A replica cannot be dialled into (it may be a VM behind user-mode
//! networking), so it dials out to every agreement node and to the
//! orchestrator, reconnecting with capped backoff. Each link is one task
//! with a bounded outbox. The replica itself runs on one plain thread that
//! owns it: it blocks on the inbox (a ticker keeps it awake), and while it
//! fetches state it blocks on the state-response channel, which the link
//! readers fill directly, so fetching never waits behind the inbox (and
//! likewise on the component channel while it fetches a tenant's Wasm
//! component from the orchestrator, `components`).

use crate::components::ComponentLink;
use crate::replica::{Out, Replica};
use crate::source::{FetchError, StateSource};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc as stdmpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use zz_wire::frame::{encode, handshake};
use zz_wire::outbox::{outbox, Outbox, OutboxRx};
use zz_wire::{
    Deployment, Identity, Keyring, Msg, NodeId, Principal, ReplicaId, Seq, Signed, StateGive, StateRequest,
    StateResponse, StateWant,
};

const OUTBOX: usize = 1024;
/// Bytes queued per link before frames are dropped: state responses that
/// the nodes relay for other replicas can be megabytes each.
const OUTBOX_BYTES: usize = 32 << 20;
const INBOX: usize = 4096;
const RESPONSES: usize = 256;
const TICK: Duration = Duration::from_millis(50);
const HEARTBEAT_MS: u64 = 200;
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long one state request may take before the next node is tried.
/// A peer that is alive answers a relayed request in milliseconds on a LAN;
/// the first try is short so a paused or fenced peer costs little, the
/// second is long enough for a large answer on a loaded host.
const FETCH_TIMEOUTS: [Duration; 2] = [Duration::from_millis(250), Duration::from_millis(1500)];
/// The background sync is not urgent: a peer that does not answer within
/// this is skipped until the next round, so the replica thread never stalls
/// long (a live peer on a slow host may need most of it for 512 buckets).
const BACKGROUND_FETCH_TIMEOUT: Duration = Duration::from_millis(1000);
/// A peer never heard from may be paused or fenced (a woken replica's first
/// peer often is): one short try, then the next peer. A late answer marks
/// it alive, and later requests to it get `FETCH_TIMEOUTS`.
const UNKNOWN_PEER_TIMEOUT: Duration = Duration::from_millis(150);
/// Buckets asked for in one background request.
const BACKGROUND_BUCKETS: usize = 512;
/// Longest the background sync may hold the replica thread per tick.
const BACKGROUND_BUDGET: Duration = Duration::from_millis(25);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the replica thread stopped: {0}")]
    Thread(String),
}

/// What the replica thread receives.
enum Input {
    Msg(Principal, Msg),
    Connected(Principal),
    Tick,
}

/// Rewrites a loopback address to the host alias (inside a VM the host's
/// loopback is e.g. 10.0.2.2). Any other address is a peer's real one and
/// is dialled as it is: the VM's host routes it (the orchestrator gives the
/// guest a route to each, see the libvirt backend's `routes`).
pub fn aliased(addr: SocketAddr, alias: Option<IpAddr>) -> SocketAddr {
    match alias {
        Some(ip) if addr.ip().is_loopback() || addr.ip().is_unspecified() => SocketAddr::new(ip, addr.port()),
        _ => addr,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Outboxes of every link, by peer.
#[derive(Clone)]
struct Links {
    nodes: Vec<(NodeId, Outbox)>,
    orchestrator: Outbox,
}

impl Links {
    fn send(&self, to: Option<NodeId>, msg: &Msg) {
        let Ok(b) = encode(msg) else {
            tracing::error!(kind = msg.kind(), "message too large to send");
            return;
        };
        for (n, tx) in &self.nodes {
            if to.is_none_or(|t| t == *n) && tx.try_send(b.clone()).is_err() {
                tracing::debug!(node = %n, kind = msg.kind(), "outbox full or link down; dropped");
            }
        }
    }

    fn to_orchestrator(&self, msg: &Msg) {
        if let Ok(b) = encode(msg) {
            let _ = self.orchestrator.try_send(b);
        }
    }
}

/// Runs the agent until the replica thread ends (it exits the process on
/// the `crash` fault) or `shutdown` resolves.
pub async fn run(
    d: Deployment,
    identity: Identity,
    me: ReplicaId,
    replica: Replica,
    components: ComponentLink,
    alias: Option<IpAddr>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    // The replica's own: replacement keys announced on any link are
    // current for it and every link at once.
    let keys = replica.keys().clone();
    let (in_tx, in_rx) = mpsc::channel::<Input>(INBOX);
    let (resp_tx, resp_rx) = stdmpsc::sync_channel::<Signed<StateResponse>>(RESPONSES);
    let resp_tx = ResponseGate {
        tx: resp_tx,
        me,
        keys: keys.clone(),
        asked: Arc::default(),
        dropped: Arc::default(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut nodes = Vec::new();
    for n in &d.nodes {
        let (tx, rx) = outbox(OUTBOX, OUTBOX_BYTES);
        nodes.push((NodeId(n.id), tx));
        tasks.spawn(link(
            aliased(n.addr, alias),
            Principal::Node(NodeId(n.id)),
            identity.clone(),
            keys.clone(),
            Handoff {
                inbox: in_tx.clone(),
                responses: resp_tx.clone(),
                components: None,
            },
            rx,
        ));
    }
    let (otx, orx) = outbox(OUTBOX, OUTBOX_BYTES);
    components.connect(otx.clone(), identity.clone());
    tasks.spawn(link(
        aliased(d.orchestrator.addr, alias),
        Principal::Orchestrator,
        identity.clone(),
        keys.clone(),
        Handoff {
            inbox: in_tx.clone(),
            responses: resp_tx.clone(),
            components: Some(components),
        },
        orx,
    ));
    let links = Links {
        nodes,
        orchestrator: otx,
    };
    let ticker = in_tx.clone();
    tasks.spawn(async move {
        let mut t = tokio::time::interval(TICK);
        loop {
            t.tick().await;
            if ticker.send(Input::Tick).await.is_err() {
                return;
            }
        }
    });
    let source = NetSource {
        me,
        identity: identity.clone(),
        keys,
        links: links.clone(),
        gate: resp_tx.clone(),
        responses: resp_rx,
        next_id: 0,
        rr: 0,
        background: false,
        heartbeat: None,
        last_heartbeat: Instant::now(),
        heard_from: Default::default(),
    };
    let thread = std::thread::Builder::new()
        .name("replica".into())
        .spawn(move || replica_loop(replica, in_rx, links, source))
        .map_err(|e| AgentError::Thread(e.to_string()))?;
    tokio::select! {
        _ = shutdown => {}
        _ = tasks.join_next() => {}
    }
    tasks.shutdown().await;
    drop(in_tx);
    if thread.is_finished() {
        thread.join().map_err(|_| AgentError::Thread("panicked".into()))?;
    }
    Ok(())
}

fn replica_loop(mut r: Replica, mut inbox: mpsc::Receiver<Input>, links: Links, mut src: NetSource) {
    let started = Instant::now();
    let mut last_hb = 0u64;
    let mut pending: Vec<Out> = r.start(now_ms());
    loop {
        carry_out(std::mem::take(&mut pending), &links);
        let Some(input) = inbox.blocking_recv() else {
            return;
        };
        let now = now_ms();
        pending = match input {
            Input::Msg(from, msg) => r.on_msg(now, from, msg, &mut src),
            Input::Connected(Principal::Node(_)) => r.start(now),
            // The orchestrator link dropping and coming back means the VM
            // was probably saved and restored, which silently kills every
            // TCP connection of user-mode networking: probe the node links
            // now so dead ones fail fast and redial.
            Input::Connected(_) => r.heartbeat(now).map(Out::Broadcast).into_iter().collect(),
            Input::Tick => {
                let mut out = r.on_tick(now, &mut src);
                if now >= last_hb + HEARTBEAT_MS {
                    last_hb = now;
                    src.heartbeat = r.heartbeat(now);
                    src.last_heartbeat = Instant::now();
                    if let Some(hb) = src.heartbeat.clone() {
                        // To the nodes too: an idle link that died unnoticed
                        // (restored VM) fails on this send and is redialled.
                        out.push(Out::Broadcast(hb.clone()));
                        out.push(Out::ToOrchestrator(hb));
                    }
                }
                background_sync(&mut r, &inbox, &mut src, started);
                out
            }
        };
    }
}

/// Fills stale buckets while nothing else is waiting, within a time budget,
/// so a woken replica soon holds the whole checkpoint again (it may be the
/// only correct copy after the next fencing) without delaying execution.
fn background_sync(r: &mut Replica, inbox: &mpsc::Receiver<Input>, src: &mut NetSource, started: Instant) {
    let t0 = Instant::now();
    src.background = true;
    while inbox.is_empty() && r.state().stale_count() > 0 && t0.elapsed() < BACKGROUND_BUDGET {
        match r.background_sync(BACKGROUND_BUCKETS, src) {
            Ok(n) if r.state().stale_count() == 0 => tracing::info!(
                installed = n,
                secs = started.elapsed().as_secs_f64(),
                "background sync complete"
            ),
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("background sync: {e}");
                break;
            }
        }
    }
    src.background = false;
}

fn carry_out(out: Vec<Out>, links: &Links) {
    for o in out {
        match o {
            Out::Broadcast(m) => links.send(None, &m),
            Out::ToNode(n, m) => links.send(Some(n), &m),
            Out::ToOrchestrator(m) => links.to_orchestrator(&m),
            Out::Delay(d) => std::thread::sleep(d),
            Out::Exit(code) => {
                tracing::warn!(code, "exiting on command");
                std::process::exit(code);
            }
        }
    }
}

/// Where link readers hand state responses to the replica thread. Only an
/// answer to a request the thread made lately, from the peer it asked and
/// signed by that peer, gets through: a flood of others (a Byzantine
/// replica's, relayed by correct nodes) is dropped here, cheap checks first,
/// instead of filling the queue and crowding out the real answer.
#[derive(Clone)]
struct ResponseGate {
    tx: stdmpsc::SyncSender<Signed<StateResponse>>,
    me: ReplicaId,
    keys: Keyring,
    /// (request id, peer asked), newest last.
    asked: Arc<std::sync::Mutex<std::collections::VecDeque<(u64, ReplicaId)>>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// Requests whose (possibly late) answers are still let through.
const ASKED_KEPT: usize = 16;

impl ResponseGate {
    fn expect(&self, id: u64, peer: ReplicaId) {
        if let Ok(mut a) = self.asked.lock() {
            if a.len() >= ASKED_KEPT {
                a.pop_front();
            }
            a.push_back((id, peer));
        }
    }

    fn offer(&self, r: Signed<StateResponse>) {
        let b = &r.body;
        let asked = self
            .asked
            .lock()
            .is_ok_and(|a| a.iter().any(|(id, peer)| *id == b.id && *peer == b.from));
        if b.to != self.me || !asked || r.verify(&self.keys).is_err() {
            let n = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(from = %b.from, dropped = n, "state responses nobody asked for dropped");
            }
            return;
        }
        // The replica thread may be busy; it asks again.
        let _ = self.tx.try_send(r);
    }
}

/// Where a link's reader hands what it reads.
struct Handoff {
    /// To the replica thread.
    inbox: mpsc::Sender<Input>,
    /// State responses, to a fetch that waits for them.
    responses: ResponseGate,
    /// Component chunks (the orchestrator's link only).
    components: Option<ComponentLink>,
}

/// One outgoing link: dial, handshake, pump both ways, redial on failure.
async fn link(addr: SocketAddr, peer: Principal, me: Identity, keys: Keyring, to: Handoff, mut outbox: OutboxRx) {
    let Handoff {
        inbox,
        responses,
        components,
    } = to;
    let mut backoff = Duration::from_millis(50);
    loop {
        outbox.disconnected();
        let conn = match TcpStream::connect(addr).await {
            Ok(s) => handshake(s, &me, &keys, Some(peer)).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (mut rd, mut wr) = match conn {
            Ok((_, rd, wr)) => (rd, wr),
            Err(e) => {
                tracing::debug!(%peer, %addr, "connect failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        tracing::info!(%peer, %addr, "link up");
        if inbox.send(Input::Connected(peer)).await.is_err() {
            return;
        }
        let mut dropped = Dropped::default();
        let reader = async {
            loop {
                match rd.recv().await {
                    Ok(Some(Msg::StateResponse(r))) => responses.offer(r),
                    Ok(Some(Msg::ReplicaKey(k))) => match k.apply(&keys) {
                        Ok(true) => tracing::info!(
                            replica = %Principal::Replica(k.body.replica),
                            generation = k.body.generation,
                            "peer replica key replaced"
                        ),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "replica key announcement does not verify; dropped")
                        }
                    },
                    // Only the orchestrator's link carries components.
                    Ok(Some(Msg::ComponentChunk(c))) => {
                        if let Some(cl) = &components {
                            cl.offer(c);
                        }
                    }
                    Ok(Some(m)) => {
                        if !deliver(&inbox, peer, m, &mut dropped).await {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(%peer, "link error: {e}");
                        return;
                    }
                }
            }
        };
        let writer = async {
            while let Some(b) = outbox.recv().await {
                if wr.feed_encoded(b).await.is_err() {
                    return;
                }
                while let Some(b) = outbox.try_recv() {
                    if wr.feed_encoded(b).await.is_err() {
                        return;
                    }
                }
                if wr.flush().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = reader => {}
            _ = writer => {}
        }
        if inbox.is_closed() {
            return;
        }
        tracing::info!(%peer, "link down; redialling");
    }
}

/// Messages a link reader dropped because the inbox was full, and when
/// that was last logged.
#[derive(Default)]
struct Dropped {
    count: u64,
    logged: Option<Instant>,
}

/// Hands `m` to the replica thread. A full inbox means that thread is busy,
/// perhaps blocked on a state response that this very link must read next:
/// waiting would stall both until the fetch times out. So everything that is
/// asked for again is dropped instead (orders and certificates come back
/// through FETCH_ORDERS, a peer's state request goes to another node); only
/// the orchestrator's commands wait. False once the replica thread is gone.
async fn deliver(inbox: &mpsc::Sender<Input>, peer: Principal, m: Msg, dropped: &mut Dropped) -> bool {
    match inbox.try_send(Input::Msg(peer, m)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(Input::Msg(_, m))) if !matches!(m, Msg::Control(_)) => {
            dropped.count += 1;
            if dropped.logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                dropped.logged = Some(Instant::now());
                tracing::warn!(%peer, kind = m.kind(), total = dropped.count, "inbox full; message dropped");
            }
            true
        }
        Err(mpsc::error::TrySendError::Full(input)) => inbox.send(input).await.is_ok(),
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Fetches checkpoint state from peer replicas through the agreement nodes'
/// relay, trying another node when one does not answer in time.
struct NetSource {
    me: ReplicaId,
    identity: Identity,
    keys: Keyring,
    links: Links,
    gate: ResponseGate,
    responses: stdmpsc::Receiver<Signed<StateResponse>>,
    next_id: u64,
    rr: usize,
    /// Set while the background sync asks: one try per peer, no long retry.
    background: bool,
    /// The replica's latest heartbeat, re-sent while a fetch blocks the
    /// replica thread, so a replica busy catching up is not taken for dead.
    heartbeat: Option<Msg>,
    last_heartbeat: Instant,
    /// Peers that have answered a state request (possibly late).
    heard_from: std::collections::HashSet<ReplicaId>,
}

impl NetSource {
    fn keep_alive(&mut self) {
        if self.last_heartbeat.elapsed() < Duration::from_millis(HEARTBEAT_MS) {
            return;
        }
        self.last_heartbeat = Instant::now();
        if let Some(hb) = &self.heartbeat {
            self.links.to_orchestrator(hb);
        }
    }
}

impl StateSource for NetSource {
    fn fetch(&mut self, peer: ReplicaId, checkpoint: Seq, want: StateWant) -> Result<StateGive, FetchError> {
        let n = self.links.nodes.len();
        let timeouts: &[Duration] = if !self.heard_from.contains(&peer) {
            std::slice::from_ref(&UNKNOWN_PEER_TIMEOUT)
        } else if self.background {
            std::slice::from_ref(&BACKGROUND_FETCH_TIMEOUT)
        } else {
            &FETCH_TIMEOUTS[..n.min(2)]
        };
        for timeout in timeouts {
            self.next_id += 1;
            let id = self.next_id;
            let req = self.identity.sign(StateRequest {
                from: self.me,
                to: peer,
                id,
                checkpoint,
                want: want.clone(),
            });
            let via = self.links.nodes[self.rr % n].0;
            self.rr += 1;
            self.gate.expect(id, peer);
            self.links.send(Some(via), &Msg::StateRequest(req));
            let deadline = Instant::now() + *timeout;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                self.keep_alive();
                let r = match self
                    .responses
                    .recv_timeout(left.min(Duration::from_millis(HEARTBEAT_MS)))
                {
                    Ok(r) => r,
                    Err(stdmpsc::RecvTimeoutError::Timeout) => continue,
                    Err(stdmpsc::RecvTimeoutError::Disconnected) => break,
                };
                let b = &r.body;
                if b.to != self.me || r.verify(&self.keys).is_err() {
                    continue;
                }
                self.heard_from.insert(b.from);
                if b.id == id && b.from == peer {
                    return Ok(r.body.give);
                }
            }
            tracing::info!(%peer, node = %via, ?timeout, "state request timed out");
        }
        Err(FetchError::Timeout(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::{aliased, deliver, Dropped, Input};
    use std::time::Duration;
    use tokio::sync::mpsc;
    use zz_wire::{AppId, Control, ControlCmd, Heartbeat, Identity, Msg, NodeId, Principal, ReplicaId};

    fn heartbeat() -> Msg {
        let id = Identity::from_seed(Principal::Node(NodeId(0)), [3; 32]);
        Msg::Heartbeat(id.sign(Heartbeat {
            from: Principal::Node(NodeId(0)),
            app: AppId(0),
            view: 0,
            last_executed: 1,
            last_checkpoint: 0,
            fetched_objects: 0,
            stale_objects: 0,
            time_ms: 0,
        }))
    }

    fn control() -> Msg {
        let id = Identity::from_seed(Principal::Orchestrator, [4; 32]);
        Msg::Control(id.sign(Control {
            target: Principal::Replica(ReplicaId {
                app: AppId(0),
                index: 0,
            }),
            nonce: 1,
            cmd: ControlCmd::ClearFaults,
        }))
    }

    #[tokio::test]
    async fn a_full_inbox_drops_what_is_asked_for_again_but_an_orchestrator_command_waits() {
        let (tx, mut rx) = mpsc::channel(1);
        let peer = Principal::Node(NodeId(0));
        let mut dropped = Dropped::default();
        assert!(deliver(&tx, peer, heartbeat(), &mut dropped).await);
        // The inbox is full: the reader goes on instead of blocking.
        let quick = tokio::time::timeout(Duration::from_secs(5), deliver(&tx, peer, heartbeat(), &mut dropped)).await;
        assert_eq!(quick.ok(), Some(true));
        assert_eq!(dropped.count, 1);
        // A command is never dropped: it waits for room.
        let mut waiting = Box::pin(deliver(&tx, Principal::Orchestrator, control(), &mut dropped));
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut waiting)
            .await
            .is_err());
        assert!(matches!(rx.recv().await, Some(Input::Msg(_, Msg::Heartbeat(_)))));
        assert!(waiting.await);
        assert!(matches!(rx.recv().await, Some(Input::Msg(_, Msg::Control(_)))));
        drop(rx);
        let mut dropped = Dropped::default();
        assert!(
            !deliver(&tx, peer, heartbeat(), &mut dropped).await,
            "a closed inbox ends the reader"
        );
    }

    #[test]
    fn only_loopback_addresses_become_the_host_alias() {
        let alias = Some("10.0.2.2".parse().unwrap());
        let at = |s: &str| aliased(s.parse().unwrap(), alias).to_string();
        assert_eq!(at("127.0.0.1:7100"), "10.0.2.2:7100");
        assert_eq!(at("0.0.0.0:7100"), "10.0.2.2:7100");
        assert_eq!(
            at("10.213.7.11:7100"),
            "10.213.7.11:7100",
            "a peer on another host keeps its address"
        );
        assert_eq!(aliased("127.0.0.1:1".parse().unwrap(), None).to_string(), "127.0.0.1:1");
    }
}
