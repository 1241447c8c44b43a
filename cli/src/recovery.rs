//! `zz bench recovery`: repeated incidents on a real deployment. Each round
//! injects `corrupt-reply` into an active kv replica, then measures, from the
//! client's side, the time from the fault to the first certified correct
//! answer, and records the orchestrator's `recovery_ms` (detection → first
//! certified reply) once the system has healed.
//!
//! `--baseline` is the classic approach ZZ improves on: the woken replica
//! transfers the whole certified checkpoint before it executes and answers.
//! Its agents learn that from `ZZ_AGENT_CATCHUP=full`, inherited from this
//! process, so the baseline runs on the process backend only.

use crate::admin::AdminClient;
use crate::launch::{Backend, BackendArgs, Info, LaunchOptions, Running};
use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use zz_agreement::client::Client;
use zz_wire::config::{generate, GenerateOptions};
use zz_wire::{AppId, AppRequest};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standby {
    /// Suspended (SIGSTOP / virDomainSuspend): resumes in milliseconds.
    Paused,
    /// Not running (process backend: stopped; libvirt: managed save).
    Hibernated,
    /// No instance at all: a wake provisions a clean one from the image
    /// (process backend: a fresh process, as for hibernated; libvirt:
    /// define + boot), which fetches its state on demand.
    Cold,
}

impl Standby {
    /// A standby that wakes without any state of its own.
    fn starts_empty(self) -> bool {
        matches!(self, Standby::Hibernated | Standby::Cold)
    }
}

#[derive(Args, Debug, Clone)]
pub struct RecoveryArgs {
    /// The standby tier woken on each incident [default: paused, or cold
    /// with --baseline]. On the process backend a process keeps no memory
    /// image, so hibernated and cold both start a fresh process and behave
    /// alike; on libvirt hibernated is a managed save, cold a fresh boot.
    #[arg(long, value_enum)]
    pub standby: Option<Standby>,
    /// Full-transfer baseline: the woken replica fetches the whole certified
    /// checkpoint before it executes or answers (process backend only;
    /// needs a standby that starts empty: cold or hibernated).
    #[arg(long)]
    pub baseline: bool,
    /// kv state loaded before the first incident, in MB (1 KiB values).
    #[arg(long, default_value_t = 10)]
    pub state_mb: usize,
    #[arg(long, default_value_t = 20)]
    pub incidents: usize,
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Keep the run's data dir (logs, stores) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Serialize)]
pub struct RecoveryResult {
    /// Always `recovery`: tells these results from throughput ones.
    pub kind: &'static str,
    pub standby: Standby,
    /// The full-transfer baseline (`catchup` is then `full`).
    pub baseline: bool,
    /// How the woken replica got its state: `on-demand` or `full`.
    pub catchup: &'static str,
    pub backend: String,
    /// The libvirt domain type used (`kvm` or `qemu`), if VMs ran.
    pub accel: Option<String>,
    pub state_mb: usize,
    pub incidents: usize,
    /// Fault injected → first certified answer at the client (the PUT sent
    /// right after the fault; certified means f+1 replicas agreed on it).
    pub fault_to_answer_p50_ms: f64,
    pub fault_to_answer_p99_ms: f64,
    /// ... and until a GET read the PUT's value back (the check that the
    /// answer was right; meanwhile the faulty replica is fenced and its
    /// replacement starts copying the state from the same peers).
    pub fault_to_read_back_p50_ms: f64,
    pub fault_to_read_back_p99_ms: f64,
    /// The orchestrator's recovery_ms: detection → first certified reply.
    pub recovery_p50_ms: f64,
    pub recovery_p99_ms: f64,
    /// Fault injected → the incident's detection (wall clock, ms): the part
    /// of fault → answer before recovery_ms starts.
    pub fault_to_detection_p50_ms: f64,
    pub fault_to_detection_p99_ms: f64,
    /// Rounds settled without a wake-up, run again and not counted.
    pub skipped_rounds: usize,
    pub machine: String,
}

pub(crate) fn states(v: &Value, state: &str) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["app"] == "kv" && r["state"] == state)
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

/// The standby tier the run uses, checked against `--baseline`.
fn standby_for(a: &RecoveryArgs) -> anyhow::Result<Standby> {
    let standby = a
        .standby
        .unwrap_or(if a.baseline { Standby::Cold } else { Standby::Paused });
    anyhow::ensure!(
        !a.baseline || standby.starts_empty(),
        "--baseline transfers the whole checkpoint to a replica that starts empty: \
         use --standby cold or hibernated (a paused standby keeps its state)"
    );
    Ok(standby)
}

