//! The BFT client: batches requests into signed `ClientBatch`es, sends them
//! to the primary (to every node when late), and accepts a result once f+1
//! agreement nodes vouch for the same response. Used by the gateway, the
//! benchmark and the tests.

use crate::node::links::{self, Event, EVENT_QUEUE};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use zz_wire::frame::encode;
use zz_wire::{
    AppId, AppRequest, AppResponse, ClientBatch, ClientId, Deployment, Digest, Hasher, Identity, Msg, NodeId, Packed,
    Principal, View,
};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    #[error("no certified answer within {0:?}")]
    Timeout(Duration),
    #[error("the client is shut down")]
    Closed,
    #[error("request too large")]
    TooLarge,
    #[error("the certified answer does not decode")]
    BadAnswer,
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Most requests in one signed batch.
    pub batch_max: usize,
    /// Longest a request waits for others to share its batch.
    pub batch_delay: Duration,
    /// Re-send to every node when no answer came this long: four times the
    /// recent answer latency (so a crashed primary is noticed within a few
    /// round trips), at most this; `None` takes the deployment's
    /// `timing.client_retry_ms` (at most half the view-change timeout).
    /// Each further re-send of a batch waits twice as long as the one before.
    pub retry: Option<Duration>,
    /// Give up (ClientError::Timeout) after this long.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            // One signature per batch, checked by every node: at 1024
            // clients, 512 against 128 took the nodes from ~5.3 to ~4.5 µs
            // and the client from ~1.8 to ~1.4 µs per request.
            batch_max: 512,
            batch_delay: Duration::from_micros(300),
            retry: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A batch is sent once its request bodies reach this many bytes, whatever
/// `batch_max` says, so that large values do not make a batch too large
/// for one frame.
const BATCH_MAX_BYTES: usize = 1 << 20;

/// A certified answer and the view it was certified in.
type Answer = Result<(AppResponse, View), ClientError>;

/// A batch being filled: since when, its calls, and their body bytes.
struct Filling {
    since: Instant,
    calls: Vec<Call>,
    bytes: usize,
}

struct Call {
    app: AppId,
    req: AppRequest,
    reply: oneshot::Sender<Answer>,
}

#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Call>,
    _tasks: Arc<TaskGuard>,
}

struct TaskGuard(std::sync::Mutex<JoinSet<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.lock() {
            t.abort_all();
        }
    }
}

impl Client {
    /// Dials every agreement node and starts the client's loop. The tasks
    /// stop when the last clone of the client is dropped.
    pub fn start(dep: Arc<Deployment>, id: Identity, opts: ClientOptions) -> anyhow::Result<Client> {
        let me = match id.who {
            Principal::Client(c) => c,
            other => anyhow::bail!("identity {other} is not a client"),
        };
        let keys = Arc::new(dep.keyring());
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let mut tasks = JoinSet::new();
        let inbox = links::Inbox::new(keys.clone(), ev_tx, &mut tasks);
        let nodes = links::dial_nodes(&dep, None, &id, &keys, &inbox, &mut tasks)?;
        let (tx, rx) = mpsc::channel(4096);
        let mut opts = opts;
        // A late batch reaches the backups within half a view-change
        // timeout: their throughput monitor (Aardvark) only judges a
        // primary while they hold requests it has not served.
        let late = dep.timing.client_retry_ms.min(dep.timing.view_change_timeout_ms / 2);
        opts.retry = Some(
            opts.retry
                .unwrap_or(Duration::from_millis(late))
                .max(Duration::from_millis(1)),
        );
        let state = Loop {
            me,
            id,
            f: dep.f,
            n: dep.n(),
            opts,
            nodes,
            next_id: start_id(),
            view: 0,
            latency: Duration::ZERO,
            tick_at: Instant::now(),
            filling: BTreeMap::new(),
            batches: BTreeMap::new(),
        };
        tasks.spawn(state.run(rx, ev_rx));
        Ok(Client {
            tx,
            _tasks: Arc::new(TaskGuard(std::sync::Mutex::new(tasks))),
        })
    }

