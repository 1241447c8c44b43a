//! CI smoke run of `zz bench recovery` with a cold standby, on demand and
//! as the full-transfer baseline (no speed thresholds). The baseline's agents
//! must really run in full mode: their logs say so, and the on-demand run's
//! do not.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A run starts a whole deployment and waits for fresh processes to catch up.
const RUN_LIMIT: Duration = Duration::from_secs(240);
/// What an agent in full catch-up mode logs at start.
const FULL_DONE: &str = "ZZ_AGENT_CATCHUP=full";

/// Runs `zz ARGS` in its own process group (killed whole on timeout);
/// returns its combined output.
fn zz(args: &[&str], log: &Path) -> String {
    let out = std::fs::File::create(log).unwrap();
    let t = Instant::now();
    let mut child = Command::new(zz_tests::bin("zz"))
        .args(args)
        .env_remove("ZZ_AGENT_CATCHUP")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > RUN_LIMIT {
            let _ = killpg(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGKILL);
            let _ = child.wait();
            panic!(
                "zz {} did not finish in {RUN_LIMIT:?}:\n{}",
                args.join(" "),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    println!("zz {} ({:.1} s):\n{text}", args.join(" "), t.elapsed().as_secs_f64());
    assert!(status.success(), "zz {} exited with {status}", args.join(" "));
    text
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing or not a number in {v}"))
}

/// The data dir `--keep` left, from its "data kept in DIR" line.
fn kept_dir(output: &str) -> PathBuf {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("data kept in "))
        .unwrap_or_else(|| panic!("no 'data kept in' line:\n{output}"));
    PathBuf::from(line.trim())
}

/// Whether any replica log (`kv-e*.log`) under `dir` contains `needle`.
fn replica_logs_say(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            replica_logs_say(&p, needle)
        } else {
            name.starts_with("kv-e")
                && name.ends_with(".log")
                && std::fs::read_to_string(&p).is_ok_and(|t| t.contains(needle))
        }
    })
}

fn run(baseline: bool) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let json_s = json.to_string_lossy().into_owned();
    let mut args = vec![
        "bench",
        "recovery",
        "--standby",
        "cold",
        "--state-mb",
        "1",
        "--incidents",
        "2",
        "--keep",
        "--json",
        &json_s,
    ];
    if baseline {
        args.push("--baseline");
    }
    let output = zz(&args, &dir.path().join("zz.log"));
    let kept = kept_dir(&output);
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let full_logged = replica_logs_say(&kept, FULL_DONE);
    let _ = std::fs::remove_dir_all(&kept);

    assert_eq!(v["kind"], "recovery", "{v}");
    assert_eq!(v["standby"], "cold", "{v}");
    assert_eq!(v["backend"], "process", "{v}");
    assert_eq!(v["baseline"], baseline, "{v}");
    assert_eq!(v["catchup"], if baseline { "full" } else { "on-demand" }, "{v}");
    assert_eq!(num(&v, "incidents"), 2.0, "{v}");
    for what in ["fault_to_answer", "recovery"] {
        let (p50, p99) = (num(&v, &format!("{what}_p50_ms")), num(&v, &format!("{what}_p99_ms")));
        assert!(p50 > 0.0 && p99 >= p50, "{what}: p50 {p50}, p99 {p99}: {v}");
    }
    assert_eq!(
        full_logged, baseline,
        "agents logged {FULL_DONE:?}: {full_logged}, expected {baseline}"
    );
}

#[test]
fn cold_standby_recovers_on_demand() {
    run(false);
}

#[test]
fn cold_standby_full_transfer_baseline_recovers() {
    run(true);
}

#[test]
fn baseline_refuses_a_paused_standby() {
    let out = Command::new(zz_tests::bin("zz"))
        .args([
            "bench",
            "recovery",
            "--baseline",
            "--standby",
            "paused",
            "--incidents",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--standby cold or hibernated"), "{err}");
}
