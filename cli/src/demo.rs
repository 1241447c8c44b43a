//! `zz demo --scenario NAME`: a narrated failure-injection run. Starts a
//! deployment, drives load through the gateway with live counters, injects
//! the scenario's fault, narrates the timeline from the orchestrator's event
//! log, then checks its expectations and fails if any does not hold.

use crate::admin::AdminClient;
use crate::launch::{BackendArgs, Info, LaunchOptions, Running};
use crate::oracle::KvOracle;
use anyhow::Context;
use clap::Args;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use zz_wire::config::{generate, GenerateOptions};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// byzantine-reply, crash, hang, corrupt-state, bad-checkpoint,
    /// equivocating-primary, wasm-app, two-faults (f=2). `all` runs each in turn.
    #[arg(long, default_value = "byzantine-reply")]
    pub scenario: String,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Seed for the load's random choices (printed; re-use it to repeat a run).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent load workers.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Keep the demo's data dir (logs, stores) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Each scenario writes its narrated log (NAME.log) and the picture of
    /// its throughput and latency with the fault's markers (NAME.png) here.
    #[arg(long, default_value = "zz-demo")]
    pub out: PathBuf,
}

/// The narration: printed as it happens and kept for the scenario's log.
#[derive(Default)]
struct Narration(Mutex<Vec<String>>);

impl Narration {
    fn say(&self, line: String) {
        println!("{line}");
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }

    fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut t = lines.join("\n");
        t.push('\n');
        t
    }
}

macro_rules! say {
    ($n:expr, $($t:tt)*) => { $n.say(format!($($t)*)) };
}

mod wasm;

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub f: usize,
    /// (target, kind) injected together.
    pub faults: &'static [(&'static str, &'static str)],
    /// Expect an incident with a replacement (replica faults) or a view change.
    pub expect: Expect,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Replaced,
    ViewChange,
    /// The Wasm app scenario (`demo/wasm.rs`): its own script and checks.
    WasmApp,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "byzantine-reply",
        about: "active replica kv-e1 starts lying in its replies",
        f: 1,
        faults: &[("kv-e1", "corrupt-reply")],
        expect: Expect::Replaced,
    },
    Scenario {
        name: "crash",
        about: "active replica kv-e1 crashes",
        f: 1,
        faults: &[("kv-e1", "crash")],
        expect: Expect::Replaced,
    },
    Scenario {
        name: "hang",
        about: "active replica kv-e1 hangs: connected but silent",
        f: 1,
        faults: &[("kv-e1", "hang")],
        expect: Expect::Replaced,
    },
    Scenario {
        name: "corrupt-state",
        about: "active replica bank-e1 silently corrupts its state",
        f: 1,
        faults: &[("bank-e1", "corrupt-state")],
        expect: Expect::Replaced,
    },
    Scenario {
        name: "bad-checkpoint",
        about: "active replica kv-e1 signs checkpoints with a wrong root",
        f: 1,
        faults: &[("kv-e1", "bad-checkpoint")],
        expect: Expect::Replaced,
    },
    Scenario {
        name: "equivocating-primary",
        about: "agreement primary a0 sends different pre-prepares to different backups",
        f: 1,
        faults: &[("a0", "equivocate")],
        expect: Expect::ViewChange,
    },
    Scenario {
        name: "wasm-app",
        about: "a tenant's guestbook (Wasm) deployed at run time, one of its active replicas lies, then it is upgraded with its entries kept",
        f: 1,
        faults: &[],
        expect: Expect::WasmApp,
    },
    Scenario {
        name: "two-faults",
        about: "f=2: active replicas kv-e1 and kv-e2 lie at once",
        f: 2,
        faults: &[("kv-e1", "corrupt-reply"), ("kv-e2", "corrupt-reply")],
        expect: Expect::Replaced,
    },
];

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    answers: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
}

pub async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    // Checked once, before any scenario starts anything.
    a.backend.resolve()?;
    let names: Vec<&Scenario> = if a.scenario == "all" {
        SCENARIOS.iter().collect()
    } else {
        let s = SCENARIOS.iter().find(|s| s.name == a.scenario).with_context(|| {
            format!(
                "unknown scenario {:?}; choose one of: {}, all",
                a.scenario,
                SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            )
        })?;
        vec![s]
    };
    let mut failed = Vec::new();
    for s in names {
        if run_scenario(s, &a).await.is_err() {
            failed.push(s.name);
        }
    }
    anyhow::ensure!(failed.is_empty(), "scenarios failed: {}", failed.join(", "));
    Ok(())
}