pub async fn recovery(a: RecoveryArgs) -> anyhow::Result<RecoveryResult> {
    anyhow::ensure!(a.incidents >= 1, "--incidents must be at least 1");
    let standby = standby_for(&a)?;
    let backend = a.backend.resolve()?;
    anyhow::ensure!(
        !a.baseline || backend.name() == "process",
        "--baseline runs on the process backend only: its agents learn the catch-up \
         mode from the environment of this process, which a VM does not inherit"
    );
    // Set either way, so an inherited value cannot mislabel the run.
    std::env::set_var(zz_agent::catchup::CATCHUP_ENV, catchup(a.baseline));
    let args = &a;
    let result = with_kv_deployment("zz-recovery-", backend, a.keep, |info| async move {
        rounds(args, standby, &info).await
    })
    .await?;
    println!("| backend | standby | catch-up | state | incidents | fault → answer p50 | p99 | recovery_ms p50 | p99 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {}{} | {:?} | {} | {} MB | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
        result.backend,
        result.accel.as_deref().map(|a| format!(" ({a})")).unwrap_or_default(),
        result.standby,
        result.catchup,
        result.state_mb,
        result.incidents,
        result.fault_to_answer_p50_ms,
        result.fault_to_answer_p99_ms,
        result.recovery_p50_ms,
        result.recovery_p99_ms
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&result)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(result)
}

/// Starts a one-app (kv) deployment for a bench in a temp dir, runs `body`
/// on it until it ends, the deployment fails or the user interrupts, then
/// stops it, keeping the data dir with `keep`.
pub(crate) async fn with_kv_deployment<T, F, Fut>(
    prefix: &str,
    backend: Backend,
    keep: bool,
    body: F,
) -> anyhow::Result<T>
where
    F: FnOnce(Info) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let opts = GenerateOptions::local(1, &["kv"])?;
    let (dep, ids) = generate(&opts)?;
    let mut running = Running::start(LaunchOptions {
        // Benches wait for a current standby: refresh it whatever else runs.
        refresh_when_busy: true,
        ..LaunchOptions::local(dir.path(), dep, &ids, backend)?
    })
    .await?;
    let result = tokio::select! {
        r = body(running.info.clone()) => r,
        e = running.failed() => Err(e),
        e = crate::bench::interrupted() => Err(e),
    };
    running.stop().await;
    if keep {
        eprintln!("data kept in {}", dir.keep().display());
    }
    result
}

fn catchup(baseline: bool) -> &'static str {
    if baseline {
        "full"
    } else {
        "on-demand"
    }
}

/// The domain type of the replica VMs (from their domain XML), if any ran.
pub(crate) fn vm_accel(info: &Info) -> Option<String> {
    let vms = std::fs::read_dir(info.data_dir.join("libvirt").join("vms")).ok()?;
    vms.flatten().find_map(|d| {
        let xml = std::fs::read_to_string(d.path().join("domain.xml")).ok()?;
        let rest = xml.split_once("<domain type='")?.1;
        Some(rest.split_once('\'')?.0.to_string())
    })
}

/// Hibernated kv replicas with no instance kept.
fn cold_ones(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["app"] == "kv" && r["state"] == "hibernated" && r["cold"] == true)
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

/// Whether every active and paused kv replica holds the whole checkpoint:
/// until a woken replica's background sync is done, the replica fenced last
/// round may have held the only copy of some objects, so a second fault
/// would test more than f; and a standby paused half-synced would make the
/// next round measure a standby no running system keeps.
fn fully_synced(v: &Value) -> bool {
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["app"] == "kv" && (r["state"] == "active" || r["state"] == "paused"))
        .all(|r| r["stale_objects"].as_u64() == Some(0))
}

/// Whether the paused standby is at most `lag` seqs of checkpoints behind
/// the active replicas: the orchestrator refreshes a standby that fell
/// behind, so in a running system a paused standby is this current. The
/// actives' newest checkpoint is the last one below what they executed
/// (their stable one as reported may be a heartbeat late).
fn standby_current(v: &Value, lag: u64, interval: u64) -> bool {
    let of = |state: &str, field: &str| -> Vec<u64> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["app"] == "kv" && r["state"] == state)
            .filter_map(|r| r[field].as_u64())
            .collect()
    };
    let executed = of("active", "last_executed").into_iter().max().unwrap_or(0);
    let newest = executed / interval.max(1) * interval.max(1);
    of("paused", "last_checkpoint").into_iter().all(|c| c + lag >= newest)
}

