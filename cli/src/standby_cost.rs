//! `zz bench standby-cost`: what one standby of a tier costs its host, next
//! to what an active replica costs, on a real deployment with kv state
//! loaded. Per replica: resident memory of its process (the agent, or the
//! VM's qemu) and its CPU while the system idles; for a hibernated VM the
//! managed save image on disk; and how long a standby takes to be ready
//! again: a paused standby's refresh (resume → caught up → paused), a
//! hibernated one's save. From those, the memory one app takes with f+1
//! active and f standby replicas against 2f+1 active ones.

use crate::launch::{BackendArgs, Info};
use crate::procstat;
use crate::recovery::{load_state, states, vm_accel, wait_steady, with_kv_deployment, Standby};
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zz_wire::AppRequest;

#[derive(Args, Debug, Clone)]
pub struct StandbyCostArgs {
    /// The standby tier measured.
    #[arg(long, value_enum, default_value = "paused")]
    pub standby: Standby,
    /// kv state loaded first, in MB (1 KiB values).
    #[arg(long, default_value_t = 10)]
    pub state_mb: usize,
    /// Seconds over which each replica's CPU is measured while nothing runs.
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
    /// How many refreshes of a paused standby are timed (a hibernated or
    /// cold standby's save is timed once).
    #[arg(long, default_value_t = 3)]
    pub refreshes: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Keep the run's data dir (logs, stores) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Serialize)]
pub struct StandbyCostResult {
    /// Always `standby-cost`.
    pub kind: &'static str,
    pub standby: Standby,
    pub backend: String,
    /// The libvirt domain type used (`kvm` or `qemu`), if VMs ran.
    pub accel: Option<String>,
    pub state_mb: usize,
    /// Resident memory of an active replica's process (mean over f+1).
    pub active_rss_mib: f64,
    /// CPU of an active replica while the system idles, % of one core.
    pub active_idle_cpu_pct: f64,
    /// Resident memory of the standby's process (0: no process).
    pub standby_rss_mib: f64,
    pub standby_idle_cpu_pct: f64,
    /// Disk the standby keeps on the host: a VM's managed save image.
    pub standby_disk_mib: f64,
    /// What "ready again" times for this tier.
    pub ready_again: &'static str,
    /// Each time the standby took to be ready again, ms.
    pub ready_again_ms: Vec<u64>,
    /// One app's resident memory with f+1 active and f standby replicas ...
    pub app_rss_mib_zz: f64,
    /// ... and with 2f+1 active ones.
    pub app_rss_mib_all_active: f64,
    pub machine: String,
}

pub async fn standby_cost(a: StandbyCostArgs) -> anyhow::Result<StandbyCostResult> {
    anyhow::ensure!(a.idle_secs >= 1, "--idle-secs must be at least 1");
    let backend = a.backend.resolve()?;
    std::env::set_var(zz_agent::catchup::CATCHUP_ENV, "on-demand");
    let args = &a;
    let r = with_kv_deployment("zz-standby-cost-", backend, a.keep, |info| async move {
        measure(args, &info).await
    })
    .await?;
    println!("| backend | standby | state | active RSS | active idle CPU | standby RSS | standby idle CPU | standby disk | ready again ({}) | app f+1+f / 2f+1 |", r.ready_again);
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {}{} | {:?} | {} MB | {:.1} MiB | {:.2}% | {:.1} MiB | {:.2}% | {:.1} MiB | {:?} ms | {:.1} / {:.1} MiB |",
        r.backend,
        r.accel.as_deref().map(|a| format!(" ({a})")).unwrap_or_default(),
        r.standby,
        r.state_mb,
        r.active_rss_mib,
        r.active_idle_cpu_pct,
        r.standby_rss_mib,
        r.standby_idle_cpu_pct,
        r.standby_disk_mib,
        r.ready_again_ms,
        r.app_rss_mib_zz,
        r.app_rss_mib_all_active
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&r)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(r)
}

