//! The one owner of the orchestrator's state. Links, the backend and the
//! HTTP handlers send it typed commands over bounded channels; it acts,
//! records every transition as an event, persists, and answers.

mod apps;
mod faults;
mod keys;
mod pool;

pub use apps::{valid_app_name, SLOT_KIND};

use crate::backend::{Backend, BackendEvent};
use crate::certs::{Decision, Tracker};
use crate::metrics as m;
use crate::model::{
    AppView, Clock, ClusterView, Event, FaultRecord, FaultView, Incident, IncidentView, NodeAppStatus, NodeView,
    ReplicaRecord, ReplicaState, ReplicaView, TenantApp,
};
use crate::store::{Change, Store, StoreError, MAX_EVENTS};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use zz_wire::{AppId, Deployment, Identity, Keyring, Msg, NodeId, Principal, ReplicaId};

pub use faults::FaultTarget;

/// Timeouts of the replica pool; the defaults suit agents on one machine.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How often timeouts are checked.
    pub tick: Duration,
    /// An active replica silent this long (after its first heartbeat) is
    /// suspected: a standby is woken in its place.
    pub silence_ms: u64,
    /// An active replica with no heartbeat at all this long after it
    /// started is suspected.
    pub startup_grace_ms: u64,
    /// Whether a suspected replica is also fenced, on the orchestrator's
    /// word alone. Off by default: the orchestrator fences only on an f+1
    /// FAULT certificate (or when the backend reports the instance gone),
    /// since a loaded host or a short partition silences a correct replica
    /// too. A hung replica is still fenced: the agreement nodes' reply
    /// audit names it. Turn it on only where the hosts are trusted to be
    /// responsive and no certificate would come (no agreement nodes audit).
    pub silence_fencing: bool,
    /// A replica whose instance could not be started (the backend refused:
    /// its host down, its image missing) is started again, as a fresh
    /// standby, this long after the failure.
    pub retry_start_ms: u64,
    /// A new standby is paused after this even if it never caught up.
    pub standby_grace_ms: u64,
    /// A woken replica counts as active after this even without a heartbeat.
    pub waking_grace_ms: u64,
    /// Extra active replicas are paused once the app had no incident this long.
    pub settle_ms: u64,
    /// Replicas each app keeps executing: f+1 (zz) unless set; 2f+1 runs
    /// classic BFT with no standby (the benchmark's `full` mode).
    pub active_replicas: Option<usize>,
    /// A paused standby this many checkpoints behind the stable one is
    /// resumed to catch up and paused again, so an incident wakes it into a
    /// short replay rather than a long catch-up; `None` never refreshes.
    pub refresh_checkpoints: Option<u64>,
    /// ... but not sooner than this after it was paused,
    pub refresh_after_ms: u64,
    /// ... and, so that refreshing does not take CPU from the active
    /// replicas under load (a refresh runs the standby, and its peers serve
    /// it state, until it is current), only in a quiet moment: while the
    /// machine spent at most this fraction of its CPU over the last tick
    /// (where the backend can tell; `None` ignores load)...
    pub refresh_max_busy: Option<f64>,
    /// ... unless it has been paused this long: under sustained load a
    /// standby is still refreshed, to bound its catch-up work.
    pub refresh_overdue_ms: u64,
    /// A WAKE certificate joins the app's incident (one per fault episode)
    /// unless that incident was certified, with no WAKE or FAULT
    /// certificate joining it, this long ago; default
    /// [`DEFAULT_QUIET_MS`](crate::certs::DEFAULT_QUIET_MS), 2 s.
    pub incident_quiet_ms: u64,
    /// For this long after a replica's instance is provisioned, a FAULT
    /// certificate naming a seq it has not reported executing is taken as
    /// a late one about the instance before it (see `late_fault`); default
    /// [`INSTANCE_SETTLE_MS`](crate::certs::INSTANCE_SETTLE_MS), the time
    /// the tracker's own boundary takes to settle.
    pub late_fault_ms: u64,
}