/// Until kv has 2 fully synced active replicas and one standby of the tier.
/// A paused standby may be two checkpoints behind (each round's churn moves
/// one), or none with `current`: before the first round, so that it does
/// not measure a standby that slept through the whole state load (which
/// can fit in fewer seqs than two checkpoints).
pub(crate) async fn wait_steady(
    admin: &AdminClient,
    info: &Info,
    standby: Standby,
    current: bool,
) -> anyhow::Result<Value> {
    let lag = if current { 0 } else { 2 * info.dep.checkpoint_interval };
    if current {
        // Heartbeats (every 200 ms) must report what the load just did.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A replacement VM boots before the app is steady again.
    let deadline = Instant::now() + info.backend.ready_timeout().max(Duration::from_secs(120));
    loop {
        let r = admin.get("/v1/replicas").await?;
        let active = states(&r, "active");
        let paused = states(&r, "paused");
        let hibernated = states(&r, "hibernated");
        let cold = cold_ones(&r);
        if active.len() == 2 && fully_synced(&r) {
            match standby {
                Standby::Paused if paused.len() == 1 && standby_current(&r, lag, info.dep.checkpoint_interval) => {
                    return Ok(r)
                }
                Standby::Hibernated if hibernated.len() == 1 && cold.is_empty() => return Ok(r),
                Standby::Cold if cold.len() == 1 => return Ok(r),
                Standby::Hibernated | Standby::Cold if paused.len() == 1 => {
                    admin
                        .post(
                            &format!("/v1/replicas/{}/hibernate", paused[0]),
                            json!({"cold": standby == Standby::Cold}),
                        )
                        .await?;
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            admin.print_recent_events().await;
            anyhow::bail!("kv did not settle to 2 fully synced active replicas + 1 standby: {r}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Loads `state_mb` MB of kv state (1 KiB values, 512 PUTs at a time), then
/// runs one request per seq past a checkpoint interval: the loaded state
/// then lies below a stable checkpoint, as in a long-running system, and a
/// woken replica fetches state instead of replaying the loading log.
pub(crate) async fn load_state(client: &Client, app: AppId, state_mb: usize, interval: u64) -> anyhow::Result<()> {
    let objects = state_mb * 1024;
    let value = vec![b's'; 1024];
    let started = Instant::now();
    let mut next = 0usize;
    while next < objects {
        let mut batch = Vec::new();
        for i in next..(next + 512).min(objects) {
            let (c, v) = (client.clone(), value.clone());
            batch.push(tokio::spawn(async move {
                c.call(app, AppRequest::new("PUT", &format!("/kv/s{i}"), v)).await
            }));
        }
        next += batch.len();
        for b in batch {
            let r = b.await?.map_err(|e| anyhow::anyhow!("loading state: {e}"))?;
            anyhow::ensure!(r.status == 200, "loading state: status {}", r.status);
        }
    }
    eprintln!(
        "loaded {state_mb} MB ({objects} objects) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for i in 0..=interval {
        let r = client
            .call(app, AppRequest::new("GET", &format!("/kv/s{i}"), Vec::new()))
            .await
            .map_err(|e| anyhow::anyhow!("settling past a checkpoint: {e}"))?;
        anyhow::ensure!(r.status == 200 || r.status == 404, "settling: status {}", r.status);
    }
    Ok(())
}

async fn rounds(a: &RecoveryArgs, standby: Standby, info: &Info) -> anyhow::Result<RecoveryResult> {
    let admin = info.admin()?;
    let client = info.bench_client(Duration::from_secs(30))?;
    let app = info.dep.app_by_name("kv").context("kv app")?;
    wait_steady(&admin, info, standby, false).await?;
    let accel = vm_accel(info);

    load_state(&client, app, a.state_mb, info.dep.checkpoint_interval).await?;
    let objects = a.state_mb * 1024;
    let value = vec![b's'; 1024];

    let mut to_answer = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut to_read_back = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut recovery = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut to_detection = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    // A round whose incident was settled without waking anyone (a third
    // replica was still executing, e.g. a replacement that joined the last
    // incident) measures no wake-up: it is not counted, and another is run.
    let mut skipped = 0;
    let mut counted = 0;
    for round in 0.. {
        if counted == a.incidents {
            break;
        }
        anyhow::ensure!(
            skipped <= a.incidents,
            "{skipped} rounds settled without a wake: the standby is not what is measured"
        );
        wait_steady(&admin, info, standby, round == 0).await?;
        // The standby was paused a while ago: the system moved on past a
        // checkpoint since, overwriting objects the woken replica must then
        // fetch on demand (as in a long-running system, not a fresh one).
        let interval = usize::try_from(info.dep.checkpoint_interval).unwrap_or(128);
        for i in 0..=interval {
            let key = (round * 7919 + i * 104_729) % objects.max(1);
            let r = client
                .call(app, AppRequest::new("PUT", &format!("/kv/s{key}"), value.clone()))
                .await
                .map_err(|e| anyhow::anyhow!("round {round}: churn: {e}"))?;
            anyhow::ensure!(r.status == 200, "round {round}: churn: status {}", r.status);
        }
        let r = admin.get("/v1/replicas").await?;
        let victim = states(&r, "active").into_iter().next().context("an active replica")?;
        let before = admin.get("/v1/incidents").await?.as_array().map_or(0, Vec::len);
        let t0 = Instant::now();
        let t0_wall = crate::viewchange::wall_ms();
        admin
            .post("/v1/faults", json!({"target": victim, "kind": "corrupt-reply"}))
            .await?;
        // The next request after the fault: its certified answer must be right.
        let key = format!("/kv/r{round}");
        let want = format!("round {round}");
        let put = client
            .call(app, AppRequest::new("PUT", &key, want.clone().into_bytes()))
            .await;
        if !matches!(&put, Ok(p) if p.status == 200) {
            admin.print_recent_events().await;
            anyhow::bail!("round {round}: PUT {put:?}");
        }
        let put_at = t0.elapsed();
        let got = client.call(app, AppRequest::new("GET", &key, Vec::new())).await;
        anyhow::ensure!(
            matches!(&got, Ok(g) if g.body == want.as_bytes()),
            "round {round}: wrong answer {got:?}"
        );
        let read_back = t0.elapsed();
        // Wait for the incident to be recorded with its recovery time.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (ms, detected_at, woken) = loop {
            let inc = admin.get("/v1/incidents").await?;
            let fresh = inc
                .as_array()
                .map(|v| v[before.min(v.len())..].to_vec())
                .unwrap_or_default();
            if let Some(found) = fresh.iter().find_map(|i| {
                Some((
                    i["recovery_ms"].as_u64()?,
                    i["detected_at"].as_u64()?,
                    i["woken"].as_u64().is_some(),
                ))
            }) {
                break found;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "round {round}: no incident with a recovery time"
            );
            // Keep traffic flowing so the fault is seen and certified.
            let _ = client.call(app, AppRequest::new("GET", &key, Vec::new())).await;
        };
        let detect_ms = detected_at.saturating_sub(t0_wall);
        if !woken {
            skipped += 1;
            eprintln!("round {round}: settled in {ms} ms without waking a standby; not counted");
            continue;
        }
        counted += 1;
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        to_answer.record(us(put_at))?;
        to_read_back.record(us(read_back))?;
        recovery.record(ms.max(1) * 1000)?;
        to_detection.record(detect_ms.max(1) * 1000)?;
        eprintln!(
            "round {round}: {victim} corrupt-reply → certified answer in {:.1} ms (detected after {detect_ms} ms, \
             recovery_ms {ms}; read back after {:.1} ms)",
            put_at.as_secs_f64() * 1000.0,
            read_back.as_secs_f64() * 1000.0
        );
    }
    // The last replacement is done before the deployment stops.
    wait_steady(&admin, info, standby, false).await?;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(RecoveryResult {
        kind: "recovery",
        standby,
        baseline: a.baseline,
        catchup: catchup(a.baseline),
        backend: info.backend.name().to_string(),
        accel,
        state_mb: a.state_mb,
        incidents: a.incidents,
        fault_to_answer_p50_ms: ms(&to_answer, 0.5),
        fault_to_answer_p99_ms: ms(&to_answer, 0.99),
        fault_to_read_back_p50_ms: ms(&to_read_back, 0.5),
        fault_to_read_back_p99_ms: ms(&to_read_back, 0.99),
        recovery_p50_ms: ms(&recovery, 0.5),
        recovery_p99_ms: ms(&recovery, 0.99),
        fault_to_detection_p50_ms: ms(&to_detection, 0.5),
        fault_to_detection_p99_ms: ms(&to_detection, 0.99),
        skipped_rounds: skipped,
        machine: crate::bench::machine(),
    })
}

#[cfg(test)]
mod tests {
    use super::standby_current;
    use serde_json::json;

    fn replicas(active_executed: u64, active_checkpoint: u64, paused_checkpoint: u64) -> serde_json::Value {
        json!([
            {"app": "kv", "state": "active", "last_executed": active_executed, "last_checkpoint": active_checkpoint},
            {"app": "kv", "state": "active", "last_executed": active_executed - 1, "last_checkpoint": active_checkpoint},
            {"app": "kv", "state": "paused", "last_executed": paused_checkpoint, "last_checkpoint": paused_checkpoint},
        ])
    }

    #[test]
    fn a_standby_that_slept_through_the_load_is_not_current_even_before_the_actives_report_their_checkpoint() {
        // The actives executed past checkpoint 256 but their heartbeats
        // still report the stable checkpoint 0.
        assert!(!standby_current(&replicas(300, 0, 0), 0, 128));
        assert!(standby_current(&replicas(300, 0, 256), 0, 128));
        assert!(
            standby_current(&replicas(300, 256, 0), 256, 128),
            "within the lag allowed"
        );
        assert!(!standby_current(&replicas(600, 512, 128), 256, 128));
    }
}
