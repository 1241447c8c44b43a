//! `zz bench`: load on a real deployment, as a BFT client directly or
//! through the HTTP gateway. Reports throughput, latency percentiles
//! (hdrhistogram), CPU seconds per request and memory by role. The
//! `unreplicated` mode runs the same load against one `zz-agent serve` per
//! app instead: the same app code, no agreement and no voting.

use crate::launch::{Info, LaunchOptions, Running};
use crate::procstat;
use crate::unreplicated::UnreplicatedClient;
use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zz_agreement::client::Client;
use zz_wire::config::{generate, GenerateOptions};
use zz_wire::{AppId, AppRequest};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// f+1 active replicas, f paused (zz).
    Zz,
    /// 2f+1 active replicas (classic separated BFT).
    Full,
    /// One agent, no agreement, no voting: the ceiling.
    Unreplicated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// The BFT client library, in-process.
    Client,
    /// HTTP through the gateway.
    Gateway,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// kv PUTs only.
    KvPut,
    /// kv 50% GET / 50% PUT.
    KvMix,
    /// bank transfers between a few accounts.
    Bank,
    /// kv PUTs to `examples/kv`, kv's HTTP API as a tenant's Wasm component
    /// deployed at run time (`zz`/`full` modes).
    WasmKv,
}

/// The component `--workload wasm-kv` deploys (built by
/// `scripts/build-examples.sh`).
const WASM_KV: &[u8] = include_bytes!("../../examples/kv/kv.wasm");

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCmd {
    /// Repeated incidents: fault → first certified correct answer.
    Recovery(crate::recovery::RecoveryArgs),
    /// What a standby of a tier costs its host: memory, idle CPU, time to
    /// be ready again, and one app's memory against 2f+1 active replicas.
    StandbyCost(crate::standby_cost::StandbyCostArgs),
    /// Plots (PNG) and markdown tables from a directory of result JSON.
    Report(crate::report::ReportArgs),
    /// Primary crash → first commit in the new view, over repeated rounds.
    ViewChange(crate::viewchange::ViewChangeArgs),
}

#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub cmd: Option<BenchCmd>,
    #[arg(long, value_enum, default_value = "zz")]
    pub mode: Mode,
    #[arg(long, default_value_t = 1)]
    pub f: usize,
    /// Apps sharing the machine (each its own ordered log and replicas);
    /// throughput is the aggregate.
    #[arg(long, default_value_t = 1)]
    pub apps: usize,
    /// Concurrent closed-loop clients (ignored with --rate).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Open loop: issue this many requests per second regardless of answers.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Measured seconds (after a warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of load before the measured ones [default: 2; with
    /// --attack 30, so the nodes' memory has reached its steady state (the
    /// archive of committed proposals for lagging peers, `archive_max_mb`,
    /// fills in some 25 s at 10k ops/s) before it is compared].
    #[arg(long)]
    pub warmup: Option<u64>,
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    #[arg(long, value_enum, default_value = "kv-put")]
    pub workload: Workload,
    #[arg(long, value_enum, default_value = "client")]
    pub via: Via,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Measure the load fault-free, then as long again under this attack by
    /// one Byzantine principal, in the same invocation (`--mode zz`, kv-put).
    #[arg(long, value_enum)]
    pub attack: Option<crate::attack::Attack>,
    /// Seed for key choice (printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Overrides one `[timing]` knob of the deployment, e.g. `pipeline=2`
    /// (repeatable; `zz` and `full` modes).
    #[arg(long = "timing", value_name = "KEY=VALUE")]
    pub timing: Vec<String>,
    /// Pin the execution replicas (or the unreplicated agent) to these CPUs
    /// and everything else (agreement nodes, client) to the others, as if
    /// the execution host were apart from the agreement cluster, e.g. `1`.
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    pub exec_cpus: Option<Vec<usize>>,
}

/// `--warmup` when not given.
pub const WARMUP_SECS: u64 = 2;
/// `--warmup` under `--attack` when not given.
pub const ATTACK_WARMUP_SECS: u64 = 30;

