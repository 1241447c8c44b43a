//! The client side of `zz bench --mode unreplicated`: a few TCP connections
//! to each app's `zz-agent serve`, with many tagged calls in flight on each.
//! The server answers a connection's calls in the order they were sent, so
//! each connection keeps a FIFO of waiting callers and checks the tags.
//! `Servers` starts and stops those `zz-agent serve` children.

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};
use zz_agent::unreplicated::{Answer, Call};
use zz_wire::config::free_ports;
use zz_wire::frame::{codec, encode};
use zz_wire::{AppRequest, AppResponse};

/// Calls waiting to be written on one connection.
const OUTBOX: usize = 4096;
/// A call with no answer by then counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

type Waiters = Arc<Mutex<VecDeque<(u64, oneshot::Sender<AppResponse>)>>>;
/// A call handed to a connection's writer: the request and where to answer.
type Outgoing = (AppRequest, oneshot::Sender<AppResponse>);

/// Connections to the servers of every app. Dropping it stops its tasks.
pub struct UnreplicatedClient {
    apps: Vec<Vec<mpsc::Sender<Outgoing>>>,
    next: AtomicUsize,
    _tasks: JoinSet<()>,
}

impl UnreplicatedClient {
    /// Opens `per_app` connections to each address (one address per app).
    pub async fn connect(addrs: &[SocketAddr], per_app: usize) -> std::io::Result<Self> {
        let mut tasks = JoinSet::new();
        let mut apps = Vec::new();
        for addr in addrs {
            let mut conns = Vec::new();
            for _ in 0..per_app.max(1) {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (tx, rx) = mpsc::channel(OUTBOX);
                let waiters = Waiters::default();
                let (r, w) = stream.into_split();
                tasks.spawn(write_calls(FramedWrite::new(w, codec()), rx, waiters.clone()));
                tasks.spawn(read_answers(FramedRead::new(r, codec()), waiters, *addr));
                conns.push(tx);
            }
            apps.push(conns);
        }
        Ok(UnreplicatedClient {
            apps,
            next: AtomicUsize::new(0),
            _tasks: tasks,
        })
    }

    /// One call to app `app` (its index in the address list); `false` on a
    /// server error status, a lost connection or a timeout.
    pub async fn call(&self, app: usize, req: AppRequest) -> bool {
        let Some(conns) = self.apps.get(app) else { return false };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        let (tx, rx) = oneshot::channel();
        if conns[i].send((req, tx)).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(CALL_TIMEOUT, rx).await, Ok(Ok(r)) if r.status < 500)
    }
}

type Writer = FramedWrite<tokio::net::tcp::OwnedWriteHalf, tokio_util::codec::LengthDelimitedCodec>;
type Reader = FramedRead<tokio::net::tcp::OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>;

/// Tags calls, registers their waiters, and writes them, one flush per burst.
async fn write_calls(mut sink: Writer, mut calls: mpsc::Receiver<Outgoing>, waiters: Waiters) {
    let mut tag = 0u64;
    let mut ready = Vec::with_capacity(64);
    while calls.recv_many(&mut ready, 256).await > 0 {
        for (req, reply) in ready.drain(..) {
            tag += 1;
            let Ok(bytes) = encode(&Call { tag, req }) else {
                continue;
            };
            // Registered before it is written, so the answer finds its waiter.
            match waiters.lock() {
                Ok(mut w) => w.push_back((tag, reply)),
                Err(_) => return,
            }
            if sink.feed(bytes).await.is_err() {
                return;
            }
        }
        if SinkExt::<bytes::Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
}

/// Hands each answer to the oldest waiter; an answer out of order means the
/// server broke its promise, and the connection is given up (its waiters
/// then see errors).
async fn read_answers(mut frames: Reader, waiters: Waiters, addr: SocketAddr) {
    while let Some(Ok(frame)) = frames.next().await {
        let Ok(a) = postcard::from_bytes::<Answer>(&frame) else {
            tracing::warn!(%addr, "undecodable answer; dropping the connection");
            break;
        };
        let waiter = match waiters.lock() {
            Ok(mut w) => w.pop_front(),
            Err(_) => break,
        };
        match waiter {
            Some((tag, reply)) if tag == a.tag => {
                let _ = reply.send(a.resp);
            }
            _ => {
                tracing::warn!(%addr, tag = a.tag, "answer out of order; dropping the connection");
                break;
            }
        }
    }
    // Fail the callers still waiting on this connection at once.
    if let Ok(mut w) = waiters.lock() {
        w.clear();
    }
}

/// One `zz-agent serve` child per app, on free loopback ports, logging to
/// files in a temp dir. Dropping it kills them (`kill_on_drop`).
pub struct Servers {
    pub addrs: Vec<SocketAddr>,
    names: Vec<String>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Servers {
    /// Starts a server of app kind `kind` for each name (its path prefix).
    pub fn start(kind: &str, names: &[String]) -> anyhow::Result<Servers> {
        let bin = crate::launch::agent_bin()?;
        let dir = tempfile::Builder::new().prefix("zz-bench-unrep-").tempdir()?;
        let addrs = free_ports(names.len())?;
        let mut children = Vec::new();
        for (name, addr) in names.iter().zip(&addrs) {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
            let child = Command::new(&bin)
                .arg("serve")
                .arg("--app")
                .arg(kind)
                .arg("--name")
                .arg(name)
                .arg("--listen")
                .arg(addr.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {} serve for {name}", bin.display()))?;
            children.push(child);
        }
        Ok(Servers {
            addrs,
            names: names.to_vec(),
            children,
            dir,
        })
    }

    /// Completes when any server exits (which during a run is a failure).
    pub async fn exited(&mut self) -> anyhow::Error {
        let waits = self.children.iter_mut().map(|c| Box::pin(c.wait()));
        let (status, i, _) = futures::future::select_all(waits).await;
        let name = self.names.get(i).map_or("?", String::as_str);
        let log = self.dir.path().join(format!("{name}.log"));
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        anyhow::anyhow!(
            "the unreplicated agent of {name} exited ({status:?}); last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// Stops every server and waits for it.
    pub async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

/// Returns once every address accepts connections.
pub async fn wait_accepting(addrs: &[SocketAddr]) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    for addr in addrs {
        while TcpStream::connect(addr).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the unreplicated agent on {addr} did not accept within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
