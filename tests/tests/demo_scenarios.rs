//! Every `zz demo` scenario passes its own expectations on the process
//! backend: the fault is detected, the system heals, no wrong answer reaches
//! a client and the bank total is conserved. The demo exits non-zero otherwise.
//! Each writes its narrated log and the PNG of its throughput and latency
//! timeline, and prints where.

use std::process::Command;
use std::time::Instant;

fn run(scenario: &str) {
    let seed = 20261123u64;
    let start = Instant::now();
    // Kept under the target dir, so the pictures can be looked at.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo");
    let out = Command::new(zz_tests::bin("zz"))
        .args([
            "demo",
            "--scenario",
            scenario,
            "--seed",
            &seed.to_string(),
            "--workers",
            "4",
            "--out",
        ])
        .arg(&dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running zz demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "zz demo --scenario {scenario} --seed {seed} failed after {:?}:\n{stdout}\n{stderr}",
        start.elapsed()
    );
    assert!(
        stdout.contains(&format!("PASSED {scenario}")),
        "no PASSED line:\n{stdout}"
    );
    check_outputs(scenario, &dir, &stdout);
    // Wake-up and replay take tens of ms; a bound this loose catches only
    // a stall (two-faults used to take ~20 s), not a slow shared host.
    for ms in certified_ms(&stdout) {
        assert!(
            ms < CERTIFIED_WITHIN_MS,
            "an incident of {scenario} (seed {seed}) was certified after {ms} ms:\n{stdout}"
        );
    }
}

/// The picture and the log are where the demo says, and the picture is a
/// whole PNG of the documented size.
fn check_outputs(scenario: &str, dir: &std::path::Path, stdout: &str) {
    let png_path = dir.join(format!("{scenario}.png"));
    let log_path = dir.join(format!("{scenario}.log"));
    let printed = |what: &str, p: &std::path::Path| {
        let abs = std::path::absolute(p).expect("absolute path");
        assert!(
            stdout.contains(&format!("{what}: {}", abs.display())),
            "the demo did not print its {what} path {}:\n{stdout}",
            abs.display()
        );
    };
    printed("picture", &png_path);
    printed("narrated log", &log_path);
    let file = std::fs::File::open(&png_path).expect("the picture exists");
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG");
    assert_eq!((reader.info().width, reader.info().height), (1400, 800));
    let log = std::fs::read_to_string(&log_path).expect("the narrated log exists");
    assert!(log.contains(&format!("PASSED {scenario}")), "{log}");
    assert!(log.contains("injected"), "{log}");
    println!("picture: {}", png_path.display());
}

/// Longest an incident may take from detection to its certified answer.
const CERTIFIED_WITHIN_MS: u64 = 2_000;

/// The N of every "incident K certified after N ms" line the demo narrates.
fn certified_ms(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| {
            l.split_once("certified after ")?
                .1
                .strip_suffix(" ms")?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn certified_times_are_read_from_the_narration() {
    let out = "[    84 ms] incident-certified      incident 1 certified after 77 ms\n\
               [ 19920 ms] incident-certified      incident 2 certified after 19906 ms\n\
               PASSED two-faults in 3.0 s";
    assert_eq!(certified_ms(out), vec![77, 19906]);
}

#[test]
fn byzantine_reply() {
    run("byzantine-reply");
}

#[test]
fn crash() {
    run("crash");
}

#[test]
fn hang() {
    run("hang");
}

#[test]
fn corrupt_state() {
    run("corrupt-state");
}

#[test]
fn bad_checkpoint() {
    run("bad-checkpoint");
}

#[test]
fn equivocating_primary() {
    run("equivocating-primary");
}

#[test]
fn two_faults() {
    run("two-faults");
}

#[test]
fn wasm_app() {
    run("wasm-app");
}
