//! CI smoke run of `zz bench`: every bench mode runs for a few seconds on a
//! real local deployment and reports sane numbers (no speed thresholds:
//! the CI machine's speed is not what is tested), then `zz bench report`
//! turns those results into PNG plots and a markdown table.

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use zz_tests::{num, read_json};

/// A bench run starts a whole deployment; on a loaded 2-core machine that
/// plus a few measured seconds stays well under this.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Plot sizes, as `cli/src/plot.rs` draws them (`THROUGHPUT_SIZE`,
/// `RECOVERY_SIZE`).
const THROUGHPUT_SIZE: (u32, u32) = (1400, 640);
const RECOVERY_SIZE: (u32, u32) = (1000, 680);

/// Runs `zz ARGS` (killed whole on timeout); must succeed.
fn zz(args: &[&str], dir: &Path) -> String {
    let log = dir.join(format!("{}.log", args.join("_").replace(['/', ' '], "_")));
    zz_tests::zz_ok(args, &log, RUN_LIMIT)
}

fn check_throughput(v: &Value, mode: &str) {
    assert_eq!(v["mode"], mode, "{v}");
    assert!(num(v, "requests") > 0.0, "no request completed: {v}");
    assert_eq!(num(v, "errors"), 0.0, "{v}");
    assert!(num(v, "throughput_ops") > 0.0, "{v}");
    let (p50, p99, p999) = (num(v, "p50_ms"), num(v, "p99_ms"), num(v, "p999_ms"));
    assert!(p50 > 0.0 && p99 >= p50 && p999 >= p99, "percentiles out of order: {v}");
    let roles = v["roles"].as_array().expect("roles");
    assert!(!roles.is_empty(), "no role usage: {v}");
    for r in roles {
        assert!(num(r, "cpu_secs") >= 0.0 && num(r, "cpu_us_per_request") >= 0.0, "{r}");
        assert!(num(r, "rss_mib") > 0.0 && num(r, "processes") >= 1.0, "{r}");
    }
}

fn check_recovery(v: &Value, standby: &str) {
    assert_eq!(v["standby"], standby, "{v}");
    assert_eq!(num(v, "incidents"), 2.0, "{v}");
    for what in ["recovery", "fault_to_answer"] {
        let (p50, p99) = (num(v, &format!("{what}_p50_ms")), num(v, &format!("{what}_p99_ms")));
        assert!(p50 > 0.0 && p99 >= p50, "{what}: p50 {p50}, p99 {p99}: {v}");
    }
}

/// Decodes a PNG fully and returns its size, checking it is not blank.
fn png_size(p: &Path) -> (u32, u32) {
    let file = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..info.buffer_size()];
    assert!(
        pixels.iter().any(|&b| b < 128),
        "{} has no dark pixel: nothing drawn",
        p.display()
    );
    (info.width, info.height)
}

#[test]
fn every_bench_mode_reports_sane_numbers_and_the_report_plots_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |name: &str| d.join(name).to_string_lossy().into_owned();

    // The zz run also takes a timing override and, given two CPUs, keeps
    // execution on the last one.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let exec_cpu = (cpus - 1).to_string();
    for mode in ["zz", "full"] {
        let json = path(&format!("{mode}.json"));
        let load = ["--duration", "2", "--warmup", "1", "--clients", "8", "--seed", "7"];
        let mut args = vec!["bench", "--mode", mode, "--json", &json];
        args.extend(load);
        if mode == "zz" {
            args.extend(["--timing", "pipeline=4"]);
            if cpus >= 2 {
                args.extend(["--exec-cpus", &exec_cpu]);
            }
        }
        let printed = zz(&args, d);
        let v = read_json(Path::new(&json));
        check_throughput(&v, mode);
        if mode == "zz" && cpus >= 2 {
            assert_eq!(v["exec_cpus"], serde_json::json!([cpus - 1]), "{v}");
            assert!(printed.contains("pinned to CPU"), "{printed}");
        } else {
            assert!(v.get("exec_cpus").is_none(), "{v}");
        }
    }
    let bad = zz_tests::run_zz(
        &["bench", "--mode", "zz", "--timing", "pipelin=4"],
        &d.join("bad-timing.log"),
        RUN_LIMIT,
    );
    assert!(!bad.success && bad.output.contains("unknown key"), "{}", bad.output);
    for standby in ["paused", "hibernated"] {
        let json = path(&format!("recovery-{standby}.json"));
        let args = [
            "bench",
            "recovery",
            "--standby",
            standby,
            "--state-mb",
            "1",
            "--incidents",
            "2",
            "--json",
            &json,
        ];
        zz(&args, d);
        check_recovery(&read_json(Path::new(&json)), standby);
    }

    // A file that is no bench result must be skipped with a warning.
    std::fs::write(d.join("other.json"), r#"{"hello": "world"}"#).unwrap();
    let out = d.join("report");
    let printed = zz(
        &[
            "bench",
            "report",
            "--results",
            &path(""),
            "--out",
            &out.to_string_lossy(),
        ],
        d,
    );
    assert!(printed.contains("skipping other.json"), "{printed}");
    assert_eq!(png_size(&out.join("throughput-latency.png")), THROUGHPUT_SIZE);
    assert_eq!(png_size(&out.join("recovery.png")), RECOVERY_SIZE);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    println!("{md}");
    for f in [
        "zz.json",
        "full.json",
        "recovery-paused.json",
        "recovery-hibernated.json",
    ] {
        let rows = md.lines().filter(|l| l.starts_with(&format!("| {f} |"))).count();
        assert_eq!(rows, 1, "expected one row for {f} in results.md:\n{md}");
    }
    assert!(!md.contains("other.json"), "{md}");
    if cpus >= 2 {
        assert!(md.contains(&format!("| zz (execution on CPU {}) |", cpus - 1)), "{md}");
    }
    assert!(md.contains("Measured on: "), "{md}");
}

/// `--workload wasm-kv` deploys `examples/kv` into a Wasm slot at run time
/// and loads it like kv: same sanity checks, and the deploy is reported.
#[test]
fn the_wasm_workload_deploys_its_component_and_reports_sane_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let json = d.join("wasm-kv.json").to_string_lossy().into_owned();
    let args = [
        "bench",
        "--mode",
        "zz",
        "--workload",
        "wasm-kv",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--clients",
        "8",
        "--seed",
        "7",
        "--json",
        &json,
    ];
    let printed = zz(&args, d);
    assert!(
        printed.contains("deployed examples/kv as wasm-kv (version 1)"),
        "{printed}"
    );
    let v = read_json(Path::new(&json));
    check_throughput(&v, "zz");
    assert_eq!(v["workload"], "wasm-kv", "{v}");
    let unreplicated = zz_tests::run_zz(
        &["bench", "--mode", "unreplicated", "--workload", "wasm-kv"],
        &d.join("unreplicated.log"),
        RUN_LIMIT,
    );
    assert!(
        !unreplicated.success && unreplicated.output.contains("use --mode zz or full"),
        "{}",
        unreplicated.output
    );
}
