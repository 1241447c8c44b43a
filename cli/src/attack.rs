//! `zz bench --attack KIND`: Aardvark's yardstick (Clement et al., NSDI'09).
//! One deployment, one invocation: the load runs fault-free for
//! `--duration` seconds, then the same load runs as long again with one
//! Byzantine principal attacking, and the two certified throughputs are
//! compared, with the correct nodes' CPU and peak RSS in each phase.
//!
//! The attackers are not woven into the product: apart from `slow-primary`
//! (a fault injected into the primary through the admin API, which holds
//! its pre-prepares on the way out), the bench itself plays the faulty
//! principal with that principal's real key from the deployment's keys
//! dir, over real TCP links with the real handshake:
//! - `flood-client`: a client of the deployment (`mallory`) sends batches
//!   with bad signatures, replays of one valid batch and frames that do not
//!   decode, to every node, reconnecting whenever a node drops the link;
//! - `flood-node`: one backup is crashed and impersonated, sending padded
//!   view changes for ever higher views (and duplicates), log fetches and
//!   body fetches to the others;
//! - `flood-replica`: the paused standby replica is impersonated, sending
//!   replies for future seqs and unsolicited state responses to its peers.

use crate::bench::{BenchArgs, Target};
use crate::launch::{keys_dir, Info, LaunchOptions, Running};
use crate::procstat;
use anyhow::Context;
use bytes::Bytes;
use clap::ValueEnum;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use zz_wire::config::{generate, GenerateOptions};
use zz_wire::frame::{encode, handshake};
use zz_wire::{
    AppId, AppRequest, BatchResult, BodyFetch, ClientBatch, ClientId, Digest, ExecReply, Identity, Keyring, LogFetch,
    Msg, NodeId, Packed, PrePrepareHeader, Prepare, PreparedProof, Principal, ReplicaId, Seq, StateGive, StateResponse,
    View, ViewChange, Vote,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// The primary holds each pre-prepare just under the view-change timeout.
    SlowPrimary,
    /// The standby replica, impersonated, floods future replies and state responses.
    FloodReplica,
    /// A backup, impersonated, floods padded view changes and fetches.
    FloodNode,
    /// A client floods bad-signature, replayed and malformed batches.
    FloodClient,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::SlowPrimary => "slow-primary",
            Attack::FloodReplica => "flood-replica",
            Attack::FloodNode => "flood-node",
            Attack::FloodClient => "flood-client",
        }
    }
}

/// The Byzantine client's name in the deployment the bench generates.
const MALLORY: &str = "mallory";
/// Targets of issue 25.
const TARGET_RATIO: f64 = 0.70;
const TARGET_RSS: f64 = 1.5;

/// One process's cost over a phase.
#[derive(Debug, Serialize, Clone)]
pub struct ProcCost {
    pub label: String,
    pub role: String,
    pub cpu_secs: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct Phase {
    pub duration_secs: f64,
    pub requests: u64,
    pub errors: u64,
    pub throughput_ops: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Views of the correct nodes at the end of the phase.
    pub views: Vec<View>,
    /// Sum over the correct agreement nodes.
    pub nodes_cpu_secs: f64,
    /// Highest peak RSS of a correct agreement node.
    pub nodes_peak_rss_mib: f64,
    /// Every process of the deployment but the faulty principal's.
    pub processes: Vec<ProcCost>,
}

/// What the attacker did (the bench's own counters).
#[derive(Debug, Serialize, Default)]
pub struct Sent {
    pub messages: u64,
    pub bytes: u64,
    /// Links (re)established; a node drops a link on a bad message.
    pub connections: u64,
    /// Links refused or broken.
    pub link_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct AttackResult {
    pub kind: &'static str,
    pub attack: Attack,
    /// The faulty principal.
    pub faulty: String,
    pub f: usize,
    pub clients: usize,
    pub value_size: usize,
    pub fault_free: Phase,
    pub under_attack: Phase,
    /// Attack throughput / fault-free throughput.
    pub throughput_ratio: f64,
    /// Correct nodes' peak RSS under attack / fault-free.
    pub rss_ratio: f64,
    pub target_met: bool,
    pub sent: Sent,
    /// A value written after the attack read back the same through f+1
    /// certified answers.
    pub read_back_ok: bool,
    pub seed: u64,
    pub machine: String,
}

impl AttackResult {
    pub fn table_header() -> &'static str {
        "| attack | fault-free ops/s | under attack ops/s | ratio | nodes CPU s (ff / attack) | nodes peak RSS MiB (ff / attack) | target |\n|---|---|---|---|---|---|---|"
    }