    /// Submits one request and waits for its certified answer.
    pub async fn call(&self, app: AppId, req: AppRequest) -> Result<AppResponse, ClientError> {
        self.call_with_view(app, req).await.map(|(r, _)| r)
    }

    /// Like `call`, also returning the view the answer was certified in: the
    /// lowest view among the f+1 matching answers, so at least one correct
    /// node was in that view when it answered.
    pub async fn call_with_view(&self, app: AppId, req: AppRequest) -> Answer {
        if req.body.len() > zz_wire::app::MAX_BODY + 4096 {
            return Err(ClientError::TooLarge);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Call { app, req, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        // The loop answers every call by its deadline (`retry_and_expire`);
        // a timer per call here would only repeat that, at a cost per call.
        rx.await.unwrap_or(Err(ClientError::Closed))
    }
}

/// The first re-send to every node waits this many recent latencies...
const RETRY_LATENCIES: u32 = 4;
/// ...and at least this long, so scheduling noise on a busy machine does
/// not make every request go to every node.
const MIN_RETRY: Duration = Duration::from_millis(25);
/// Longest wait between two re-sends of one batch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Request ids grow across restarts of a client that keeps its key: start
/// from the wall clock in nanoseconds.
fn start_id() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
}

/// A signed batch on its way: the callers waiting for its answers (caller
/// `i` for request `first_id + i`) and the nodes' votes on its results.
struct InFlight {
    app: AppId,
    frame: Bytes,
    replies: Vec<oneshot::Sender<Answer>>,
    /// First sent, for the latency estimate.
    sent: Instant,
    /// Last (re)sent.
    sent_at: Instant,
    /// Wait before the next re-send; `None` until the first one.
    backoff: Option<Duration>,
    deadline: Instant,
    votes: BTreeMap<NodeId, (Digest, View)>,
    answers: BTreeMap<Digest, Packed<AppResponse>>,
}

struct Loop {
    me: ClientId,
    id: Identity,
    f: usize,
    n: usize,
    opts: ClientOptions,
    nodes: BTreeMap<NodeId, links::Outbox>,
    next_id: u64,
    view: u64,
    /// Recent answer latency, for the retry period.
    latency: Duration,
    /// Next look for late batches and expired requests.
    tick_at: Instant,
    /// Per app, the batch being filled.
    filling: BTreeMap<AppId, Filling>,
    /// By first request id (ids are unique across apps).
    batches: BTreeMap<u64, InFlight>,
}

/// What f+1 nodes must agree on: a batch's packed responses.
fn answer_digest(r: &Packed<AppResponse>) -> Digest {
    Hasher::new("zz/client-answer/v2").bytes(r.as_bytes()).finish()
}

impl Loop {
    /// When a first re-send to every node is due: a few times the recent
    /// latency, never below `MIN_RETRY`, at most the configured retry.
    fn retry(&self) -> Duration {
        let cap = self.opts.retry.unwrap_or(Duration::from_millis(500));
        (self.latency * RETRY_LATENCIES).clamp(MIN_RETRY.min(cap), cap)
    }

    /// How often late batches are looked for.
    fn tick(&self) -> Duration {
        (self.retry() / 4).max(Duration::from_millis(2))
    }

    async fn run(mut self, mut calls: mpsc::Receiver<Call>, mut events: mpsc::Receiver<Event>) {
        // Two timers for the loop's life, moved only when their deadline
        // changes: a fresh one per turn costs a timer-wheel insert and removal
        // on every burst of calls or answers.
        let flush = tokio::time::sleep_until(Instant::now());
        let tick = tokio::time::sleep_until(self.tick_at);
        tokio::pin!(flush, tick);
        loop {
            let flush_at = self
                .filling
                .values()
                .map(|b| b.since + self.opts.batch_delay)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            if flush.deadline() != flush_at {
                flush.as_mut().reset(flush_at);
            }
            if tick.deadline() != self.tick_at {
                tick.as_mut().reset(self.tick_at);
            }
            tokio::select! {
                c = calls.recv() => {
                    let Some(c) = c else { return };
                    self.add(c);
                    while let Ok(c) = calls.try_recv() {
                        self.add(c);
                    }
                }
                Some(ev) = events.recv() => {
                    self.on_event(ev);
                    while let Ok(ev) = events.try_recv() {
                        self.on_event(ev);
                    }
                }
                () = &mut flush => self.flush_due(),
                () = &mut tick => {
                    self.retry_and_expire();
                    // Idle: nothing to re-send until `flush` brings it forward.
                    let idle = self.batches.is_empty();
                    self.tick_at = Instant::now() + if idle { Duration::from_secs(1) } else { self.tick() };
                }
            }
        }
    }

