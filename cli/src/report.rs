//! `zz bench report`: reads every result JSON in a directory and writes the
//! plots (`throughput-latency.png`, `recovery.png`) and `results.md`.
//!
//! Files are recognised by their fields, not by `kind`, because results
//! written before `kind` existed must still be read. A file that is none of
//! the known shapes is skipped with a warning, never fatal: the directory is
//! shared with whatever else a bench run leaves there.

use crate::plot;
use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Directory of result JSON files (`zz bench ... --json`).
    #[arg(long, default_value = "bench-results")]
    pub results: PathBuf,
    /// Where the plots and results.md go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}

/// The per-role figures the table sums; the role names are not needed.
#[derive(Debug, Clone, Deserialize)]
pub struct RoleRow {
    #[serde(default)]
    pub cpu_us_per_request: f64,
    #[serde(default)]
    pub rss_mib: f64,
}

/// A `zz bench` run (closed or open loop). Modes and workloads are kept as
/// strings so a mode added later still reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ThroughputRun {
    #[serde(skip)]
    pub file: String,
    pub mode: String,
    #[serde(default = "default_via")]
    pub via: String,
    #[serde(default = "default_workload")]
    pub workload: String,
    pub f: usize,
    #[serde(default = "one")]
    pub apps: usize,
    pub clients: usize,
    #[serde(default)]
    pub rate: Option<u64>,
    pub throughput_ops: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    #[serde(default)]
    pub p999_ms: Option<f64>,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub roles: Vec<RoleRow>,
    #[serde(default)]
    pub machine: Option<String>,
    /// `zz bench --exec-cpus`: the CPUs the execution processes were pinned
    /// to (everything else on the others); absent when all shared the machine.
    #[serde(default)]
    pub exec_cpus: Option<Vec<usize>>,
}

impl ThroughputRun {
    /// The mode, and where execution ran when it was kept apart.
    pub fn mode_label(&self) -> String {
        match &self.exec_cpus {
            Some(cpus) => format!(
                "{} (execution on CPU {})",
                self.mode,
                cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
            ),
            None => self.mode.clone(),
        }
    }
}

/// A `zz bench recovery` run.
#[derive(Debug, Clone, Deserialize)]
pub struct RecoveryRun {
    #[serde(skip)]
    pub file: String,
    pub standby: String,
    #[serde(default = "default_backend")]
    pub backend: String,
    #[serde(default)]
    pub accel: Option<String>,
    pub state_mb: f64,
    #[serde(default)]
    pub incidents: Option<usize>,
    /// Absent in files written before the full-transfer baseline existed.
    #[serde(default)]
    pub baseline: bool,
    #[serde(default)]
    pub fault_to_answer_p50_ms: Option<f64>,
    pub fault_to_answer_p99_ms: f64,
    pub recovery_p50_ms: f64,
    #[serde(default)]
    pub recovery_p99_ms: Option<f64>,
    #[serde(default)]
    pub machine: Option<String>,
}

/// A `zz bench view-change` run. Only the percentiles are required; the
/// rest is shown when present.
#[derive(Debug, Clone, Deserialize)]
pub struct ViewChangeRun {
    #[serde(skip)]
    pub file: String,
    #[serde(default)]
    pub f: Option<usize>,
    #[serde(default)]
    pub rounds: Option<usize>,
    #[serde(default)]
    pub backend: Option<String>,
    /// Crash → first answer certified in the new view (`zz bench view-change`
    /// writes it as `crash_to_answer_p50_ms`).
    #[serde(alias = "crash_to_answer_p50_ms")]
    pub p50_ms: f64,
    #[serde(alias = "crash_to_answer_p99_ms")]
    pub p99_ms: f64,
    #[serde(default)]
    pub machine: Option<String>,
}

fn default_via() -> String {
    "client".into()
}
fn default_workload() -> String {
    "kv-put".into()
}
fn default_backend() -> String {
    "process".into()
}
fn one() -> usize {
    1
}