impl BenchArgs {
    pub fn warmup_secs(&self) -> u64 {
        let default = if self.attack.is_some() {
            ATTACK_WARMUP_SECS
        } else {
            WARMUP_SECS
        };
        self.warmup.unwrap_or(default)
    }
}

#[derive(Debug, Serialize)]
pub struct RoleUsage {
    pub role: String,
    pub cpu_secs: f64,
    pub cpu_us_per_request: f64,
    pub rss_mib: f64,
    pub processes: usize,
}

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub mode: Mode,
    pub via: Via,
    pub workload: Workload,
    pub f: usize,
    pub apps: usize,
    pub clients: usize,
    pub rate: Option<u64>,
    pub value_size: usize,
    pub duration_secs: f64,
    pub requests: u64,
    pub errors: u64,
    pub throughput_ops: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub roles: Vec<RoleUsage>,
    pub seed: u64,
    pub machine: String,
    /// `--exec-cpus`, when the run kept execution on its own CPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_cpus: Option<Vec<usize>>,
}

impl BenchResult {
    pub fn table_header() -> &'static str {
        "| mode | via | workload | f | apps | clients | ops/s | p50 ms | p99 ms | p99.9 ms | errors |\n|---|---|---|---|---|---|---|---|---|---|---|"
    }

    pub fn table_row(&self) -> String {
        format!(
            "| {:?} | {:?} | {:?} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.mode,
            self.via,
            self.workload,
            self.f,
            self.apps,
            self.rate.map_or(self.clients.to_string(), |r| format!("{r}/s open")),
            self.throughput_ops,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.errors
        )
    }
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} cores, {model}")
}

/// Keys the kv workloads choose from (`kv-mix` uses the first tenth).
const KV_KEYS: usize = 10_000;

/// One app's request paths, formatted once: formatting a path per request
/// was a fifth of the load generator's CPU, which shares the machine with
/// the system it measures.
struct AppPaths {
    keys: Vec<String>,
    transfer: String,
}

impl AppPaths {
    /// The paths of the app named `app` (its paths start with its name).
    fn new(app: &str) -> AppPaths {
        AppPaths {
            keys: (0..KV_KEYS).map(|k| format!("/{app}/k{k}")).collect(),
            transfer: format!("/{app}/transfer"),
        }
    }
}

/// What every load task builds its requests from: the workload, the value
/// to PUT and each app's paths.
struct Requests {
    workload: Workload,
    value: Vec<u8>,
    paths: Vec<AppPaths>,
}

impl Requests {
    fn new(workload: Workload, value_size: usize, names: &[String]) -> Requests {
        Requests {
            workload,
            value: vec![b'x'; value_size],
            paths: names.iter().map(|n| AppPaths::new(n)).collect(),
        }
    }

    /// One request to app number `app`.
    fn make(&self, rng: &mut impl Rng, app: usize) -> AppRequest {
        let (paths, value) = (&self.paths[app], &self.value);
        match self.workload {
            Workload::KvPut | Workload::WasmKv => {
                AppRequest::new("PUT", &paths.keys[rng.gen_range(0..KV_KEYS)], value.clone())
            }
            Workload::KvMix => {
                let key = &paths.keys[rng.gen_range(0..KV_KEYS / 10)];
                if rng.gen_bool(0.5) {
                    AppRequest::new("GET", key, Vec::new())
                } else {
                    AppRequest::new("PUT", key, value.clone())
                }
            }
            Workload::Bank => {
                let from = rng.gen_range(0..16);
                let to = (from + 1 + rng.gen_range(0..15)) % 16;
                let body = format!(r#"{{"from":"b{from}","to":"b{to}","amount":1}}"#);
                let mut r = AppRequest::new("POST", &paths.transfer, body.into_bytes());
                r.headers.push(("content-type".into(), "application/json".into()));
                r
            }
        }
    }
}

#[derive(Clone)]
pub(crate) enum Target {
    Client(Client, Vec<AppId>, Vec<String>),
    Gateway(reqwest::Client, String, Vec<String>),
    Unreplicated(Arc<UnreplicatedClient>, Vec<String>),
}

impl Target {
    /// The apps' names, which start their request paths.
    fn names(&self) -> &[String] {
        match self {
            Target::Client(_, _, names) | Target::Gateway(_, _, names) | Target::Unreplicated(_, names) => names,
        }
    }

