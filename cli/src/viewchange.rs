//! `zz bench view-change`: repeated primary crashes on a real deployment.
//! Each round keeps a closed-loop load running through the BFT client,
//! crashes the primary of the current view v through the admin API and
//! measures, at the client, (a) the time from the crash to the first answer
//! certified in a view above v and (b) the longest gap between two answers
//! around the crash. The crashed node is then restarted from its store and
//! the next round waits until it has caught up.

use crate::admin::AdminClient;
use crate::launch::{Backend, Info, LaunchOptions, Running};
use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zz_agreement::client::Client;
use zz_wire::config::{generate, GenerateOptions};
use zz_wire::{AppId, AppRequest, NodeId, View};

#[derive(Args, Debug, Clone)]
pub struct ViewChangeArgs {
    /// Primary crashes, one per round.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    #[arg(long, default_value_t = 1)]
    pub f: usize,
    /// Concurrent closed-loop callers sharing the BFT client.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Override the deployment's view-change timeout (default: its default).
    #[arg(long)]
    pub view_change_timeout_ms: Option<u64>,
    /// Override how long the client waits before re-sending to every node.
    #[arg(long)]
    pub client_retry_ms: Option<u64>,
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Keep the run's data dir (node logs, stores) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Serialize)]
pub struct Round {
    /// The node crashed: the primary of `view_before`.
    pub crashed: String,
    pub view_before: View,
    /// View of the first answer certified after the crash in a higher view.
    pub view_after: View,
    /// Crash injected → first answer certified in a view above `view_before`.
    pub crash_to_answer_ms: f64,
    /// Longest time between two answers around the crash.
    pub longest_gap_ms: f64,
    /// Restart → the node is back in the current view, caught up.
    pub rejoin_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ViewChangeResult {
    pub kind: &'static str,
    pub f: usize,
    pub rounds: usize,
    pub clients: usize,
    pub view_change_timeout_ms: u64,
    pub client_retry_ms: u64,
    pub crash_to_answer_p50_ms: f64,
    pub crash_to_answer_p99_ms: f64,
    pub crash_to_answer_max_ms: f64,
    pub longest_gap_p50_ms: f64,
    pub longest_gap_p99_ms: f64,
    pub longest_gap_max_ms: f64,
    /// Requests that failed (timeouts) during the whole run.
    pub errors: u64,
    pub per_round: Vec<Round>,
    pub machine: String,
}

impl ViewChangeResult {
    pub fn table_header() -> &'static str {
        "| f | rounds | vc timeout | crash → new-view answer p50 | p99 | max | longest gap p50 | p99 | errors |\n|---|---|---|---|---|---|---|---|---|"
    }

    pub fn table_row(&self) -> String {
        format!(
            "| {} | {} | {} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            self.f,
            self.rounds,
            self.view_change_timeout_ms,
            self.crash_to_answer_p50_ms,
            self.crash_to_answer_p99_ms,
            self.crash_to_answer_max_ms,
            self.longest_gap_p50_ms,
            self.longest_gap_p99_ms,
            self.errors
        )
    }
}

pub async fn view_change(a: ViewChangeArgs) -> anyhow::Result<ViewChangeResult> {
    anyhow::ensure!(a.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(a.clients >= 1, "--clients must be at least 1");
    let dir = tempfile::Builder::new().prefix("zz-viewchange-").tempdir()?;
    let (mut dep, ids) = generate(&GenerateOptions::local(a.f, &["kv"])?)?;
    if let Some(t) = a.view_change_timeout_ms {
        dep.timing.view_change_timeout_ms = t;
    }
    if let Some(t) = a.client_retry_ms {
        dep.timing.client_retry_ms = t;
    }
    let mut running = Running::start(LaunchOptions {
        // Each round crashes a node and restarts it when it measures from.
        restart_nodes: false,
        ..LaunchOptions::local(dir.path(), dep, &ids, Backend::Process)?
    })
    .await?;
    // Not raced against `Running::failed`: the rounds restart nodes through
    // `running`, and every wait in them is bounded.
    let result = tokio::select! {
        r = rounds(&a, &mut running) => r,
        e = crate::bench::interrupted() => Err(e),
    };
    running.stop().await;
    if a.keep {
        eprintln!("data kept in {}", dir.keep().display());
    }
    let result = result?;
    println!("{}", ViewChangeResult::table_header());
    println!("{}", result.table_row());
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&result)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(result)
}

/// Answers seen by the load, in arrival order: when, and the certified view.
#[derive(Default)]
struct Answers(Mutex<Vec<(Instant, View)>>);

impl Answers {
    fn push(&self, view: View) {
        if let Ok(mut v) = self.0.lock() {
            v.push((Instant::now(), view));
        }
    }