    fn add(&mut self, c: Call) {
        let app = c.app;
        let b = self.filling.entry(app).or_insert_with(|| Filling {
            since: Instant::now(),
            calls: Vec::new(),
            bytes: 0,
        });
        b.bytes += c.req.body.len();
        b.calls.push(c);
        if b.calls.len() >= self.opts.batch_max || b.bytes >= BATCH_MAX_BYTES {
            self.flush(app);
        }
    }

    fn flush_due(&mut self) {
        let now = Instant::now();
        let due: Vec<AppId> = self
            .filling
            .iter()
            .filter(|(_, b)| b.since + self.opts.batch_delay <= now)
            .map(|(a, _)| *a)
            .collect();
        for app in due {
            self.flush(app);
        }
    }

    fn flush(&mut self, app: AppId) {
        let Some(Filling { calls, .. }) = self.filling.remove(&app) else {
            return;
        };
        if calls.is_empty() {
            return;
        }
        let first_id = self.next_id;
        self.next_id += calls.len() as u64;
        let mut ops = Vec::with_capacity(calls.len());
        let mut replies = Vec::with_capacity(calls.len());
        for c in calls {
            ops.push(c.req);
            replies.push(c.reply);
        }
        let frame = ClientBatch::new(self.me, app, first_id, &ops)
            .map_err(|_| ClientError::TooLarge)
            .and_then(|b| encode(&Msg::Request(self.id.sign(b))).map_err(|_| ClientError::TooLarge));
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
                return;
            }
        };
        let now = Instant::now();
        let primary = NodeId(u16::try_from(self.view % self.n as u64).unwrap_or(0));
        if let Some(tx) = self.nodes.get(&primary) {
            let _ = tx.try_send(frame.clone());
        }
        self.tick_at = self.tick_at.min(now + self.tick());
        self.batches.insert(
            first_id,
            InFlight {
                app,
                frame,
                replies,
                sent: now,
                sent_at: now,
                backoff: None,
                deadline: now + self.opts.timeout,
                votes: BTreeMap::new(),
                answers: BTreeMap::new(),
            },
        );
    }

    fn on_event(&mut self, ev: Event) {
        let Event::Msg {
            from: Principal::Node(node),
            msg: Msg::Reply(r),
        } = ev
        else {
            return;
        };

        if r.client != self.me || r.node != node {
            return;
        }
        for res in r.results {
            let Some(b) = self.batches.get_mut(&res.first_id) else {
                continue;
            };
            if b.app != r.app || res.client != self.me {
                continue;
            }
            let d = answer_digest(&res.responses);
            if b.votes.insert(node, (d, r.view)).is_some() {
                continue; // a node's first answer counts
            }
            b.answers.entry(d).or_insert(res.responses);
            let views: Vec<View> = b.votes.values().filter(|(v, _)| *v == d).map(|(_, w)| *w).collect();
            if views.len() > self.f {
                // One lying node cannot steer the client: the lowest of f+1
                // views was reported by a correct node.
                let view = views.iter().copied().min().unwrap_or(0);
                self.view = self.view.max(view);
                if let Some(b) = self.batches.remove(&res.first_id) {
                    self.note_latency(b.sent.elapsed());
                    answer(b, &d, view);
                }
            }
        }
    }

    /// Moving average of answer latency (weight 1/8 per answer).
    fn note_latency(&mut self, l: Duration) {
        self.latency = (self.latency * 7 + l) / 8;
    }

    /// Late batches go to every node (which starts the backups' view-change
    /// timers); batches past their deadline fail.
    fn retry_and_expire(&mut self) {
        let now = Instant::now();
        let retry = self.retry();
        for b in self.batches.values_mut() {
            let wait = b.backoff.unwrap_or(retry);
            if now.duration_since(b.sent_at) >= wait {
                for tx in self.nodes.values() {
                    let _ = tx.try_send(b.frame.clone());
                }
                b.sent_at = now;
                // A view change takes a timeout or more: do not flood it.
                b.backoff = Some((wait * 2).min(MAX_BACKOFF));
            }
        }
        let expired: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, b)| b.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(b) = self.batches.remove(&k) {
                for r in b.replies {
                    let _ = r.send(Err(ClientError::Timeout(self.opts.timeout)));
                }
            }
        }
    }
}