    /// The body of a certified answer to `req`, through the BFT client
    /// (`None` from the other targets, or on failure).
    pub(crate) async fn get_body(&self, app: usize, req: AppRequest) -> Option<Vec<u8>> {
        match self {
            Target::Client(c, ids, _) => c
                .call(ids[app], req)
                .await
                .ok()
                .filter(|r| r.status < 300)
                .map(|r| r.body),
            _ => None,
        }
    }

    /// `req` to app number `app`, whose name its path already starts with
    /// (built once per request by `Requests::make`, not rewritten here).
    pub(crate) async fn call(&self, app: usize, req: AppRequest) -> bool {
        match self {
            Target::Client(c, ids, _) => matches!(c.call(ids[app], req).await, Ok(r) if r.status < 500),
            Target::Gateway(http, base, _) => {
                let url = format!("{base}{}", req.path);
                let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::GET);
                let mut b = http.request(method, url).body(req.body);
                for (k, v) in req.headers {
                    b = b.header(k, v);
                }
                matches!(b.send().await, Ok(r) if r.status().as_u16() < 500)
            }
            Target::Unreplicated(c, _) => c.call(app, req).await,
        }
    }
}

pub async fn bench(a: BenchArgs) -> anyhow::Result<BenchResult> {
    anyhow::ensure!(a.apps >= 1 && a.apps <= 16, "--apps must be 1..=16");
    anyhow::ensure!(
        a.timing.is_empty() || a.mode != Mode::Unreplicated,
        "--timing tunes the agreement protocol, which --mode unreplicated does not run"
    );
    let seed = a.seed.unwrap_or_else(rand::random);
    let kind = match a.workload {
        Workload::Bank => "bank",
        Workload::WasmKv => "wasm-kv",
        Workload::KvPut | Workload::KvMix => "kv",
    };
    let names: Vec<String> = (0..a.apps)
        .map(|i| if i == 0 { kind.to_string() } else { format!("{kind}{i}") })
        .collect();
    eprintln!("bench: mode {:?}, f={}, {} app(s), seed {seed}", a.mode, a.f, a.apps);
    let result = match a.mode {
        Mode::Zz | Mode::Full => bench_deployment(&a, seed, kind, &names).await?,
        Mode::Unreplicated => bench_unreplicated(&a, seed, kind, &names).await?,
    };
    println!("{}", BenchResult::table_header());
    println!("{}", result.table_row());
    for r in &result.roles {
        println!(
            "   {:<28} cpu {:>7.2} s  {:>8.1} µs/request  rss {:>7.1} MiB  ({} processes)",
            r.role, r.cpu_secs, r.cpu_us_per_request, r.rss_mib, r.processes
        );
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&result)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(result)
}

/// `zz` and `full`: a whole local deployment, loaded through the BFT client
/// or the gateway.
async fn bench_deployment(a: &BenchArgs, seed: u64, kind: &str, names: &[String]) -> anyhow::Result<BenchResult> {
    let dir = tempfile::Builder::new().prefix("zz-bench-").tempdir()?;
    let mut opts = GenerateOptions::local(a.f, &[])?;
    if a.workload == Workload::WasmKv {
        // Empty slots; the apps are deployed into them once it runs.
        opts.wasm_slots = names.len();
    } else {
        opts.apps = names.iter().map(|n| (n.clone(), kind.to_string())).collect();
    }
    let (mut dep, ids) = generate(&opts)?;
    for t in &a.timing {
        dep.timing.set(t)?;
    }
    let active = match a.mode {
        Mode::Zz => a.f + 1,
        Mode::Full => 2 * a.f + 1,
        Mode::Unreplicated => anyhow::bail!("--mode unreplicated runs no deployment"),
    };
    let mut running = Running::start(LaunchOptions {
        active_replicas: Some(active),
        ..LaunchOptions::local(dir.path(), dep, &ids, crate::launch::Backend::Process)?
    })
    .await?;
    let info = running.info.clone();
    let load = async {
        let slots = if a.workload == Workload::WasmKv {
            deploy_wasm(&info, names).await?
        } else {
            names.to_vec()
        };
        let target = deployment_target(a, &info, names, &slots, active).await?;
        run_load(a, seed, &target, names.len()).await
    };
    let result = tokio::select! {
        r = load => r,
        e = running.failed() => Err(e),
        e = interrupted() => Err(e),
    };
    running.stop().await;
    result
}