    fn since(&self, from: usize) -> Vec<(Instant, View)> {
        self.0
            .lock()
            .map(|v| v[from.min(v.len())..].to_vec())
            .unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.0.lock().map_or(0, |v| v.len())
    }
}

struct Load {
    answers: Arc<Answers>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client, app: AppId, callers: usize) -> Load {
        let answers = Arc::new(Answers::default());
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..callers)
            .map(|w| {
                let (client, answers, errors, stop) = (client.clone(), answers.clone(), errors.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let req = AppRequest::new("PUT", &format!("/kv/vc{w}-{}", i % 1000), i.to_le_bytes().to_vec());
                        match client.call_with_view(app, req).await {
                            Ok((r, view)) if r.status < 500 => answers.push(view),
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            answers,
            errors,
            stop,
            tasks,
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(35), t).await;
        }
        self.errors.load(Ordering::Relaxed)
    }
}

async fn rounds(a: &ViewChangeArgs, running: &mut Running) -> anyhow::Result<ViewChangeResult> {
    let info = running.info.clone();
    let admin = info.admin()?;
    let client = info.bench_client(Duration::from_secs(30))?;
    let app = info.dep.app_by_name("kv").context("kv app")?;
    wait_active(&admin, info.dep.f + 1).await?;
    let load = Load::start(&client, app, a.clients);
    let result = measure(a, running, &info, &admin, &load).await;
    let errors = load.stop().await;
    let per_round = result?;

    let mut to_answer = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut gaps = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for r in &per_round {
        to_answer.record(micros(r.crash_to_answer_ms))?;
        gaps.record(micros(r.longest_gap_ms))?;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(ViewChangeResult {
        kind: "view-change",
        f: info.dep.f,
        rounds: per_round.len(),
        clients: a.clients,
        view_change_timeout_ms: info.dep.timing.view_change_timeout_ms,
        client_retry_ms: info.dep.timing.client_retry_ms,
        crash_to_answer_p50_ms: ms(&to_answer, 0.5),
        crash_to_answer_p99_ms: ms(&to_answer, 0.99),
        crash_to_answer_max_ms: to_answer.max() as f64 / 1000.0,
        longest_gap_p50_ms: ms(&gaps, 0.5),
        longest_gap_p99_ms: ms(&gaps, 0.99),
        longest_gap_max_ms: gaps.max() as f64 / 1000.0,
        errors,
        per_round,
        machine: crate::bench::machine(),
    })
}

async fn measure(
    a: &ViewChangeArgs,
    running: &mut Running,
    info: &Info,
    admin: &AdminClient,
    load: &Load,
) -> anyhow::Result<Vec<Round>> {
    let n = info.dep.n() as u64;
    let mut out = Vec::with_capacity(a.rounds);
    for round in 0..a.rounds {
        let view = wait_steady(admin, load, None).await?;
        let victim = NodeId(u16::try_from(view % n)?);
        let from = load.answers.len();
        let t0 = Instant::now();
        let fault = admin
            .post("/v1/faults", json!({"target": victim.to_string(), "kind": "crash"}))
            .await?;
        let (t1, view_after) = first_answer_above(load, from, view, t0)
            .await
            .with_context(|| format!("round {round}: no answer in a view above {view} after crashing {victim}"))?;
        // Let answers flow a little so the gap after the view change is seen.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let gap = longest_gap(&load.answers.since(from.saturating_sub(1)));
        // The fault would be re-sent to the restarted node: clear it first.
        if let Some(id) = fault["id"].as_u64() {
            admin.delete(&format!("/v1/faults/{id}")).await?;
        }
        let committed = cluster_nodes(&admin.get("/v1/cluster").await?)
            .iter()
            .filter(|n| n["id"] != victim.to_string())
            .filter_map(|n| n["last_committed"].as_u64())
            .max()
            .unwrap_or(0);
        let rejoin = Rejoin {
            node: victim,
            since_ms: wall_ms(),
            committed,
        };
        let restarted = Instant::now();
        running.restart_node(victim).await?;
        wait_steady(admin, load, Some(&rejoin)).await?;
        let r = Round {
            crashed: victim.to_string(),
            view_before: view,
            view_after,
            crash_to_answer_ms: t1.duration_since(t0).as_secs_f64() * 1000.0,
            longest_gap_ms: gap.as_secs_f64() * 1000.0,
            rejoin_ms: restarted.elapsed().as_secs_f64() * 1000.0,
        };
        eprintln!(
            "round {round}: crashed {} in view {} → answer in view {} after {:.1} ms, longest gap {:.1} ms, rejoined in {:.0} ms",
            r.crashed, r.view_before, r.view_after, r.crash_to_answer_ms, r.longest_gap_ms, r.rejoin_ms
        );
        out.push(r);
    }
    Ok(out)
}

/// Until kv has `active` replicas running.
async fn wait_active(admin: &AdminClient, active: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = admin.get("/v1/replicas").await?;
        let n = r
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["app"] == "kv" && r["state"] == "active")
            .count();
        if n >= active {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "kv replicas did not become active within 90 s: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Milliseconds as whole microseconds (at least 1) for a histogram.
fn micros(ms: f64) -> u64 {
    let d = Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A restarted node, and what it must reach to count as caught up.
struct Rejoin {
    node: NodeId,
    /// Wall-clock ms of the restart: its heartbeat must be newer.
    since_ms: u64,
    /// What the others had committed at the restart.
    committed: u64,
}

fn cluster_nodes(c: &Value) -> Vec<Value> {
    c["agreement"].as_array().cloned().unwrap_or_default()
}

/// Waits until every node is connected and reports the same view, the
/// load is answered in that view, and a `rejoining` node has heartbeated
/// since its restart with everything the others had committed by then.
/// Returns the view.
async fn wait_steady(admin: &AdminClient, load: &Load, rejoining: Option<&Rejoin>) -> anyhow::Result<View> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = admin.get("/v1/cluster").await?;
        let nodes = cluster_nodes(&c);
        let views: Vec<u64> = nodes.iter().filter_map(|n| n["view"].as_u64()).collect();
        let caught_up = rejoining.is_none_or(|r| {
            nodes.iter().any(|n| {
                n["id"] == r.node.to_string()
                    && n["last_heartbeat_ms"].as_u64().is_some_and(|t| t >= r.since_ms)
                    && n["last_committed"].as_u64().is_some_and(|s| s >= r.committed)
            })
        });
        let all_up = nodes.iter().all(|n| n["connected"] == true);
        let same_view = views.len() == nodes.len() && views.windows(2).all(|w| w[0] == w[1]);
        if let (true, true, true, Some(&view)) = (caught_up, all_up, same_view, views.first()) {
            // And the load is answered in that view right now.
            let recent = load.answers.since(load.answers.len().saturating_sub(1));
            if recent
                .last()
                .is_some_and(|(t, v)| *v == view && t.elapsed() < Duration::from_millis(500))
            {
                return Ok(view);
            }
        }
        if Instant::now() >= deadline {
            admin.print_recent_events().await;
            anyhow::bail!("the cluster did not settle within 60 s: {c}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first answer after `from` certified in a view above `view`.
async fn first_answer_above(load: &Load, from: usize, view: View, t0: Instant) -> anyhow::Result<(Instant, View)> {
    let deadline = t0 + Duration::from_secs(30);
    let mut seen = from;
    loop {
        let new = load.answers.since(seen);
        seen += new.len();
        if let Some(&(t, v)) = new.iter().find(|(_, v)| *v > view) {
            return Ok((t, v));
        }
        anyhow::ensure!(Instant::now() < deadline, "none within 30 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Longest time between consecutive answers (answers are pushed in time order).
fn longest_gap(answers: &[(Instant, View)]) -> Duration {
    answers
        .windows(2)
        .map(|w| w[1].0.saturating_duration_since(w[0].0))
        .max()
        .unwrap_or_default()
}