/// Hands each caller of a certified batch its response. f+1 nodes vouched
/// for the packed responses, so a correct replica made them: each decodes
/// and there is one per request; anything else is reported, not guessed at.
fn answer(b: InFlight, d: &Digest, view: View) {
    let Some(packed) = b.answers.get(d) else {
        return;
    };
    let mut responses = packed.iter();
    for reply in b.replies {
        let a = match responses.next() {
            Some(Ok(resp)) => Ok((resp, view)),
            Some(Err(_)) | None => Err(ClientError::BadAnswer),
        };
        let _ = reply.send(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zz_wire::{AppId, ClientId, NodeId, Principal};

    /// A client loop whose only link, to node 0 (the primary), is `primary`.
    fn test_loop(opts: ClientOptions, primary: links::Outbox) -> Loop {
        let me = ClientId(1);
        Loop {
            me,
            id: Identity::from_seed(Principal::Client(me), [3; 32]),
            f: 1,
            n: 4,
            opts,
            nodes: BTreeMap::from([(NodeId(0), primary)]),
            next_id: 1,
            view: 0,
            latency: Duration::ZERO,
            tick_at: Instant::now(),
            filling: BTreeMap::new(),
            batches: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn a_call_nobody_answers_fails_at_its_deadline() {
        let (tx, _unread) = links::outbox();
        let opts = ClientOptions {
            timeout: Duration::from_millis(200),
            retry: Some(Duration::from_millis(50)),
            ..ClientOptions::default()
        };
        let (calls, calls_rx) = mpsc::channel(8);
        let (_events, events_rx) = mpsc::channel(8);
        let mut tasks = JoinSet::new();
        tasks.spawn(test_loop(opts, tx).run(calls_rx, events_rx));
        let client = Client {
            tx: calls,
            _tasks: Arc::new(TaskGuard(std::sync::Mutex::new(tasks))),
        };
        let t = Instant::now();
        let call = client.call(AppId(0), AppRequest::new("GET", "/kv/x", Vec::new()));
        let r = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the loop answers a call by its deadline");
        assert!(
            matches!(r, Err(ClientError::Timeout(d)) if d == Duration::from_millis(200)),
            "{r:?}"
        );
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
    }

    #[tokio::test]
    async fn a_batch_is_sent_once_its_bodies_reach_batch_max_bytes() {
        let (tx, mut rx) = links::outbox();
        let mut l = test_loop(ClientOptions::default(), tx);
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            let req = AppRequest::new("PUT", "/kv/x", vec![0; 300 << 10]);
            l.add(Call {
                app: AppId(0),
                req,
                reply,
            });
        }
        // Four 300 KiB bodies pass 1 MiB: those four went to the primary as
        // one batch, far below batch_max requests; the fifth waits.
        let frame = rx.try_recv().expect("a batch was sent");
        let Ok(Msg::Request(batch)) = zz_wire::frame::decode::<Msg>(&frame) else {
            panic!("not a request frame");
        };
        assert_eq!(batch.body.ops.len(), 4);
        assert!(rx.try_recv().is_none());
        assert_eq!(l.filling.get(&AppId(0)).map(|b| b.calls.len()), Some(1));
    }
}
