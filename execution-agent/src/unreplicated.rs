//! `zz-agent serve`: one app executed by one agent, with no agreement, no
//! signatures and no voting — the ceiling `zz bench --mode unreplicated`
//! measures the replicated modes against.
//!
//! It runs the same app code against the same Merkle state as a replica
//! (`app::run`, `State`): it updates the root once per executed batch, as a
//! replica does once per sequence number, and takes a copy-on-write snapshot
//! every `checkpoint_interval` batches, which it treats as stable at once
//! (there is nobody to agree with).
//!
//! Wire: TCP, length-delimited frames (`zz_wire::frame::codec`, at most
//! 16 MiB) carrying postcard of `Call` one way and `Answer` the other. A
//! connection may have many calls in flight; answers come back in execution
//! order, which per connection is the order the calls were sent.
//!
//! One task owns the state. Connection readers feed it through one bounded
//! channel; each call carries a reserved slot in its connection's outbox, so
//! the executor never waits on a slow client, and a client with too many
//! calls in flight simply stops being read.

use crate::app::{self, App, Ctx};
use crate::merkle::Shape;
use crate::state::State;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use zz_wire::frame::codec;
use zz_wire::{AppRequest, AppResponse, NonDet};

/// Calls queued for the executor, across all connections.
const QUEUE: usize = 8192;
/// Calls one connection may have in flight before it stops being read.
const IN_FLIGHT: usize = 4096;
/// Most calls the executor takes in one batch.
const MAX_BATCH: usize = 1024;

/// A client's request, with a tag of its choosing echoed in the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub tag: u64,
    pub req: AppRequest,
}

/// The answer to the call with the same tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub tag: u64,
    pub resp: AppResponse,
}

/// What the server has done so far (read by tests and the exit log).
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub executed: AtomicU64,
    pub batches: AtomicU64,
    /// Frames that were too long or did not decode; each closed its connection.
    pub malformed: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Batches between two snapshots of the state.
    pub checkpoint_interval: u64,
    pub shape: Shape,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            checkpoint_interval: 128,
            shape: Shape::default(),
        }
    }
}

/// One queued call: the request and the reserved slot for its answer.
struct Job {
    tag: u64,
    req: AppRequest,
    reply: mpsc::OwnedPermit<Answer>,
}

/// Serves `app` on `listener` until `shutdown` completes. Every task it
/// starts is stopped when it returns.
pub async fn serve(
    listener: TcpListener,
    app: Box<dyn App>,
    opts: ServeOptions,
    counters: Arc<Counters>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (jobs_tx, jobs_rx) = mpsc::channel(QUEUE);
    let mut tasks = JoinSet::new();
    tasks.spawn(execute(app, opts, jobs_rx, counters.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "connection");
                    tasks.spawn(connection(stream, jobs_tx.clone(), counters.clone()));
                }
                // Running out of descriptors is transient: keep serving the rest.
                Err(e) => tracing::warn!("accept: {e}"),
            },
            // Reap finished connection tasks so the set stays small.
            Some(_) = tasks.join_next(), if tasks.len() > 1 => {}
        }
    }
    tasks.shutdown().await;
    Ok(())
}

/// The state owner: executes what is queued, in arrival order.
async fn execute(app: Box<dyn App>, opts: ServeOptions, mut jobs: mpsc::Receiver<Job>, counters: Arc<Counters>) {
    let mut state = State::new(opts.shape);
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut answers = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        seq += 1;
        let ctx = Ctx {
            seq,
            nondet: NonDet {
                timestamp_ms: now_ms(),
                seed: seq,
            },
            op: 0,
            admin: false,
        };
        answers.extend(batch.drain(..).map(|job| {
            // No key is ever stale here: nothing is fetched from peers.
            let resp = app::run(app.as_ref(), &mut state, &ctx, &job.req)
                .unwrap_or_else(|_| app::error(503, "state unavailable"));
            (job.reply, Answer { tag: job.tag, resp })
        }));
        // Like the replica, which replies with the root of each sequence
        // number: hash once per batch, before answering.
        state.root();
        if opts.checkpoint_interval > 0 && seq.is_multiple_of(opts.checkpoint_interval) {
            state.snapshot(seq);
            state.stabilize(seq);
        }
        counters.executed.fetch_add(answers.len() as u64, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        for (reply, answer) in answers.drain(..) {
            reply.send(answer);
        }
    }
}

/// Reads calls off one connection and writes their answers back.
async fn connection(stream: TcpStream, jobs: mpsc::Sender<Job>, counters: Arc<Counters>) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (r, w) = stream.into_split();
    let (out_tx, out_rx) = mpsc::channel::<Answer>(IN_FLIGHT);
    let writer = tokio::spawn(write_answers(FramedWrite::new(w, codec()), out_rx));
    let mut frames = FramedRead::new(r, codec());
    while let Some(frame) = frames.next().await {
        let call = match frame {
            Ok(bytes) => postcard::from_bytes::<Call>(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let call = match call {
            Ok(c) => c,
            Err(e) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?peer, "malformed frame, closing the connection: {e}");
                break;
            }
        };
        // Waits while this connection has IN_FLIGHT unanswered calls.
        let Ok(reply) = out_tx.clone().reserve_owned().await else {
            break;
        };
        let job = Job {
            tag: call.tag,
            req: call.req,
            reply,
        };
        if jobs.send(job).await.is_err() {
            break;
        }
    }
    // The writer ends once every call already queued is answered.
    drop(out_tx);
    let _ = writer.await;
}

type Sink = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

async fn write_answers(mut sink: Sink, mut answers: mpsc::Receiver<Answer>) {
    let mut ready = Vec::with_capacity(64);
    while answers.recv_many(&mut ready, 256).await > 0 {
        for a in ready.drain(..) {
            // An answer too large to frame is dropped; the client times out.
            let Ok(bytes) = zz_wire::frame::encode(&a) else {
                tracing::warn!(tag = a.tag, "answer too large to send");
                continue;
            };
            if sink.feed(bytes).await.is_err() {
                return;
            }
        }
        // One flush per burst of answers, not per answer.
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