    pub fn table_row(&self) -> String {
        let verdict = if self.target_met {
            "met".to_string()
        } else {
            let mut missed = Vec::new();
            if self.throughput_ratio < TARGET_RATIO {
                missed.push(format!(
                    "throughput {:.0} points short",
                    (TARGET_RATIO - self.throughput_ratio) * 100.0
                ));
            }
            if self.rss_ratio > TARGET_RSS {
                missed.push(format!("RSS {:.2}× > {TARGET_RSS}×", self.rss_ratio));
            }
            if !self.read_back_ok {
                missed.push("read-back failed".into());
            }
            format!("missed: {}", missed.join(", "))
        };
        format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.1} / {:.1} | {:.1} / {:.1} | {} |",
            self.attack.name(),
            self.fault_free.throughput_ops,
            self.under_attack.throughput_ops,
            self.throughput_ratio,
            self.fault_free.nodes_cpu_secs,
            self.under_attack.nodes_cpu_secs,
            self.fault_free.nodes_peak_rss_mib,
            self.under_attack.nodes_peak_rss_mib,
            verdict
        )
    }
}

/// `zz bench --attack KIND`: runs both phases, prints the table row and
/// writes the JSON.
pub async fn bench_attack(a: BenchArgs) -> anyhow::Result<AttackResult> {
    let kind = a.attack.context("--attack names no attack")?;
    let seed = a.seed.unwrap_or_else(rand::random);
    eprintln!(
        "bench --attack {}: f={}, {} clients, seed {seed}",
        kind.name(),
        a.f,
        a.clients
    );
    let r = attack(&a, kind, seed).await?;
    println!("{}", AttackResult::table_header());
    println!("{}", r.table_row());
    for (name, p) in [("fault-free", &r.fault_free), ("under attack", &r.under_attack)] {
        println!(
            "   {name:<13} {:>8.0} ops/s  p50 {:>7.2} ms  p99 {:>8.2} ms  errors {}  views {:?}",
            p.throughput_ops, p.p50_ms, p.p99_ms, p.errors, p.views
        );
        for c in &p.processes {
            println!(
                "      {:<8} {:<20} cpu {:>6.2} s  peak rss {:>7.1} MiB",
                c.label, c.role, c.cpu_secs, c.peak_rss_mib
            );
        }
    }
    println!(
        "   attacker {}: {} messages, {} MiB, {} links, {} link errors; read-back {}",
        r.faulty,
        r.sent.messages,
        r.sent.bytes >> 20,
        r.sent.connections,
        r.sent.link_errors,
        if r.read_back_ok { "ok" } else { "FAILED" }
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&r)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(r)
}

async fn attack(a: &BenchArgs, kind: Attack, seed: u64) -> anyhow::Result<AttackResult> {
    anyhow::ensure!(
        a.mode == crate::bench::Mode::Zz && a.apps == 1 && a.workload == crate::bench::Workload::KvPut,
        "--attack runs the kv-put workload on one app in --mode zz"
    );
    let dir = tempfile::Builder::new().prefix("zz-attack-").tempdir()?;
    let mut opts = GenerateOptions::local(a.f, &["kv"])?;
    opts.clients.push(MALLORY.into());
    let (mut dep, ids) = generate(&opts)?;
    for t in &a.timing {
        dep.timing.set(t)?;
    }
    let mut running = Running::start(LaunchOptions {
        // flood-node crashes a node and must find it still down.
        restart_nodes: false,
        ..LaunchOptions::local(dir.path(), dep, &ids, crate::launch::Backend::Process)?
    })
    .await?;
    let info = running.info.clone();
    let result = tokio::select! {
        r = phases(a, kind, seed, &info) => r,
        e = running.failed() => Err(e),
        e = crate::bench::interrupted() => Err(e),
    };
    running.stop().await;
    result
}