/// Deploys `examples/kv` as each of `names` through the admin API; the
/// slots they run in. Prints each deploy's time (request → certified
/// install).
async fn deploy_wasm(info: &Info, names: &[String]) -> anyhow::Result<Vec<String>> {
    use base64::Engine as _;
    let admin = info.admin()?;
    let component = base64::engine::general_purpose::STANDARD.encode(WASM_KV);
    let mut slots = Vec::new();
    for name in names {
        let t = Instant::now();
        let d = admin
            .post("/v1/apps", serde_json::json!({ "name": name, "component": component }))
            .await
            .with_context(|| format!("deploying {name}"))?;
        let slot = admin.get(&format!("/v1/apps/{name}")).await?["slot"]
            .as_str()
            .context("the deployed app names no slot")?
            .to_string();
        eprintln!(
            "bench: deployed examples/kv as {name} (version {}) into {slot} in {} ms",
            d["version"],
            t.elapsed().as_millis()
        );
        slots.push(slot);
    }
    Ok(slots)
}

/// Resolves on Ctrl-C or SIGTERM, so that a bench stops the deployment it
/// started (paused replicas included) instead of leaving it behind.
pub(crate) async fn interrupted() -> anyhow::Error {
    crate::up::shutdown_signal().await;
    anyhow::anyhow!("interrupted")
}

/// Waits until each app of `slots` (the deployment's names) has `active`
/// active replicas.
async fn wait_ready(running: &Info, slots: &[String], active: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let token = running.token()?;
    let url = format!("http://{}/v1/replicas", running.admin_addr);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = http.get(&url).bearer_auth(&token).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                let ok = slots.iter().all(|app| {
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| r["app"] == app.as_str() && r["state"] == "active")
                        .count()
                        >= active
                });
                if ok {
                    return Ok(());
                }
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "replicas did not become active within 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Connections to each app's server; a few, so the server's connection
/// readers can run on both of its threads.
const UNREPLICATED_CONNS: usize = 4;

/// `unreplicated`: one `zz-agent serve` per app, no agreement, no voting.
async fn bench_unreplicated(a: &BenchArgs, seed: u64, kind: &str, names: &[String]) -> anyhow::Result<BenchResult> {
    anyhow::ensure!(
        a.workload != Workload::WasmKv,
        "--workload wasm-kv deploys into a running deployment; use --mode zz or full"
    );
    anyhow::ensure!(
        a.via == Via::Client,
        "--mode unreplicated has no gateway (one agent serves its own wire protocol); use --via client"
    );
    let mut servers = crate::unreplicated::Servers::start(kind, names)?;
    let addrs = servers.addrs.clone();
    let load = async {
        crate::unreplicated::wait_accepting(&addrs).await?;
        let client = UnreplicatedClient::connect(&addrs, UNREPLICATED_CONNS).await?;
        let target = Target::Unreplicated(Arc::new(client), names.to_vec());
        run_load(a, seed, &target, names.len()).await
    };
    let result = tokio::select! {
        r = load => r,
        e = servers.exited() => Err(e),
        e = interrupted() => Err(e),
    };
    servers.stop().await;
    let mut result = result?;
    // Nothing here tolerates a fault, and the only process of ours is the client.
    result.f = 0;
    for r in &mut result.roles {
        if r.role == procstat::SELF_ROLE {
            r.role = "bench client".into();
        }
    }
    Ok(result)
}