async fn measure(a: &StandbyCostArgs, info: &Info) -> anyhow::Result<StandbyCostResult> {
    let admin = info.admin()?;
    let client = info.bench_client(Duration::from_secs(30))?;
    let app = info.dep.app_by_name("kv").context("kv app")?;
    let interval = info.dep.checkpoint_interval;
    // Loaded while the standby is paused, as in any tier: a hibernated or
    // cold one is made from a paused one once the load is done.
    wait_steady(&admin, info, Standby::Paused, false).await?;
    load_state(&client, app, a.state_mb, interval).await?;
    let mut ready_again_ms = Vec::new();
    let r = wait_steady(&admin, info, Standby::Paused, true).await?;
    if a.standby == Standby::Paused {
        for round in 0..a.refreshes {
            ready_again_ms.push(time_refresh(&admin, info, &client, app, round).await?);
        }
    } else {
        // Saves a standby that has just caught up, as a refresh of this
        // tier would (restore, catch up, save): timed once.
        let paused = states(&r, "paused");
        let id = paused.first().context("a paused standby")?;
        let t0 = Instant::now();
        admin
            .post(
                &format!("/v1/replicas/{id}/hibernate"),
                json!({"cold": a.standby == Standby::Cold}),
            )
            .await?;
        wait_steady(&admin, info, a.standby, false).await?;
        ready_again_ms.push(ms(t0.elapsed()));
    }
    let r = wait_steady(&admin, info, a.standby, false).await?;
    let accel = vm_accel(info);
    // Idle: heartbeats and the agents' ticks only.
    let active: Vec<String> = states(&r, "active");
    let standby = match a.standby {
        Standby::Paused => states(&r, "paused"),
        Standby::Hibernated | Standby::Cold => states(&r, "hibernated"),
    };
    let pids = |ids: &[String]| -> Vec<u32> { ids.iter().filter_map(|id| replica_pid(info, id)).collect() };
    let (active_pids, standby_pids) = (pids(&active), pids(&standby));
    anyhow::ensure!(
        active_pids.len() == active.len(),
        "found the processes of {} of {} active replicas",
        active_pids.len(),
        active.len()
    );
    let all: Vec<u32> = active_pids.iter().chain(&standby_pids).copied().collect();
    let cpu0: Vec<f64> = all.iter().map(|p| procstat::cpu_secs(*p)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let secs = t0.elapsed().as_secs_f64();
    let pct: Vec<f64> = all
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| (procstat::cpu_secs(*p) - c0).max(0.0) / secs * 100.0)
        .collect();
    let (active_pct, standby_pct) = pct.split_at(active_pids.len());
    let rss = |p: &[u32]| -> Vec<f64> { p.iter().map(|p| procstat::rss_mib(*p)).collect() };
    let active_rss = mean(&rss(&active_pids));
    let standby_rss = total(&rss(&standby_pids));
    let standby_disk = total(&standby.iter().map(|id| save_image_mib(info, id)).collect::<Vec<_>>());
    let f = info.dep.f as f64;
    eprintln!("replicas: active {active:?} pids {active_pids:?}, standby {standby:?} pids {standby_pids:?}");
    Ok(StandbyCostResult {
        kind: "standby-cost",
        standby: a.standby,
        backend: info.backend.name().to_string(),
        accel,
        state_mb: a.state_mb,
        active_rss_mib: active_rss,
        active_idle_cpu_pct: mean(active_pct),
        standby_rss_mib: standby_rss,
        standby_idle_cpu_pct: total(standby_pct),
        standby_disk_mib: standby_disk,
        ready_again: match a.standby {
            Standby::Paused => "refresh: resume, catch up, pause",
            Standby::Hibernated => "save a caught-up standby",
            Standby::Cold => "drop a caught-up standby",
        },
        ready_again_ms,
        // standby_rss is already the sum over the f standbys.
        app_rss_mib_zz: (f + 1.0) * active_rss + standby_rss,
        app_rss_mib_all_active: (2.0 * f + 1.0) * active_rss,
        machine: crate::bench::machine(),
    })
}