#[derive(Debug, Clone)]
pub enum Record {
    Throughput(ThroughputRun),
    Recovery(RecoveryRun),
    ViewChange(ViewChangeRun),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a bench result (no throughput_ops, recovery_p50_ms or kind \"view-change\")")]
    Unknown,
    #[error("looks like a {kind} result but does not parse: {source}")]
    Shape {
        kind: &'static str,
        source: serde_json::Error,
    },
}

/// Which result a JSON value is, by its fields (see the module comment).
pub fn classify(file: &str, v: Value) -> Result<Record, RecordError> {
    let shape = |kind| move |source| RecordError::Shape { kind, source };
    if v.get("kind").and_then(Value::as_str) == Some("view-change") {
        let mut r: ViewChangeRun = serde_json::from_value(v).map_err(shape("view-change"))?;
        r.file = file.into();
        Ok(Record::ViewChange(r))
    } else if v.get("throughput_ops").is_some() {
        let mut r: ThroughputRun = serde_json::from_value(v).map_err(shape("throughput"))?;
        r.file = file.into();
        Ok(Record::Throughput(r))
    } else if v.get("recovery_p50_ms").is_some() {
        let mut r: RecoveryRun = serde_json::from_value(v).map_err(shape("recovery"))?;
        r.file = file.into();
        Ok(Record::Recovery(r))
    } else {
        Err(RecordError::Unknown)
    }
}

#[derive(Debug, Default)]
pub struct Results {
    pub throughput: Vec<ThroughputRun>,
    pub recovery: Vec<RecoveryRun>,
    pub view_change: Vec<ViewChangeRun>,
    /// Files skipped, with why.
    pub skipped: Vec<(String, String)>,
}

impl Results {
    pub fn add(&mut self, file: &str, v: Value) {
        match classify(file, v) {
            Ok(Record::Throughput(r)) => self.throughput.push(r),
            Ok(Record::Recovery(r)) => self.recovery.push(r),
            Ok(Record::ViewChange(r)) => self.view_change.push(r),
            Err(e) => self.skipped.push((file.into(), e.to_string())),
        }
    }

    /// Every `*.json` in `dir`, in file-name order so the output is stable.
    pub fn load(dir: &Path) -> anyhow::Result<Results> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        files.sort();
        let mut out = Results::default();
        for p in files {
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let parsed = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| format!("not JSON: {e}")));
            match parsed {
                Ok(v) => out.add(&name, v),
                Err(e) => out.skipped.push((name, e)),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Tables read best grouped: by mode, then size, then load.
    fn sort(&mut self) {
        self.throughput
            .sort_by(|a, b| throughput_key(a).cmp(&throughput_key(b)));
        self.recovery.sort_by(|a, b| {
            (&a.backend, a.baseline, standby_rank(&a.standby), &a.standby)
                .cmp(&(&b.backend, b.baseline, standby_rank(&b.standby), &b.standby))
                .then(a.state_mb.total_cmp(&b.state_mb))
        });
        self.view_change
            .sort_by(|a, b| (a.f, &a.backend, &a.file).cmp(&(b.f, &b.backend, &b.file)));
    }
}

type ThroughputKey<'a> = (
    u8,
    &'a str,
    Option<&'a [usize]>,
    usize,
    usize,
    &'a str,
    &'a str,
    Option<u64>,
    usize,
);

fn throughput_key(t: &ThroughputRun) -> ThroughputKey<'_> {
    let m = t.mode.as_str();
    let exec = t.exec_cpus.as_deref();
    (
        mode_rank(m),
        m,
        exec,
        t.f,
        t.apps,
        &t.via,
        &t.workload,
        t.rate,
        t.clients,
    )
}

/// Baseline first, then cheaper to more expensive replication.
pub fn mode_rank(m: &str) -> u8 {
    match m {
        "unreplicated" => 0,
        "zz" => 1,
        "full" => 2,
        _ => 3,
    }
}

pub fn standby_rank(s: &str) -> u8 {
    match s {
        "paused" => 0,
        "hibernated" => 1,
        "cold" => 2,
        _ => 3,
    }
}