/// Waits until every app has `active` active replicas, then connects the
/// kind of client `--via` asks for. `names` start the request paths;
/// `slots` are the deployment's apps they run in (a tenant's app runs in a
/// slot of another name).
pub(crate) async fn deployment_target(
    a: &BenchArgs,
    running: &Info,
    names: &[String],
    slots: &[String],
    active: usize,
) -> anyhow::Result<Target> {
    wait_ready(running, slots, active).await?;
    let dep = running.dep.clone();
    let app_ids: Vec<AppId> = slots.iter().filter_map(|n| dep.app_by_name(n)).collect();
    let target = match a.via {
        Via::Client => {
            let c = running.bench_client(Duration::from_secs(10))?;
            Target::Client(c, app_ids, names.to_vec())
        }
        Via::Gateway => Target::Gateway(
            reqwest::Client::builder().pool_max_idle_per_host(1024).build()?,
            format!("http://{}", running.gateway_addr),
            names.to_vec(),
        ),
    };
    Ok(target)
}

/// The load itself, the same for every mode: set up the workload's
/// accounts, warm up, then measure `--duration` seconds.
pub(crate) async fn run_load(a: &BenchArgs, seed: u64, target: &Target, apps: usize) -> anyhow::Result<BenchResult> {
    if let Some(cpus) = &a.exec_cpus {
        let (exec, rest) = crate::procstat::split_cpus(cpus)?;
        eprintln!("bench: {exec} execution process(es) pinned to CPU {cpus:?}, {rest} other(s) to the remaining CPUs");
    }
    if a.workload == Workload::Bank {
        for app in 0..apps {
            for i in 0..16 {
                let mut r = AppRequest::new(
                    "POST",
                    &format!("/{}/accounts", target.names()[app]),
                    format!(r#"{{"id":"b{i}","balance":1000000}}"#).into_bytes(),
                );
                r.headers.push(("content-type".into(), "application/json".into()));
                target.call(app, r).await;
            }
        }
    }
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(Requests::new(a.workload, a.value_size, target.names()));
    let mut tasks = Vec::new();
    let record = {
        let (hist, recording, done, errors) = (hist.clone(), recording.clone(), done.clone(), errors.clone());
        move |ok: bool, us: u64| {
            if !recording.load(Ordering::Relaxed) {
                return;
            }
            if ok {
                done.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut h) = hist.lock() {
                    let _ = h.record(us.max(1));
                }
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    match a.rate {
        None => {
            for w in 0..a.clients {
                let (target, stop, requests, record) = (target.clone(), stop.clone(), requests.clone(), record.clone());
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(w as u64));
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let app = rng.gen_range(0..apps);
                        let req = requests.make(&mut rng, app);
                        let t = Instant::now();
                        let ok = target.call(app, req).await;
                        record(ok, u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                }));
            }
        }
        Some(rate) => {
            let (target, stop, requests, record) = (target.clone(), stop.clone(), requests.clone(), record.clone());
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            tasks.push(tokio::spawn(async move {
                let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
                let start = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Latency counts from the intended send time (no coordinated omission).
                    let intended = start + period.mul_f64(n as f64);
                    tokio::time::sleep_until(intended.into()).await;
                    n += 1;
                    let app = rng.gen_range(0..apps);
                    let req = requests.make(&mut rng, app);
                    let (target, record) = (target.clone(), record.clone());
                    tokio::spawn(async move {
                        let ok = target.call(app, req).await;
                        record(ok, u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX));
                    });
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(a.warmup_secs())).await;
    let before = procstat::snapshot();
    let t0 = Instant::now();
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(a.duration)).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let after = procstat::snapshot();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    let requests = done.load(Ordering::Relaxed);
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?
        .clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let roles = after
        .iter()
        .map(|(role, u)| {
            let cpu = u.cpu_secs - before.get(role).map_or(0.0, |b| b.cpu_secs);
            RoleUsage {
                role: role.to_string(),
                cpu_secs: cpu,
                cpu_us_per_request: if requests > 0 { cpu * 1e6 / requests as f64 } else { 0.0 },
                rss_mib: u.rss_mib,
                processes: u.processes,
            }
        })
        .collect();
    Ok(BenchResult {
        mode: a.mode,
        via: a.via,
        workload: a.workload,
        f: a.f,
        apps: a.apps,
        clients: a.clients,
        rate: a.rate,
        value_size: a.value_size,
        duration_secs: elapsed,
        requests,
        errors: errors.load(Ordering::Relaxed),
        throughput_ops: requests as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
        roles,
        seed,
        machine: machine(),
        exec_cpus: a.exec_cpus.clone(),
    })
}