/// Puts the paused standby a checkpoint behind and times the orchestrator's
/// refresh of it: its `refresh` event to its next `paused` one.
async fn time_refresh(
    admin: &crate::admin::AdminClient,
    info: &Info,
    client: &zz_agreement::client::Client,
    app: zz_wire::AppId,
    round: usize,
) -> anyhow::Result<u64> {
    let since = last_event_seq(admin).await?;
    for i in 0..=info.dep.checkpoint_interval {
        let r = client
            .call(
                app,
                AppRequest::new("PUT", &format!("/kv/refresh{round}-{i}"), vec![b'r'; 1024]),
            )
            .await
            .map_err(|e| anyhow::anyhow!("refresh {round}: load: {e}"))?;
        anyhow::ensure!(r.status == 200, "refresh {round}: load: status {}", r.status);
    }
    // The orchestrator refreshes a standby paused 10 s and a checkpoint behind.
    let deadline = Instant::now() + Duration::from_secs(120) + info.backend.ready_timeout();
    let mut started: Option<(String, u64)> = None;
    let mut seen = since;
    loop {
        let events = admin.get(&format!("/v1/events?since={seen}")).await?;
        for e in events.as_array().into_iter().flatten() {
            seen = seen.max(e["seq"].as_u64().unwrap_or(0));
            let (Some(kind), Some(replica), Some(at)) =
                (e["kind"].as_str(), e["replica"].as_str(), e["at_ms"].as_u64())
            else {
                continue;
            };
            match &started {
                None if kind == "refresh" => started = Some((replica.to_string(), at)),
                Some((r, t)) if r == replica && kind == "paused" => {
                    let took = at.saturating_sub(*t);
                    eprintln!("refresh {round}: {replica} ready again after {took} ms");
                    return Ok(took);
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            admin.print_recent_events().await;
            anyhow::bail!("refresh {round}: the standby was not refreshed and paused again");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn last_event_seq(admin: &crate::admin::AdminClient) -> anyhow::Result<u64> {
    let events = admin.get("/v1/events").await?;
    Ok(events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        total(v) / v.len() as f64
    }
}

/// The sum, 0.0 for none (`Sum` for floats starts from -0.0).
fn total(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |a, b| a + b)
}

/// The host process running replica `id`: its agent (process backend) or
/// the qemu of its newest domain (libvirt), found by command line.
fn replica_pid(info: &Info, id: &str) -> Option<u32> {
    let data_dir = info.data_dir.display().to_string();
    let domains = domains_of(info, id);
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if runs_replica(&args, id, &data_dir, &domains) {
            found = Some(pid);
        }
    }
    found
}

/// Whether a command line is replica `id`'s agent under `data_dir` or the
/// qemu of one of `domains`.
fn runs_replica(args: &[String], id: &str, data_dir: &str, domains: &[String]) -> bool {
    let agent = args.windows(2).any(|w| w[0] == "--replica" && w[1] == id) && args.iter().any(|a| a.contains(data_dir));
    let vm = args.iter().any(|a| {
        domains.iter().any(|d| {
            a.strip_prefix("guest=")
                .is_some_and(|g| g == d || g.starts_with(&format!("{d},")))
        })
    });
    agent || vm
}

/// The generation of domain `name` if it is replica `id`'s
/// (`zz-<tag>-<replica>-g<generation>`).
fn generation_of(name: &str, id: &str) -> Option<u64> {
    let (replica, generation) = name.rsplit_once("-g")?;
    let generation = generation.parse().ok()?;
    replica.ends_with(&format!("-{id}")).then_some(generation)
}

/// This deployment's domains of replica `id`, newest generation first.
fn domains_of(info: &Info, id: &str) -> Vec<String> {
    let Ok(dirs) = std::fs::read_dir(info.data_dir.join("libvirt").join("vms")) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, String)> = dirs
        .flatten()
        .filter_map(|d| {
            let name = d.file_name().to_str()?.to_string();
            Some((generation_of(&name, id)?, name))
        })
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    found.into_iter().map(|(_, n)| n).collect()
}

/// A hibernated VM's managed save image (qemu:///system keeps them here).
fn save_image_mib(info: &Info, id: &str) -> f64 {
    domains_of(info, id)
        .iter()
        .filter_map(|d| std::fs::metadata(Path::new("/var/lib/libvirt/qemu/save").join(format!("{d}.save"))).ok())
        .map(|m| m.len() as f64 / (1 << 20) as f64)
        .fold(0.0, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn a_domain_is_matched_to_its_replica_and_generation() {
        assert_eq!(generation_of("zz-1a2b3c4d-kv-e1-g3", "kv-e1"), Some(3));
        assert_eq!(generation_of("zz-1a2b3c4d-kv-e1-g3", "kv-e0"), None);
        assert_eq!(generation_of("zz-1a2b3c4d-xkv-e1-g3", "kv-e1"), None);
        assert_eq!(generation_of("zz-1a2b3c4d-kv-e1-gx", "kv-e1"), None);
    }

    #[test]
    fn an_agent_or_a_qemu_is_found_by_its_command_line() {
        let dir = "/tmp/zz-standby-cost-x";
        let agent = args("zz-agent --deployment /tmp/zz-standby-cost-x/deployment.toml --replica kv-e1");
        assert!(runs_replica(&agent, "kv-e1", dir, &[]));
        assert!(!runs_replica(&agent, "kv-e0", dir, &[]));
        assert!(!runs_replica(&agent, "kv-e1", "/tmp/other", &[]));
        let qemu = args("qemu-system-x86_64 -name guest=zz-ab-kv-e1-g2,debug-threads=on -m 256");
        let doms = ["zz-ab-kv-e1-g2".to_string()];
        assert!(runs_replica(&qemu, "kv-e1", dir, &doms));
        assert!(!runs_replica(&qemu, "kv-e1", dir, &["zz-ab-kv-e1-g1".to_string()]));
    }

    #[test]
    fn no_values_total_zero_not_minus_zero() {
        assert!(total(&[]).is_sign_positive());
        assert_eq!(mean(&[1.0, 3.0]), 2.0);
    }
}