async fn phases(a: &BenchArgs, kind: Attack, seed: u64, info: &Info) -> anyhow::Result<AttackResult> {
    let names = vec!["kv".to_string()];
    let target = crate::bench::deployment_target(a, info, &names, &names, a.f + 1).await?;
    let dep = info.dep.clone();
    let admin = info.admin()?;
    let labels: Vec<String> = dep.all_replicas().into_iter().map(|r| dep.replica_name(r)).collect();

    eprintln!(
        "bench --attack {}: fault-free phase, {} s after {} s warm-up",
        kind.name(),
        a.duration,
        a.warmup_secs()
    );
    // Warm-up as a load of its own, so the phase's CPU and peak RSS count
    // from the steady state on, as the attack phase's do.
    let warmup = a.warmup_secs();
    if warmup > 0 {
        let mut w = a.clone();
        (w.duration, w.warmup) = (warmup, Some(0));
        crate::bench::run_load(&w, seed.wrapping_add(2 << 32), &target, 1).await?;
    }
    let sampler = Sampler::start(labels.clone());
    let free = {
        let mut b = a.clone();
        b.warmup = Some(0);
        crate::bench::run_load(&b, seed, &target, 1).await?
    };
    let free_usage = sampler.stop().await;
    let free_views = views(&admin).await?;

    let view = free_views.iter().copied().max().unwrap_or(0);
    let n = dep.n() as u64;
    let primary = NodeId(u16::try_from(view % n)?);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x00a7_7ac4);
    let stop = CancellationToken::new();
    let sent = Arc::new(Counters::default());
    let attacker = AttackerThread::new()?;
    let flood = Flood {
        rt: attacker.handle(),
        keys: dep.keyring(),
        sent: sent.clone(),
        stop: stop.clone(),
    };
    let kv = dep.app_by_name("kv").context("kv app")?;
    let (faulty, fault_id) = match kind {
        Attack::SlowPrimary => {
            let r = admin
                .post(
                    "/v1/faults",
                    serde_json::json!({"target": primary.to_string(), "kind": "slow-primary"}),
                )
                .await?;
            (primary.to_string(), r["id"].as_u64())
        }
        Attack::FloodNode => {
            // The backup furthest from being primary.
            let victim = NodeId(u16::try_from((view + n - 1) % n)?);
            admin
                .post(
                    "/v1/faults",
                    serde_json::json!({"target": victim.to_string(), "kind": "crash"}),
                )
                .await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let me = dep.load_identity(&keys_dir(&info.config), Principal::Node(victim))?;
            for peer in dep.node_ids().filter(|p| *p != victim) {
                let addr = dep.node_addr(peer).context("node address")?;
                let gen = NodeFlood::new(victim, kv, view, me.clone(), rng.next_u64());
                spawn_flood(&flood, addr, me.clone(), peer, gen);
            }
            (victim.to_string(), None)
        }
        Attack::FloodReplica => {
            let replicas: Vec<ReplicaId> = dep.replicas(kv).collect();
            let victim = *replicas.last().context("no replicas")?;
            let me = dep.load_identity(&keys_dir(&info.config), Principal::Replica(victim))?;
            let committed = last_committed(&admin).await?;
            for peer in dep.node_ids() {
                let addr = dep.node_addr(peer).context("node address")?;
                let peers: Vec<ReplicaId> = replicas.iter().copied().filter(|r| *r != victim).collect();
                let gen = ReplicaFlood::new(victim, peers, committed, me.clone(), rng.next_u64());
                spawn_flood(&flood, addr, me.clone(), peer, gen);
            }
            (dep.replica_name(victim), None)
        }
        Attack::FloodClient => {
            let who = dep.parse_principal(MALLORY).context("mallory")?;
            let Principal::Client(c) = who else {
                anyhow::bail!("{MALLORY} is not a client")
            };
            let me = dep.load_identity(&keys_dir(&info.config), who)?;
            for peer in dep.node_ids() {
                let addr = dep.node_addr(peer).context("node address")?;
                let gen = ClientFlood::new(c, kv, me.clone(), rng.next_u64())?;
                spawn_flood(&flood, addr, me.clone(), peer, gen);
            }
            (MALLORY.to_string(), None)
        }
    };
    eprintln!(
        "bench --attack {}: {faulty} attacks; measuring {} s from now",
        kind.name(),
        a.duration
    );
    let sampler = Sampler::start(labels);
    let under = {
        let mut b = a.clone();
        // The attack's first seconds (detection, view change) count.
        b.warmup = Some(0);
        crate::bench::run_load(&b, seed.wrapping_add(1 << 32), &target, 1).await?
    };
    let attack_usage = sampler.stop().await;
    stop.cancel();
    drop(attacker);
    let attack_views = views(&admin).await?;
    if let Some(id) = fault_id {
        admin.delete(&format!("/v1/faults/{id}")).await?;
    }
    let read_back_ok = read_back(&target, seed).await;

    let correct = |u: &BTreeMap<String, ProcCost>| -> Vec<ProcCost> {
        u.values().filter(|p| p.label != faulty).cloned().collect()
    };
    let free_phase = phase(&free, correct(&free_usage), free_views, &faulty);
    let attack_phase = phase(&under, correct(&attack_usage), attack_views, &faulty);
    let throughput_ratio = ratio(attack_phase.throughput_ops, free_phase.throughput_ops);
    let rss_ratio = ratio(attack_phase.nodes_peak_rss_mib, free_phase.nodes_peak_rss_mib);
    let result = AttackResult {
        kind: "attack",
        attack: kind,
        faulty,
        f: a.f,
        clients: a.clients,
        value_size: a.value_size,
        target_met: throughput_ratio >= TARGET_RATIO && rss_ratio <= TARGET_RSS && read_back_ok,
        fault_free: free_phase,
        under_attack: attack_phase,
        throughput_ratio,
        rss_ratio,
        sent: sent.snapshot(),
        read_back_ok,
        seed,
        machine: crate::bench::machine(),
    };
    Ok(result)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn phase(r: &crate::bench::BenchResult, procs: Vec<ProcCost>, views: Vec<View>, faulty: &str) -> Phase {
    let nodes: Vec<&ProcCost> = procs
        .iter()
        .filter(|p| p.role == "agreement nodes" && p.label != faulty)
        .collect();
    Phase {
        duration_secs: r.duration_secs,
        requests: r.requests,
        errors: r.errors,
        throughput_ops: r.throughput_ops,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        max_ms: r.max_ms,
        views,
        nodes_cpu_secs: nodes.iter().map(|p| p.cpu_secs).sum(),
        nodes_peak_rss_mib: nodes.iter().map(|p| p.peak_rss_mib).fold(0.0, f64::max),
        processes: procs,
    }
}