fn replica_states(replicas: &Value, app: &str) -> String {
    let mut v: Vec<String> = replicas
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["app"] == app)
        .map(|r| {
            format!(
                "{}:{}",
                r["id"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    v.sort();
    v.join(" ")
}

fn count_state(replicas: &Value, app: &str, state: &str) -> usize {
    replicas
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["app"] == app && r["state"] == state)
        .count()
}

async fn run_scenario(s: &Scenario, a: &DemoArgs) -> anyhow::Result<()> {
    let n = Arc::new(Narration::default());
    let result = run_scenario_narrated(s, a, &n).await;
    if let Err(e) = &result {
        say!(n, "FAILED {}: {e:#}", s.name);
    }
    let log = a.out.join(format!("{}.log", s.name));
    match std::fs::create_dir_all(&a.out).and_then(|()| std::fs::write(&log, n.text())) {
        Ok(()) => println!("   narrated log: {}", shown(&log)),
        Err(e) => println!("   narrated log not written to {}: {e}", log.display()),
    }
    result
}

/// A path as printed: absolute, so it can be opened from anywhere.
fn shown(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

async fn run_scenario_narrated(s: &Scenario, a: &DemoArgs, n: &Arc<Narration>) -> anyhow::Result<()> {
    let seed = a.seed.unwrap_or_else(rand::random);
    say!(n, "== scenario {}: {} (f={}, seed {seed})", s.name, s.about, s.f);
    let dir = tempfile::Builder::new().prefix("zz-demo-").tempdir()?;
    let data_dir = dir.path().to_path_buf();
    let mut opts = GenerateOptions::local(s.f, &["kv", "bank"])?;
    opts.wasm_slots = 1;
    let (dep, ids) = generate(&opts)?;
    let mut running = Running::start(LaunchOptions::local(&data_dir, dep, &ids, a.backend.resolve()?)?).await?;
    let info = running.info.clone();
    let result = tokio::select! {
        r = drive(s, a, seed, &info, n) => r,
        e = running.failed() => Err(e),
    };
    running.stop().await;
    if a.keep {
        let kept = dir.keep();
        say!(n, "   data kept in {}", kept.display());
    }
    result
}

async fn drive(s: &Scenario, a: &DemoArgs, seed: u64, running: &Info, n: &Arc<Narration>) -> anyhow::Result<()> {
    if s.expect == Expect::WasmApp {
        return wasm::drive(s, a, seed, running, n).await;
    }
    let f = s.f;
    let admin = running.admin()?;
    let gw = format!("http://{}", running.gateway_addr);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let start = Instant::now();

    // 1. Ready: every app has f+1 active and f paused replicas.
    let ready = wait_for(running.backend.ready_timeout(), || async {
        let r = admin.get("/v1/replicas").await.ok()?;
        ["kv", "bank"]
            .iter()
            .all(|app| count_state(&r, app, "active") == f + 1 && count_state(&r, app, "paused") == f)
            .then_some(r)
    })
    .await
    .context("the deployment did not reach f+1 active + f paused replicas per app")?;
    say!(
        n,
        "[{:>6} ms] ready: kv {} | bank {}",
        start.elapsed().as_millis(),
        replica_states(&ready, "kv"),
        replica_states(&ready, "bank")
    );

    // 2. Bank accounts whose total must be conserved.
    let accounts = 8;
    for i in 0..accounts {
        let r = http
            .post(format!("{gw}/bank/accounts"))
            .json(&json!({"id": format!("acct{i}"), "balance": 1000}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "creating acct{i}: {}", r.status());
    }
    let total = 1000 * accounts;

    // 3. Load with live counters.
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..a.workers {
        let (http, gw, c, stop) = (http.clone(), gw.clone(), counters.clone(), stop.clone());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        workers.push(tokio::spawn(async move {
            let mut mine = KvOracle::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                c.requests.fetch_add(1, Ordering::Relaxed);
                let ok = match rng.gen_range(0..3) {
                    0 => {
                        let key = format!("w{w}-k{}", rng.gen_range(0..16));
                        let val = format!("v{n}");
                        let answered = match http.put(format!("{gw}/kv/{key}")).body(val.clone()).send().await {
                            Ok(r) if r.status().as_u16() == 200 => Some(true),
                            Ok(r) if r.status().is_server_error() => None,
                            Ok(_) => Some(false),
                            Err(_) => None,
                        };
                        match answered {
                            Some(true) => mine.written(&key, &val),
                            // No answer: the PUT may still have been applied.
                            None => mine.maybe_written(&key, &val),
                            Some(false) => {}
                        }
                        answered
                    }
                    1 if mine.keys().len() > 0 => {
                        let idx = rng.gen_range(0..mine.keys().len());
                        let key = mine.keys().nth(idx).unwrap_or_default().to_string();
                        match http.get(format!("{gw}/kv/{key}")).send().await {
                            Ok(r) if r.status().as_u16() == 200 => match r.text().await {
                                Ok(body) => Some(mine.read(&key, Some(&body))),
                                Err(_) => None,
                            },
                            Ok(r) if r.status().as_u16() == 404 => Some(mine.read(&key, None)),
                            Ok(r) if r.status().is_server_error() => None,
                            Ok(_) => Some(false),
                            Err(_) => None,
                        }
                    }
                    _ => {
                        let from = rng.gen_range(0..accounts);
                        let to = (from + 1 + rng.gen_range(0..accounts - 1)) % accounts;
                        let body = json!({"from": format!("acct{from}"), "to": format!("acct{to}"), "amount": rng.gen_range(1..50)});
                        match http.post(format!("{gw}/bank/transfer")).json(&body).send().await {
                            Ok(r) if matches!(r.status().as_u16(), 200 | 409) => Some(true),
                            Ok(r) if r.status().is_server_error() => None,
                            Ok(_) => Some(false),
                            Err(_) => None,
                        }
                    }
                };
                match ok {
                    Some(true) => c.answers.fetch_add(1, Ordering::Relaxed),
                    Some(false) => c.wrong.fetch_add(1, Ordering::Relaxed),
                    None => c.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let load_from_ms = zz_orchestrator::series::now_ms();
    let progress = {
        let (c, stop, n) = (counters.clone(), stop.clone(), n.clone());
        let admin = admin.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                let states = match admin.get("/v1/replicas").await {
                    Ok(r) => format!("kv {} | bank {}", replica_states(&r, "kv"), replica_states(&r, "bank")),
                    Err(_) => "?".into(),
                };
                say!(
                    n,
                    "   requests {:>6}  answers {:>6}  errors {:>3}  wrong {:>2}  | {states}",
                    c.requests.load(Ordering::Relaxed),
                    c.answers.load(Ordering::Relaxed),
                    c.errors.load(Ordering::Relaxed),
                    c.wrong.load(Ordering::Relaxed)
                );
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 4. Inject.
    let events_before = admin.get("/v1/events?since=0").await?;
    let mut since = events_before
        .as_array()
        .map_or(0, |e| e.iter().filter_map(|x| x["seq"].as_u64()).max().unwrap_or(0));
    let cluster_before = admin.get("/v1/cluster").await?;
    let t0 = Instant::now();
    // Events carry the orchestrator's wall-clock time; narrate relative to the injection.
    let t0_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    for (target, kind) in s.faults {
        admin
            .post("/v1/faults", json!({"target": target, "kind": kind}))
            .await?;
        say!(n, "[{:>6} ms] injected {kind} into {target}", 0);
    }

    // 5. Narrate until healed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut fenced = std::collections::BTreeSet::new();
    let mut views = max_view(&cluster_before);
    // When this loop saw each new view (the orchestrator logs no event for it).
    let mut view_changes = Vec::new();
    let healed = loop {
        if let Ok(c) = admin.get("/v1/cluster").await {
            let v = max_view(&c);
            if v > views {
                views = v;
                view_changes.push((zz_orchestrator::series::now_ms(), format!("view {v}")));
                let primary = v % c["agreement"].as_array().map_or(1, |a| a.len().max(1) as u64);
                say!(
                    n,
                    "[{:>6} ms] view-change            agreement cluster in view {v}: primary is now a{primary}",
                    t0.elapsed().as_millis()
                );
            }
        }
        let events = admin
            .get(&format!("/v1/events?since={since}"))
            .await
            .unwrap_or(Value::Null);
        for e in events.as_array().into_iter().flatten() {
            since = since.max(e["seq"].as_u64().unwrap_or(0));
            if e["kind"] == "fenced" {
                fenced.insert(e["replica"].as_str().unwrap_or("").to_string());
            }
            let at = e["at_ms"]
                .as_u64()
                .map_or(t0.elapsed().as_millis() as i128, |a| i128::from(a) - i128::from(t0_ms));
            say!(
                n,
                "[{:>6} ms] {:<22} {} {}",
                at,
                e["kind"].as_str().unwrap_or("?"),
                e["replica"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or("")
            );
        }
        if healed(s, &admin, f, &cluster_before, &fenced).await {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let _ = progress.await;

    // 6. Expectations.
    let mut problems = Vec::new();
    if !healed {
        problems.push("the system did not heal within 120 s".to_string());
    }
    let wrong = counters.wrong.load(Ordering::Relaxed);
    if wrong > 0 {
        problems.push(format!("{wrong} wrong answers reached clients"));
    }
    let answers = counters.answers.load(Ordering::Relaxed);
    if answers == 0 {
        problems.push("no request was answered".into());
    }
    let audit: Value = http.get(format!("{gw}/bank/audit")).send().await?.json().await?;
    if audit["total"].as_u64() != Some(total) {
        problems.push(format!("bank total is {} instead of {total}", audit["total"]));
    }
    let incidents = admin.get("/v1/incidents").await?;
    for i in incidents.as_array().into_iter().flatten() {
        say!(
                n,
            "   incident {} app {} seq {} kind {}: recovery {} ms, faulty {}, replaced {}; coalesced {} (seqs {}..={}, kinds {})",
            i["id"],
            i["app"],
            i["seq"],
            i["kind"],
            i["recovery_ms"],
            i["faulty"],
            i["replaced"],
            i["coalesced"],
            i["seq"],
            i["last_seq"],
            i["kinds"]
        );
    }
    say!(
        n,
        "   totals: requests {} answers {answers} errors {} wrong {wrong}; bank total {} (expected {total})",
        counters.requests.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        audit["total"]
    );
    // The picture of the run, as the dashboard drew it live.
    let window = Window {
        from_ms: load_from_ms,
        t0_ms,
        t0,
    };
    conclude(s, a, &admin, n, &view_changes, &window, problems).await
}

/// When the load started and the fault was injected.
struct Window {
    from_ms: u64,
    t0_ms: u64,
    t0: Instant,
}

/// Every scenario's ending: the picture of the run, then PASSED, or the
/// scenario fails with every problem found.
async fn conclude(
    s: &Scenario,
    a: &DemoArgs,
    admin: &AdminClient,
    n: &Arc<Narration>,
    extra: &[(u64, String)],
    w: &Window,
    mut problems: Vec<String>,
) -> anyhow::Result<()> {
    let png = a.out.join(format!("{}.png", s.name));
    match picture(s, admin, extra, w.from_ms, w.t0_ms, &png).await {
        Ok(()) => say!(n, "   picture: {}", shown(&png)),
        Err(e) => problems.push(format!("the picture was not drawn: {e:#}")),
    }
    if problems.is_empty() {
        say!(n, "PASSED {} in {:.1} s", s.name, w.t0.elapsed().as_secs_f64());
        Ok(())
    } else {
        anyhow::bail!(problems.join("; "))
    }
}

/// Draws the gateway's series (`GET /v1/series`) from the start of the
/// load, with the markers of the fault episode, into `path`.
async fn picture(
    s: &Scenario,
    admin: &AdminClient,
    extra: &[(u64, String)],
    from_ms: u64,
    t0_ms: u64,
    path: &Path,
) -> anyhow::Result<()> {
    let series: zz_orchestrator::api::SeriesView = serde_json::from_value(admin.get("/v1/series").await?)?;
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let title = format!("zz demo {}: {}", s.name, s.about);
    // From the first whole second of load.
    crate::demo_plot::demo_timeline(&title, &series, extra, (from_ms / 1000 + 1) * 1000, t0_ms, path)
}

/// The scenario's end state: the faulty replicas replaced and every app back
/// to f+1 active + f paused; or, for a faulty primary, a new view.
async fn healed(
    s: &Scenario,
    admin: &AdminClient,
    f: usize,
    before: &Value,
    fenced: &std::collections::BTreeSet<String>,
) -> bool {
    match s.expect {
        Expect::ViewChange => {
            let Ok(c) = admin.get("/v1/cluster").await else {
                return false;
            };
            max_view(&c) > max_view(before)
        }
        Expect::Replaced => {
            let Ok(r) = admin.get("/v1/replicas").await else {
                return false;
            };
            let apps_ok = ["kv", "bank"]
                .iter()
                .all(|app| count_state(&r, app, "active") == f + 1 && count_state(&r, app, "paused") == f);
            apps_ok && s.faults.iter().all(|(target, _)| fenced.contains(*target))
        }
        Expect::WasmApp => false,
    }
}

fn max_view(cluster: &Value) -> u64 {
    cluster["agreement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["view"].as_u64())
        .max()
        .unwrap_or(0)
}

async fn wait_for<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