/// The distinct machine strings, for the "measured on" line.
fn machines<'a>(it: impl Iterator<Item = &'a Option<String>>) -> String {
    let set: BTreeSet<&str> = it.map(|m| m.as_deref().unwrap_or("unknown machine")).collect();
    set.into_iter().collect::<Vec<_>>().join("; ")
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

/// `results.md`: one table per kind of run, each with the machine(s) it was
/// measured on, and one row per result file.
pub fn markdown(r: &Results) -> String {
    let mut s = String::from("# Benchmark results\n\nWritten by `zz bench report`; one row per result file.\n");
    if !r.throughput.is_empty() {
        let _ = write!(
            s,
            "\n## Throughput and latency\n\nMeasured on: {}\n\n\
             | file | mode | via | workload | f | apps | clients | ops/s | p50 ms | p99 ms | p99.9 ms | errors | CPU µs/request | RSS MiB |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            machines(r.throughput.iter().map(|t| &t.machine))
        );
        for t in &r.throughput {
            let cpu: f64 = t.roles.iter().map(|x| x.cpu_us_per_request).sum();
            let rss: f64 = t.roles.iter().map(|x| x.rss_mib).sum();
            let load = t.rate.map_or_else(|| t.clients.to_string(), |r| format!("{r}/s open"));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {load} | {:.0} | {:.2} | {:.2} | {} | {} | {cpu:.1} | {rss:.0} |",
                t.file,
                t.mode_label(),
                t.via,
                t.workload,
                t.f,
                t.apps,
                t.throughput_ops,
                t.p50_ms,
                t.p99_ms,
                t.p999_ms.map_or_else(|| "–".into(), |v| format!("{v:.2}")),
                t.errors,
            );
        }
    }
    if !r.recovery.is_empty() {
        let _ = write!(
            s,
            "\n## Recovery\n\nFault → first certified correct answer at the client, and the orchestrator's \
             detection → first certified reply. Measured on: {}\n\n\
             | file | standby | transfer | backend | state MB | incidents | fault→answer p50 ms | fault→answer p99 ms | recovery p50 ms | recovery p99 ms |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
            machines(r.recovery.iter().map(|t| &t.machine))
        );
        for t in &r.recovery {
            let backend = t
                .accel
                .as_ref()
                .map_or_else(|| t.backend.clone(), |a| format!("{} ({a})", t.backend));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {backend} | {} | {} | {} | {:.1} | {:.1} | {} |",
                t.file,
                t.standby,
                if t.baseline { "full (baseline)" } else { "incremental" },
                t.state_mb,
                t.incidents.map_or_else(|| "–".into(), |n| n.to_string()),
                opt(t.fault_to_answer_p50_ms),
                t.fault_to_answer_p99_ms,
                t.recovery_p50_ms,
                opt(t.recovery_p99_ms),
            );
        }
    }
    if !r.view_change.is_empty() {
        let _ = write!(
            s,
            "\n## View change\n\nMeasured on: {}\n\n| file | f | backend | rounds | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n",
            machines(r.view_change.iter().map(|t| &t.machine))
        );
        for t in &r.view_change {
            let show = |v: Option<usize>| v.map_or_else(|| "–".into(), |n| n.to_string());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {:.1} |",
                t.file,
                show(t.f),
                t.backend.as_deref().unwrap_or("–"),
                show(t.rounds),
                t.p50_ms,
                t.p99_ms
            );
        }
    }
    s
}