/// Writes a fresh value and reads it back through the BFT client: the
/// answers f+1 nodes vouch for are the ones written.
async fn read_back(target: &Target, seed: u64) -> bool {
    let value = format!("after-the-attack-{seed}").into_bytes();
    let put = AppRequest::new("PUT", "/kv/attack-read-back", value.clone());
    if !target.call(0, put).await {
        return false;
    }
    target
        .get_body(0, AppRequest::new("GET", "/kv/attack-read-back", Vec::new()))
        .await
        .is_some_and(|b| b == value)
}

async fn views(admin: &crate::admin::AdminClient) -> anyhow::Result<Vec<View>> {
    let c = admin.get("/v1/cluster").await?;
    Ok(c["agreement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["view"].as_u64())
        .collect())
}

async fn last_committed(admin: &crate::admin::AdminClient) -> anyhow::Result<Seq> {
    let c = admin.get("/v1/cluster").await?;
    Ok(c["agreement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["last_committed"].as_u64())
        .max()
        .unwrap_or(0))
}

// ------------------------------------------------------------ usage sampling

/// Samples every process of the deployment during a phase: CPU from the
/// first sample to the last, and the highest RSS seen (a peak within the
/// phase, where /proc's VmHWM would be one since the process started).
struct Sampler {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<BTreeMap<String, ProcCost>>,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(200);

impl Sampler {
    fn start(names: Vec<String>) -> Sampler {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut first: BTreeMap<String, f64> = BTreeMap::new();
            let mut out: BTreeMap<String, ProcCost> = BTreeMap::new();
            loop {
                for mut p in procstat::processes(&names) {
                    if p.role == procstat::SELF_ROLE {
                        // The load generator, the orchestrator, the gateway and the attacker.
                        p.label = "bench".into();
                    }
                    let start = *first.entry(p.label.clone()).or_insert(p.usage.cpu_secs);
                    let e = out.entry(p.label.clone()).or_insert_with(|| ProcCost {
                        label: p.label.clone(),
                        role: p.role.to_string(),
                        cpu_secs: 0.0,
                        peak_rss_mib: 0.0,
                    });
                    e.cpu_secs = p.usage.cpu_secs - start;
                    e.peak_rss_mib = e.peak_rss_mib.max(p.usage.rss_mib);
                }
                tokio::select! {
                    () = s.cancelled() => break,
                    () = tokio::time::sleep(SAMPLE_EVERY) => {}
                }
            }
            out
        });
        Sampler { stop, task }
    }

    async fn stop(self) -> BTreeMap<String, ProcCost> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

// ------------------------------------------------------------ the flooders

/// The attacker's own thread and runtime: the bench's load generator runs
/// on one thread, and a flood sharing it would slow the load, not the
/// system under test.
struct AttackerThread(Option<tokio::runtime::Runtime>);

impl AttackerThread {
    fn new() -> anyhow::Result<AttackerThread> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zz-attacker")
            .enable_all()
            .build()?;
        Ok(AttackerThread(Some(rt)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for AttackerThread {
    fn drop(&mut self) {
        // Dropping a runtime from async code would block: let it wind down.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
    connections: AtomicU64,
    link_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Sent {
        Sent {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            link_errors: self.link_errors.load(Ordering::Relaxed),
        }
    }
}

/// What every attacker link shares: its runtime, the keys to check the
/// nodes' handshakes with, the counters and the stop signal.
struct Flood {
    rt: tokio::runtime::Handle,
    keys: Keyring,
    sent: Arc<Counters>,
    stop: CancellationToken,
}

/// Produces the next frames an attacker sends on a link.
trait Frames: Send + 'static {
    fn next(&mut self) -> Vec<Bytes>;
}

/// One attacker link to `peer` at `addr` as `me`, re-dialled whenever the
/// peer drops it, until `stop`. What the peer sends back is read and
/// discarded, so the attack is the flood, not a stalled reader.
fn spawn_flood(f: &Flood, addr: SocketAddr, me: Identity, peer: NodeId, mut frames: impl Frames) {
    let (keys, sent, stop) = (f.keys.clone(), f.sent.clone(), f.stop.clone());
    f.rt.spawn(async move {
        while !stop.is_cancelled() {
            let link = async {
                let s = tokio::net::TcpStream::connect(addr).await?;
                anyhow::Ok(handshake(s, &me, &keys, Some(Principal::Node(peer))).await?)
            };
            let (_, mut reader, mut writer) = match link.await {
                Ok(l) => l,
                Err(_) => {
                    sent.link_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            sent.connections.fetch_add(1, Ordering::Relaxed);
            let drain = tokio::spawn(async move { while let Ok(Some(_)) = reader.recv().await {} });
            let run = async {
                loop {
                    for b in frames.next() {
                        let len = b.len() as u64;
                        writer.feed_encoded(b).await?;
                        sent.messages.fetch_add(1, Ordering::Relaxed);
                        sent.bytes.fetch_add(len, Ordering::Relaxed);
                    }
                    writer.flush().await?;
                }
                #[allow(unreachable_code)]
                anyhow::Ok(())
            };
            tokio::select! {
                () = stop.cancelled() => {}
                r = run => if r.is_err() {
                    sent.link_errors.fetch_add(1, Ordering::Relaxed);
                },
            }
            drain.abort();
        }
    });
}

fn frame(m: &Msg) -> Option<Bytes> {
    encode(m).ok()
}

/// A crashed backup's key: padded view changes for ever higher views (and
/// copies of each), log fetches from seq 1 and body fetches of a thousand
/// made-up proposals.
struct NodeFlood {
    me: NodeId,
    app: AppId,
    id: Identity,
    view: View,
    padding: Vec<PreparedProof>,
    rng: rand_chacha::ChaCha8Rng,
}

/// Prepared proofs padding each view change (each is checked at most once
/// per period, and is refused for not being a quorum's).
const PADDING_PROOFS: usize = 400;

impl NodeFlood {
    fn new(me: NodeId, app: AppId, view: View, id: Identity, seed: u64) -> NodeFlood {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut digest = [0u8; 32];
        rng.fill_bytes(&mut digest);
        let header = id.sign(PrePrepareHeader {
            node: me,
            app,
            view,
            seq: 1,
            digest: Digest(digest),
        });
        let prepare = id.sign(Prepare(Vote {
            node: me,
            app,
            view,
            seq: 1,
            digest: Digest(digest),
        }));
        let padding = (0..PADDING_PROOFS)
            .map(|_| PreparedProof {
                pre_prepare: header.clone(),
                prepares: vec![prepare.clone(); 2],
            })
            .collect();
        NodeFlood {
            me,
            app,
            id,
            view,
            padding,
            rng,
        }
    }
}

impl Frames for NodeFlood {
    fn next(&mut self) -> Vec<Bytes> {
        self.view += 1;
        let vc = Msg::ViewChange(self.id.sign(ViewChange {
            node: self.me,
            app: self.app,
            new_view: self.view,
            stable_seq: 0,
            stable_digest: Digest::ZERO,
            checkpoint_proof: Vec::new(),
            prepared: self.padding.clone(),
        }));
        let fetch = Msg::LogFetch(self.id.sign(LogFetch {
            node: self.me,
            app: self.app,
            from: 1,
        }));
        let wants = (0..1000)
            .map(|_| {
                let mut d = [0u8; 32];
                self.rng.fill_bytes(&mut d);
                (self.rng.gen_range(1..1 << 20), Digest(d))
            })
            .collect();
        let bodies = Msg::BodyFetch(self.id.sign(BodyFetch {
            node: self.me,
            app: self.app,
            wants,
        }));
        let mut out = Vec::new();
        if let Some(b) = frame(&vc) {
            // The same view change again: duplicates must cost nothing.
            out.extend(std::iter::repeat_n(b, 4));
        }
        out.extend(frame(&fetch));
        out.extend(frame(&bodies));
        out
    }
}

/// The standby replica's key: replies for seqs far ahead of the log and
/// state responses nobody asked for, of 64 KiB each, to its peers.
struct ReplicaFlood {
    me: ReplicaId,
    peers: Vec<ReplicaId>,
    seq: Seq,
    id: Identity,
    rng: rand_chacha::ChaCha8Rng,
    blob: Vec<u8>,
}

impl ReplicaFlood {
    fn new(me: ReplicaId, peers: Vec<ReplicaId>, committed: Seq, id: Identity, seed: u64) -> ReplicaFlood {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut blob = vec![0u8; 64 << 10];
        rng.fill_bytes(&mut blob);
        ReplicaFlood {
            me,
            peers,
            seq: committed + 1000,
            id,
            rng,
            blob,
        }
    }
}

impl Frames for ReplicaFlood {
    fn next(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        for _ in 0..16 {
            self.seq += 1;
            let mut root = [0u8; 32];
            self.rng.fill_bytes(&mut root);
            let reply = Msg::ExecReply(ExecReply {
                replica: self.me,
                seq: self.seq,
                results: vec![BatchResult {
                    client: ClientId(1),
                    first_id: self.rng.next_u64(),
                    responses: Packed::pack(&[zz_wire::AppResponse::new(200, b"forged".to_vec())]).unwrap_or_default(),
                }],
                root: Digest(root),
            });
            out.extend(frame(&reply));
        }
        for to in self.peers.clone() {
            let give = StateGive::Objects(vec![(b"k".to_vec(), Some(self.blob.clone()))]);
            let m = Msg::StateResponse(self.id.sign(StateResponse {
                from: self.me,
                to,
                id: self.rng.next_u64(),
                checkpoint: 0,
                give,
            }));
            out.extend(frame(&m));
        }
        out
    }
}

/// A client's key: a replayed valid batch (a thousand copies), then a
/// batch of 64 requests with a bad signature (the node drops the link),
/// or, every other link, a frame that does not decode.
struct ClientFlood {
    replay: Bytes,
    bad: Bytes,
    round: u64,
    rng: rand_chacha::ChaCha8Rng,
}

impl ClientFlood {
    fn new(client: ClientId, app: AppId, id: Identity, seed: u64) -> anyhow::Result<ClientFlood> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let one = [AppRequest::new("PUT", "/kv/mallory", b"once".to_vec())];
        let replay = encode(&Msg::Request(id.sign(ClientBatch::new(
            client,
            app,
            rng.next_u64(),
            &one,
        )?)))?;
        let ops: Vec<AppRequest> = (0..64)
            .map(|i| AppRequest::new("PUT", &format!("/kv/bad{i}"), vec![b'x'; 1024]))
            .collect();
        // Signed with a key that is not the client's.
        let forger = Identity::generate(Principal::Client(client));
        let bad = encode(&Msg::Request(forger.sign(ClientBatch::new(
            client,
            app,
            rng.next_u64(),
            &ops,
        )?)))?;
        Ok(ClientFlood {
            replay,
            bad,
            round: 0,
            rng,
        })
    }
}

impl Frames for ClientFlood {
    fn next(&mut self) -> Vec<Bytes> {
        self.round += 1;
        let mut out = vec![self.replay.clone(); 64];
        if self.round.is_multiple_of(16) {
            if self.rng.gen_bool(0.5) {
                out.push(self.bad.clone());
            } else {
                let mut junk = vec![0u8; 4096];
                self.rng.fill_bytes(&mut junk);
                out.push(Bytes::from(junk));
            }
        }
        out
    }
}