impl Tuning {
    /// Whether a standby paused `paused_ms` ago, `behind` seqs behind the
    /// stable checkpoint, is refreshed now, the machine being `busy`.
    pub fn refresh_due(&self, paused_ms: u64, behind: u64, checkpoint_interval: u64, busy: Option<f64>) -> bool {
        let Some(lag) = self.refresh_checkpoints.map(|n| n * checkpoint_interval.max(1)) else {
            return false;
        };
        let loaded = matches!((busy, self.refresh_max_busy), (Some(b), Some(max)) if b > max);
        behind >= lag && paused_ms > self.refresh_after_ms && (!loaded || paused_ms > self.refresh_overdue_ms)
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            tick: Duration::from_millis(200),
            silence_ms: 2_000,
            startup_grace_ms: 15_000,
            silence_fencing: false,
            standby_grace_ms: 10_000,
            retry_start_ms: 5_000,
            waking_grace_ms: 3_000,
            settle_ms: 3_000,
            active_replicas: None,
            refresh_checkpoints: Some(1),
            refresh_after_ms: 10_000,
            refresh_max_busy: Some(0.5),
            refresh_overdue_ms: 120_000,
            incident_quiet_ms: crate::certs::DEFAULT_QUIET_MS,
            late_fault_ms: crate::certs::INSTANCE_SETTLE_MS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaAction {
    Pause,
    Wake,
    /// `cold`: destroy the instance instead of suspending it to disk; a
    /// wake then provisions a clean one from the image.
    Hibernate {
        cold: bool,
    },
    Replace,
}

/// Failures a command can answer with; the API maps them to status codes.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no such {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A valid request the orchestrator will not carry out as asked.
    #[error("{0}")]
    Refused(String),
    #[error("backend: {0}")]
    Backend(#[from] crate::backend::BackendError),
    #[error("the orchestrator is shutting down")]
    Unavailable,
}

type Reply<T> = oneshot::Sender<T>;

/// What the HTTP handlers ask.
pub enum ApiCmd {
    Cluster(Reply<ClusterView>),
    Replicas(Reply<Vec<ReplicaView>>),
    Act {
        id: ReplicaId,
        action: ReplicaAction,
        reply: Reply<Result<ReplicaView, CommandError>>,
    },
    InjectFault {
        target: FaultTarget,
        duration_ms: Option<u64>,
        /// Past f faulty replicas of an app (or f nodes) too.
        force: bool,
        reply: Reply<Result<u64, CommandError>>,
    },
    Faults(Reply<Vec<FaultView>>),
    ClearFault {
        id: u64,
        reply: Reply<Result<(), CommandError>>,
    },
    Incidents(Reply<Vec<IncidentView>>),
    Events {
        since: u64,
        reply: Reply<Vec<Event>>,
    },
    /// The backlog after `since` and a live feed, taken atomically.
    Subscribe {
        since: u64,
        reply: Reply<(Vec<Event>, broadcast::Receiver<Event>)>,
    },
    Apps(Reply<Vec<AppView>>),
    /// The tenant app by name.
    App {
        name: String,
        reply: Reply<Result<TenantApp, CommandError>>,
    },
    /// A free slot and replicas for a new app.
    ReserveApp {
        name: String,
        hash: String,
        reply: Reply<Result<TenantApp, CommandError>>,
    },
    /// Its install was certified.
    AppInstalled {
        name: String,
        hash: String,
        version: u64,
        reply: Reply<Result<TenantApp, CommandError>>,
    },
    /// Its replicas destroyed, its slot freed.
    RemoveApp {
        name: String,
        reply: Reply<Result<(), CommandError>>,
    },
}

pub enum Command {
    /// A verified message from a link's proven peer.
    Inbound {
        peer: Principal,
        link: u64,
        msg: Msg,
    },
    LinkUp {
        peer: Principal,
        link: u64,
        tx: mpsc::Sender<Msg>,
    },
    LinkDown {
        peer: Principal,
        link: u64,
    },
    Api(ApiCmd),
}

/// How long after a standby joins the executing replicas its silence is
/// not held against it: the nodes judge silence a reply timeout (400 ms by
/// default) after an incident's answer, often before a woken replica has
/// caught up to the incident's seq.
const JOIN_SILENCE_GRACE_MS: u64 = 2_000;

/// Capacity of the command channel.
pub const COMMAND_QUEUE: usize = 1024;

/// The detail of the `paused` event for a new standby whose heartbeat said
/// it holds the stable checkpoint whole (one paused when its grace ran out
/// says so instead). The whole-system simulator checks that it does.
pub const STANDBY_READY: &str = "standby ready";

#[derive(Default)]
struct NodeStatus {
    apps: BTreeMap<AppId, NodeAppStatus>,
    last_heartbeat_ms: Option<u64>,
}

pub struct Controller {
    dep: Deployment,
    identity: Identity,
    /// Shared with the links: a replacement's key is current for their
    /// handshakes and checks the moment it is announced.
    keys: Keyring,
    backend: Arc<dyn Backend>,
    store: Store,
    tuning: Tuning,
    replicas: BTreeMap<ReplicaId, ReplicaRecord>,
    tracker: Tracker,
    nodes: BTreeMap<NodeId, NodeStatus>,
    links: HashMap<Principal, (u64, mpsc::Sender<Msg>)>,
    /// The link each replica's current instance dialled in on. Cleared when
    /// a new generation is provisioned: until the new instance connects,
    /// what arrives for that replica is from the fenced one (its last
    /// heartbeats, in flight when it was killed, would pass a replacement
    /// with no state yet off as a synced standby).
    instance_links: HashMap<ReplicaId, u64>,
    /// Active replicas silent past their limit, not (yet) fenced: a standby
    /// was woken for each, and they are the first paused once the app
    /// settles.
    suspects: BTreeSet<ReplicaId>,
    /// Standbys whose current instance has not been woken since it was
    /// provisioned: like a replacement still provisioning, it may be named
    /// by late FAULTs about the instance before it (`late_fault`).
    unproven: BTreeSet<ReplicaId>,
    /// When each replica was last woken or activated from standby: its
    /// silence right after is catching up, not a fault.
    joined_at: BTreeMap<ReplicaId, u64>,
    /// When each replica's current instance was provisioned (this run).
    instance_started: BTreeMap<ReplicaId, u64>,
    faults: BTreeMap<u64, FaultRecord>,
    next_fault: u64,
    nonces: BTreeMap<String, u64>,
    events: VecDeque<Event>,
    next_event: u64,
    feed: broadcast::Sender<Event>,
    pending: Vec<Change>,
    clock: Clock,
    /// Tenants' Wasm apps by the slot they occupy.
    apps: BTreeMap<AppId, TenantApp>,
    /// Told the tenant apps whenever they change (the gateway's routes).
    on_apps: Option<AppsHook>,
}

/// Called with every tenant app after a change.
pub type AppsHook = Arc<dyn Fn(&[TenantApp]) + Send + Sync>;

impl Controller {
    /// How many replicas of each app execute when nothing is wrong.
    fn active_target(&self) -> usize {
        let f = self.dep.f;
        self.tuning.active_replicas.unwrap_or(f + 1).clamp(f + 1, 2 * f + 1)
    }

    pub fn new(
        dep: Deployment,
        identity: Identity,
        backend: Arc<dyn Backend>,
        store: Store,
        tuning: Tuning,
    ) -> Result<Controller, StoreError> {
        let snap = store.load()?;
        let by_name: BTreeMap<String, ReplicaId> = dep
            .all_replicas()
            .into_iter()
            .map(|r| (dep.replica_name(r), r))
            .collect();
        // Records of replicas no longer in the deployment are left alone.
        let replicas = snap
            .replicas
            .into_values()
            .filter_map(|r| by_name.get(&r.name).map(|id| (*id, ReplicaRecord { id: *id, ..r })))
            .collect();
        let next_event = snap.events.last().map_or(1, |e| e.seq + 1);
        let next_fault = snap.faults.iter().map(|f| f.id + 1).max().unwrap_or(1);
        let (feed, _) = broadcast::channel(1024);
        let apps = snap
            .apps
            .into_iter()
            .filter_map(|t| dep.app_by_name(&t.slot).map(|slot| (slot, t)))
            .collect();
        let tracker =
            Tracker::new(dep.f, dep.timing.log_window, snap.incidents).with_quiet_ms(tuning.incident_quiet_ms);
        let keys = dep.keyring();
        let c = Controller {
            tracker,
            dep,
            identity,
            keys,
            backend,
            store,
            tuning,
            replicas,
            nodes: BTreeMap::new(),
            links: HashMap::new(),
            instance_links: HashMap::new(),
            suspects: BTreeSet::new(),
            unproven: BTreeSet::new(),
            joined_at: BTreeMap::new(),
            instance_started: BTreeMap::new(),
            faults: snap.faults.into_iter().map(|f| (f.id, f)).collect(),
            next_fault,
            nonces: snap.nonces,
            events: snap.events.into(),
            next_event,
            feed,
            pending: Vec::new(),
            clock: Clock::system(),
            apps,
            on_apps: None,
        };
        c.apply_stored_keys();
        Ok(c)
    }

    /// Checks signatures with `keys` (shared with the links), with the
    /// stored replacement keys made current in it.
    pub fn with_keyring(mut self, keys: Keyring) -> Self {
        self.keys = keys;
        self.apply_stored_keys();
        self
    }

    /// The keyring replacement keys are made current in.
    pub fn keyring(&self) -> Keyring {
        self.keys.clone()
    }

    /// Tells `hook` the tenant apps now and after every change.
    pub fn with_apps_hook(mut self, hook: AppsHook) -> Self {
        self.on_apps = Some(hook);
        self.publish_apps();
        self
    }

    fn publish_apps(&self) {
        if let Some(hook) = &self.on_apps {
            hook(&self.apps.values().cloned().collect::<Vec<_>>());
        }
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Takes over or starts every replica of the deployment.
    pub async fn start(&mut self) -> Result<(), StoreError> {
        self.bootstrap().await;
        self.flush().await
    }

    /// One command from a link or the API.
    pub async fn command(&mut self, cmd: Command) -> Result<(), StoreError> {
        self.handle(cmd).await;
        self.flush().await
    }

    /// A report the backend made unasked.
    pub async fn backend_event(&mut self, ev: BackendEvent) -> Result<(), StoreError> {
        self.on_backend(ev).await;
        self.flush().await
    }

    /// The periodic check of timeouts (every `Tuning::tick`).
    pub async fn tick(&mut self) -> Result<(), StoreError> {
        self.on_tick().await;
        self.flush().await
    }

    /// Shutdown: every replica destroyed.
    pub async fn stop(&mut self) -> Result<(), StoreError> {
        self.stop_all().await;
        self.flush().await
    }

    /// Runs until `shutdown`, then destroys every replica it owns.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut backend_events: mpsc::Receiver<BackendEvent>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StoreError> {
        tokio::pin!(shutdown);
        self.start().await?;
        let mut tick = tokio::time::interval(self.tuning.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await?,
                    None => break,
                },
                Some(ev) = backend_events.recv() => self.backend_event(ev).await?,
                _ = tick.tick() => self.tick().await?,
            }
        }
        self.stop().await
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Inbound { peer, link, msg } => self.on_message(peer, link, msg).await,
            Command::LinkUp { peer, link, tx } => {
                self.links.insert(peer, (link, tx));
                if let Principal::Replica(r) = peer {
                    self.instance_links.insert(r, link);
                }
                let name = self.dep.name(peer);
                self.emit_for(peer, "link-up", format!("{name} connected"));
                self.resend_keys(peer);
                self.resend_faults(peer);
            }
            Command::LinkDown { peer, link } => {
                if self.links.get(&peer).is_some_and(|(l, _)| *l == link) {
                    self.links.remove(&peer);
                    let name = self.dep.name(peer);
                    self.emit_for(peer, "link-down", format!("{name} disconnected"));
                }
            }
            Command::Api(cmd) => self.on_api(cmd).await,
        }
    }

    async fn on_message(&mut self, peer: Principal, link: u64, msg: Msg) {
        let now = self.clock.now_ms();
        let decisions = match msg {
            Msg::Wake(w) => self.tracker.on_wake(&w.body, now),
            // Silence is evidence only against a replica that should be
            // executing, and has had time to: standbys and fresh
            // replacements are silent by design, and one just woken is
            // still catching up (the nodes cannot tell which instance of an
            // index is which: the previous instance's answers make the new
            // one look recently active; simulator seed 2042, f=2).
            Msg::Fault(f) if f.body.their_digest.is_none() && !self.silence_counts(f.body.replica, now) => {
                metrics::counter!(m::DROPPED, "reason" => "silence-of-standby").increment(1);
                Vec::new()
            }
            Msg::Fault(f) => self.tracker.on_fault(&f.body, now),
            Msg::Resolved(r) => self.tracker.on_resolved(&r.body, now),
            Msg::Heartbeat(hb) => {
                match peer {
                    Principal::Node(n) => {
                        let decisions = self.on_node_heartbeat(n, &hb.body, now);
                        return self.decide(decisions, now).await;
                    }
                    Principal::Replica(r) if self.instance_links.get(&r) == Some(&link) => {
                        self.on_replica_heartbeat(r, &hb.body, now).await;
                    }
                    Principal::Replica(_) => {
                        metrics::counter!(m::DROPPED, "reason" => "fenced-instance").increment(1);
                    }
                    _ => {}
                }
                Vec::new()
            }
            // `certs::check` admits nothing else.
            _ => Vec::new(),
        };
        self.decide(decisions, now).await;
    }

    async fn decide(&mut self, decisions: Vec<Decision>, now: u64) {
        for d in decisions {
            self.on_decision(d, now).await;
        }
    }

    async fn on_decision(&mut self, d: Decision, now: u64) {
        match d {
            Decision::Opened { incident } => {
                if let Some(i) = self.tracker.incident(incident).cloned() {
                    let app = self.app_name(i.app);
                    metrics::counter!(m::INCIDENTS, "app" => app.clone(), "kind" => i.kind.as_str()).increment(1);
                    self.emit(
                        None,
                        Some(i.app),
                        "incident-opened",
                        format!("incident {incident}: {} at seq {}", i.kind.as_str(), i.seq),
                    );
                    self.save_incident(incident);
                    self.wake_standbys(i.app, Some(incident), now).await;
                }
            }
            Decision::Joined { incident, seq } => {
                if let Some(i) = self.tracker.incident(incident).cloned() {
                    metrics::counter!(m::INCIDENTS_COALESCED, "app" => self.app_name(i.app)).increment(1);
                    let kinds: Vec<&str> = i.all_kinds().iter().map(|k| k.as_str()).collect();
                    self.emit(
                        None,
                        Some(i.app),
                        "incident-joined",
                        format!(
                            "seq {seq} joins incident {incident} (same episode: coalesced {}, seqs {}..={}, kinds {})",
                            i.coalesced,
                            i.seq,
                            i.last_seq,
                            kinds.join("+")
                        ),
                    );
                    self.save_incident(incident);
                    self.wake_standbys(i.app, Some(incident), now).await;
                }
            }
            Decision::Certified { incident } => {
                if let Some(i) = self.tracker.incident(incident).cloned() {
                    let ms = i.recovery_ms().unwrap_or(0);
                    metrics::histogram!(m::RECOVERY_MS).record(ms as f64);
                    self.emit(
                        None,
                        Some(i.app),
                        "incident-certified",
                        format!("incident {incident} certified after {ms} ms"),
                    );
                    self.save_incident(incident);
                }
            }
            Decision::Refused { replica, seq, why } => {
                // Not an event: a faulty node could fill the log with them.
                tracing::debug!(replica = %self.dep.replica_name(replica), seq, "FAULT refused: {}", why.as_str());
                metrics::counter!(m::DROPPED, "reason" => why.as_str()).increment(1);
            }
            Decision::Fence { replica, incident, seq } => {
                if let Some(why) = self.late_fault(replica, seq, now) {
                    self.emit(Some(replica), None, "fault-ignored", why);
                    return;
                }
                let detail = match incident {
                    Some(i) => format!("f+1 FAULT certificate (incident {i})"),
                    None => "f+1 FAULT certificate".to_string(),
                };
                self.fence_and_replace(replica, incident, &detail).await;
                if let Some(i) = incident {
                    self.save_incident(i);
                }
            }
        }
    }

    /// Whether a FAULT certificate naming `replica` at `seq` may be a late
    /// one about the instance before it, so that it must not fence this
    /// one. The tracker refuses votes at or below the seq f+1 nodes had
    /// committed when the instance started (`certs::Instance`), but that
    /// boundary settles only as the nodes' heartbeats come in. Until then
    /// (`Tuning::late_fault_ms`), a new instance that has not reported
    /// executing `seq` is spared: a replacement still provisioning, or a
    /// standby not woken since. Past the settling, or once it executed
    /// `seq` (a standby catching up, at start or at a refresh, sends its
    /// replies and checkpoints like any replica), the certificate is about
    /// it.
    fn late_fault(&self, replica: ReplicaId, seq: zz_wire::Seq, now: u64) -> Option<String> {
        let r = self.replicas.get(&replica)?;
        let age = now.saturating_sub(*self.instance_started.get(&replica)?);
        let new = r.state == ReplicaState::Provisioning || self.unproven.contains(&replica);
        (new && age < self.tuning.late_fault_ms && r.last_executed < seq).then(|| {
            format!(
                "late FAULT certificate: this instance started {age} ms ago and has not executed seq {seq} (it reports {})",
                r.last_executed
            )
        })
    }

    async fn on_api(&mut self, cmd: ApiCmd) {
        match cmd {
            ApiCmd::Cluster(reply) => {
                let _ = reply.send(self.cluster_view());
            }
            ApiCmd::Replicas(reply) => {
                let _ = reply.send(self.replicas.values().map(ReplicaView::from).collect());
            }
            ApiCmd::Act { id, action, reply } => {
                let r = self.act(id, action).await;
                let _ = reply.send(r);
            }
            ApiCmd::InjectFault {
                target,
                duration_ms,
                force,
                reply,
            } => {
                let r = if force { Ok(()) } else { self.within_f(target) };
                let _ = reply.send(r.map(|()| self.inject(target, duration_ms)));
            }
            ApiCmd::Faults(reply) => {
                let _ = reply.send(self.faults.values().map(FaultView::from).collect());
            }
            ApiCmd::ClearFault { id, reply } => {
                let _ = reply.send(self.clear_fault(id, "cleared by operator"));
            }
            ApiCmd::Incidents(reply) => {
                let v = self.tracker.incidents().map(|i| self.incident_view(i)).collect();
                let _ = reply.send(v);
            }
            ApiCmd::Events { since, reply } => {
                let _ = reply.send(self.events_since(since));
            }
            ApiCmd::Subscribe { since, reply } => {
                let _ = reply.send((self.events_since(since), self.feed.subscribe()));
            }
            ApiCmd::Apps(reply) => {
                let _ = reply.send(self.app_views());
            }
            ApiCmd::App { name, reply } => {
                let _ = reply.send(self.tenant_app(&name));
            }
            ApiCmd::ReserveApp { name, hash, reply } => {
                let r = self.reserve_app(name, hash).await;
                self.publish_apps();
                let _ = reply.send(r);
            }
            ApiCmd::AppInstalled {
                name,
                hash,
                version,
                reply,
            } => {
                let r = self.app_installed(&name, hash, version);
                self.publish_apps();
                let _ = reply.send(r);
            }
            ApiCmd::RemoveApp { name, reply } => {
                let r = self.remove_app(&name).await;
                self.publish_apps();
                let _ = reply.send(r);
            }
        }
    }

    fn events_since(&self, since: u64) -> Vec<Event> {
        self.events.iter().filter(|e| e.seq > since).cloned().collect()
    }

    fn app_name(&self, app: AppId) -> String {
        self.dep
            .app(app)
            .map_or_else(|| format!("app{}", app.0), |a| a.name.clone())
    }

    fn incident_view(&self, i: &Incident) -> IncidentView {
        IncidentView {
            id: i.id,
            app: self.app_name(i.app),
            seq: i.seq,
            last_seq: i.last_seq,
            kind: i.kind.as_str().to_string(),
            detected_at: i.detected_at,
            woken: i.woken,
            certified_at: i.certified_at,
            faulty: i.faulty.iter().map(|r| self.dep.replica_name(*r)).collect(),
            replaced: i.replaced.iter().map(|r| self.dep.replica_name(*r)).collect(),
            recovery_ms: i.recovery_ms(),
            coalesced: i.coalesced,
            kinds: i.all_kinds().iter().map(|k| k.as_str().to_string()).collect(),
        }
    }

    fn cluster_view(&self) -> ClusterView {
        let agreement = self
            .dep
            .nodes
            .iter()
            .map(|n| {
                let id = NodeId(n.id);
                let status = self.nodes.get(&id);
                let apps: Vec<NodeAppStatus> = status.map_or_else(Vec::new, |s| s.apps.values().cloned().collect());
                NodeView {
                    id: id.to_string(),
                    addr: n.addr.to_string(),
                    connected: self.links.contains_key(&Principal::Node(id)),
                    view: apps.iter().map(|a| a.view).max().unwrap_or(0),
                    last_committed: apps.iter().map(|a| a.last_committed).max().unwrap_or(0),
                    stable_checkpoint: apps.iter().map(|a| a.stable_checkpoint).max().unwrap_or(0),
                    last_heartbeat_ms: status.and_then(|s| s.last_heartbeat_ms),
                    apps,
                }
            })
            .collect();
        ClusterView {
            f: self.dep.f,
            apps: self.dep.apps.iter().map(|a| a.name.clone()).collect(),
            agreement,
        }
    }

    /// Whether `r` has been executing long enough for silence to be a fault.
    fn silence_counts(&self, r: ReplicaId, now: u64) -> bool {
        let active = self.replicas.get(&r).is_some_and(|x| x.state == ReplicaState::Active);
        let settled = self
            .joined_at
            .get(&r)
            .is_none_or(|t| now.saturating_sub(*t) >= JOIN_SILENCE_GRACE_MS);
        active && settled
    }

    fn on_node_heartbeat(&mut self, n: NodeId, hb: &zz_wire::Heartbeat, now: u64) -> Vec<Decision> {
        let app = self.app_name(hb.app);
        if self.dep.app(hb.app).is_none() {
            return Vec::new();
        }
        self.tracker.on_progress(hb.app, n, hb.last_executed, now);
        let decisions = self.tracker.on_node_stable(hb.app, n, hb.last_checkpoint, now);
        let s = self.nodes.entry(n).or_default();
        s.last_heartbeat_ms = Some(now);
        s.apps.insert(
            hb.app,
            NodeAppStatus {
                app,
                view: hb.view,
                last_committed: hb.last_executed,
                stable_checkpoint: hb.last_checkpoint,
                at_ms: now,
            },
        );
        decisions
    }

    /// The newest stable checkpoint of `app` that f+1 nodes report reaching
    /// (so at least one correct node vouches for it).
    fn stable_checkpoint(&self, app: AppId) -> u64 {
        let mut seen: Vec<u64> = self
            .nodes
            .values()
            .filter_map(|s| s.apps.get(&app).map(|a| a.stable_checkpoint))
            .collect();
        seen.sort_unstable_by(|a, b| b.cmp(a));
        seen.get(self.dep.f).copied().unwrap_or(0)
    }

    /// Appends to the event log (memory, store, live feed).
    fn emit(&mut self, replica: Option<ReplicaId>, app: Option<AppId>, kind: &str, detail: String) {
        let app = app.or(replica.map(|r| r.app));
        let ev = Event {
            seq: self.next_event,
            at_ms: self.clock.now_ms(),
            replica: replica.map(|r| self.dep.replica_name(r)),
            app: app.map(|a| self.app_name(a)),
            kind: kind.to_string(),
            detail,
        };
        tracing::info!(seq = ev.seq, kind, replica = ?ev.replica, "{}", ev.detail);
        self.next_event += 1;
        self.events.push_back(ev.clone());
        while self.events.len() as u64 > MAX_EVENTS {
            self.events.pop_front();
        }
        let _ = self.feed.send(ev.clone());
        self.pending.push(Change::Event(ev));
    }

    fn emit_for(&mut self, who: Principal, kind: &str, detail: String) {
        match who {
            Principal::Replica(r) => self.emit(Some(r), None, kind, detail),
            _ => self.emit(None, None, kind, detail),
        }
    }

    fn save_replica(&mut self, id: ReplicaId) {
        if let Some(r) = self.replicas.get(&id) {
            self.pending.push(Change::Replica(r.clone()));
        }
    }

    fn save_incident(&mut self, id: u64) {
        if let Some(i) = self.tracker.incident(id) {
            self.pending.push(Change::Incident(i.clone()));
        }
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        self.update_gauges();
        let changes = std::mem::take(&mut self.pending);
        self.store.apply_async(changes).await
    }

    fn update_gauges(&self) {
        for app in self.dep.app_ids() {
            let name = self.app_name(app);
            for state in ReplicaState::ALL {
                let n = self
                    .replicas
                    .values()
                    .filter(|r| r.id.app == app && r.state == state)
                    .count();
                metrics::gauge!(m::REPLICAS, "app" => name.clone(), "state" => state.as_str()).set(n as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tuning;

    #[test]
    fn a_due_standby_refresh_waits_for_a_quiet_machine_but_not_past_the_overdue_limit() {
        let t = Tuning::default();
        let (k, behind) = (128, 256);
        // Quiet, or load unknown: refreshed once paused long enough.
        assert!(t.refresh_due(10_001, behind, k, Some(0.1)));
        assert!(t.refresh_due(10_001, behind, k, None));
        assert!(!t.refresh_due(9_000, behind, k, Some(0.1)));
        // Less than a checkpoint behind: nothing to refresh.
        assert!(!t.refresh_due(60_000, 100, k, Some(0.1)));
        // Busy: deferred...
        assert!(!t.refresh_due(10_001, behind, k, Some(0.9)));
        assert!(!t.refresh_due(119_000, behind, k, Some(0.9)));
        // ...until overdue.
        assert!(t.refresh_due(120_001, behind, k, Some(0.9)));
        // Load ignored, or refreshing off.
        let ignore = Tuning {
            refresh_max_busy: None,
            ..Tuning::default()
        };
        assert!(ignore.refresh_due(10_001, behind, k, Some(0.9)));
        let off = Tuning {
            refresh_checkpoints: None,
            ..Tuning::default()
        };
        assert!(!off.refresh_due(1_000_000, behind, k, Some(0.0)));
    }
}
