//! Every `zz demo` scenario passes its own expectations on the process
//! backend: the fault is detected, the system heals, no wrong answer reaches
//! a client and the bank total is conserved. The demo exits non-zero otherwise.

use std::process::Command;
use std::time::Instant;

fn run(scenario: &str) {
    let seed = 20261123u64;
    let start = Instant::now();
    let out = Command::new(zz_tests::bin("zz"))
        .args([
            "demo",
            "--scenario",
            scenario,
            "--seed",
            &seed.to_string(),
            "--workers",
            "4",
        ])
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