pub fn report(a: &ReportArgs) -> anyhow::Result<()> {
    let r = Results::load(&a.results)?;
    for (file, why) in &r.skipped {
        eprintln!("warning: skipping {file}: {why}");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let md = a.out.join("results.md");
    std::fs::write(&md, markdown(&r)).with_context(|| format!("writing {}", md.display()))?;
    println!(
        "{}: {} throughput, {} recovery, {} view-change runs",
        md.display(),
        r.throughput.len(),
        r.recovery.len(),
        r.view_change.len()
    );
    // A plot with no series would be an empty frame; say so instead.
    if r.throughput.is_empty() {
        println!("no throughput runs: throughput-latency.png not written");
    } else {
        let p = a.out.join("throughput-latency.png");
        plot::throughput_latency(&r.throughput, &p)?;
        println!("{}", p.display());
    }
    if r.recovery.is_empty() {
        println!("no recovery runs: recovery.png not written");
    } else {
        let p = a.out.join("recovery.png");
        plot::recovery(&r.recovery, &p)?;
        println!("{}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn throughput(mode: &str, clients: usize, ops: f64, p50: f64) -> Value {
        // The shape `zz bench` wrote before `kind` existed.
        json!({
            "mode": mode, "via": "client", "workload": "kv-put", "f": 1, "apps": 1,
            "clients": clients, "rate": null, "value_size": 64, "duration_secs": 8.0,
            "requests": 1000, "errors": 0, "throughput_ops": ops, "p50_ms": p50,
            "p99_ms": p50 * 3.0, "p999_ms": p50 * 5.0, "max_ms": p50 * 6.0,
            "roles": [{"role": "agreement nodes", "cpu_secs": 1.0, "cpu_us_per_request": 20.0,
                       "rss_mib": 100.0, "processes": 4},
                      {"role": "execution replicas", "cpu_secs": 1.0, "cpu_us_per_request": 5.5,
                       "rss_mib": 50.0, "processes": 2}],
            "seed": 1, "machine": "2 cores, Test CPU"
        })
    }

    fn recovery(standby: &str, mb: u64, p99: f64, baseline: Option<bool>) -> Value {
        let mut v = json!({
            "standby": standby, "backend": "process", "accel": null, "state_mb": mb,
            "incidents": 20, "fault_to_answer_p50_ms": p99 / 2.0, "fault_to_answer_p99_ms": p99,
            "recovery_p50_ms": p99 / 3.0, "recovery_p99_ms": p99 / 1.5, "machine": "2 cores, Test CPU"
        });
        if let Some(b) = baseline {
            v["kind"] = json!("recovery");
            v["baseline"] = json!(b);
        }
        v
    }

    #[test]
    fn classify_by_fields_and_tolerate_missing_optionals() {
        assert!(matches!(
            classify("a", throughput("zz", 64, 1.0, 1.0)),
            Ok(Record::Throughput(_))
        ));
        match classify("b", recovery("paused", 10, 50.0, None)) {
            Ok(Record::Recovery(r)) => assert!(!r.baseline, "absent baseline reads as false"),
            other => panic!("{other:?}"),
        }
        match classify("c", recovery("cold", 10, 50.0, Some(true))) {
            Ok(Record::Recovery(r)) => assert!(r.baseline),
            other => panic!("{other:?}"),
        }
        let vc = json!({"kind": "view-change", "rounds": 20, "p50_ms": 120.0, "p99_ms": 300.0});
        match classify("d", vc) {
            Ok(Record::ViewChange(r)) => assert_eq!((r.rounds, r.f, r.p99_ms), (Some(20), None, 300.0)),
            other => panic!("{other:?}"),
        }
        // What `zz bench view-change --json` writes.
        let vc = json!({"kind": "view-change", "f": 1, "rounds": 40, "crash_to_answer_p50_ms": 378.6,
                        "crash_to_answer_p99_ms": 419.6, "per_round": []});
        match classify("d2", vc) {
            Ok(Record::ViewChange(r)) => assert_eq!((r.p50_ms, r.p99_ms), (378.6, 419.6)),
            other => panic!("{other:?}"),
        }
        // A minimal throughput file: every optional field absent.
        let min = json!({"mode": "unreplicated", "f": 0, "clients": 8, "throughput_ops": 5.0,
                         "p50_ms": 1.0, "p99_ms": 2.0});
        match classify("e", min) {
            Ok(Record::Throughput(r)) => {
                assert_eq!((r.via.as_str(), r.apps, r.errors, r.roles.len()), ("client", 1, 0, 0))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify("f", json!({"hello": 1})), Err(RecordError::Unknown)));
        let broken = json!({"throughput_ops": 5.0, "mode": "zz"});
        assert!(matches!(
            classify("g", broken),
            Err(RecordError::Shape { kind: "throughput", .. })
        ));
    }

    #[test]
    fn markdown_has_a_row_per_run_and_the_machine() {
        let mut r = Results::default();
        r.add("zz-c64.json", throughput("zz", 64, 6000.0, 8.0));
        r.add("full-c64.json", throughput("full", 64, 5000.0, 9.0));
        r.add("rec.json", recovery("hibernated", 100, 900.0, Some(false)));
        r.add(
            "vc.json",
            json!({"kind": "view-change", "f": 1, "p50_ms": 120.0, "p99_ms": 300.0}),
        );
        r.add("junk.json", json!([1, 2, 3]));
        r.sort();
        assert_eq!(r.skipped.len(), 1);
        let md = markdown(&r);
        for f in ["zz-c64.json", "full-c64.json", "rec.json", "vc.json"] {
            assert_eq!(
                md.lines().filter(|l| l.starts_with(&format!("| {f} |"))).count(),
                1,
                "{f}\n{md}"
            );
        }
        assert!(!md.contains("junk.json"));
        assert_eq!(md.matches("Measured on: 2 cores, Test CPU").count(), 2, "{md}");
        assert!(md.contains("Measured on: unknown machine"), "{md}");
        // Row content: total CPU per request over the roles and the load.
        assert!(
            md.contains(
                "| zz-c64.json | zz | client | kv-put | 1 | 1 | 64 | 6000 | 8.00 | 24.00 | 40.00 | 0 | 25.5 | 150 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| rec.json | hibernated | incremental | process | 100 | 20 | 450.0 | 900.0 | 300.0 | 600.0 |"),
            "{md}"
        );
    }

    /// Width and height from a PNG's IHDR chunk, after checking the signature.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    #[test]
    fn report_writes_plots_and_table_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, v: Value| std::fs::write(dir.path().join(name), v.to_string()).unwrap();
        for (i, c) in [16usize, 64, 256].iter().enumerate() {
            let ops = 5000.0 * (i + 1) as f64;
            write(&format!("zz-c{c}.json"), throughput("zz", *c, ops, 5.0 + i as f64));
            write(
                &format!("full-c{c}.json"),
                throughput("full", *c, ops * 0.9, 6.0 + i as f64),
            );
        }
        for (mb, p99) in [(10, 400.0), (100, 900.0), (1000, 4000.0)] {
            write(&format!("rec-paused-{mb}.json"), recovery("paused", mb, p99, None));
            write(
                &format!("rec-cold-{mb}.json"),
                recovery("cold", mb, p99 * 4.0, Some(false)),
            );
            write(
                &format!("rec-base-{mb}.json"),
                recovery("paused", mb, p99 * 2.0, Some(true)),
            );
        }
        std::fs::write(dir.path().join("notes.json"), "not json").unwrap();
        std::fs::write(dir.path().join("README.txt"), "ignored").unwrap();
        let out = dir.path().join("out");
        report(&ReportArgs {
            results: dir.path().to_path_buf(),
            out: out.clone(),
        })
        .unwrap();
        let tl = std::fs::read(out.join("throughput-latency.png")).unwrap();
        assert_eq!(png_size(&tl), plot::THROUGHPUT_SIZE);
        let rec = std::fs::read(out.join("recovery.png")).unwrap();
        assert_eq!(png_size(&rec), plot::RECOVERY_SIZE);
        let md = std::fs::read_to_string(out.join("results.md")).unwrap();
        assert_eq!(
            md.lines()
                .filter(|l| l.starts_with("| zz-c") || l.starts_with("| full-c"))
                .count(),
            6
        );
        assert_eq!(md.lines().filter(|l| l.starts_with("| rec-")).count(), 9);
        assert!(!md.contains("## View change"));
    }
}
