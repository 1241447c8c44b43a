//! The whole-system simulation over many seeds, plus the named seeds of
//! bugs it found. `ZZ_SIM_SEEDS` sets how many seeds each chunk runs.

use zz_sim::plan::{Plan, ReplicaBehaviour, ReplicaPlan};
use zz_sim::{replay_command, run, SimConfig, World};
use zz_wire::ReplicaFault;

fn seeds_per_chunk() -> u64 {
    std::env::var("ZZ_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(250)
}

/// Runs `count` seeds from `first` at `f`; fails listing every failing seed.
fn sweep(first: u64, count: u64, f: usize) {
    let mut failed = Vec::new();
    for seed in first..first + count {
        let report = run(&SimConfig::new(seed, f));
        if !report.ok() {
            failed.push(format!(
                "seed {seed} f={f}:\n  plan: {}\n  {}\n  replay: {}",
                report.plan,
                report.violations.join("\n  "),
                replay_command(seed, f)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn seeds_f1_a() {
    sweep(0, seeds_per_chunk(), 1);
}

#[test]
fn seeds_f1_b() {
    sweep(1_000_000, seeds_per_chunk(), 1);
}

#[test]
fn seeds_f2_a() {
    sweep(0, seeds_per_chunk(), 2);
}

#[test]
fn seeds_f2_b() {
    sweep(1_000_000, seeds_per_chunk(), 2);
}

#[test]
fn a_calm_run_answers_every_request_and_opens_no_incident() {
    for f in [1, 2] {
        let mut cfg = SimConfig::new(7, f);
        cfg.calm = true;
        let r = run(&cfg);
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!(r.stats.ops_unanswered, 0, "{:?}", r.stats);
        assert!(r.stats.ops_answered > 100, "{:?}", r.stats);
        assert_eq!(r.stats.fenced, 0, "{:?}", r.stats);
    }
}

#[test]
fn a_replica_that_corrupts_its_replies_is_fenced_and_replaced_and_nothing_is_lost() {
    for f in [1, 2] {
        let mut plan = Plan::calm(f);
        plan.replicas.push(ReplicaPlan {
            app: 0,
            index: 0,
            at_ms: 3_000,
            behaviour: ReplicaBehaviour::Inject(ReplicaFault::CorruptReply),
        });
        let mut w = World::new(&SimConfig::new(11, f), plan);
        w.run();
        let r = w.report();
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!(r.stats.fenced, 1, "{:?}", r.stats);
    }
}

/// Seeds that once broke an oracle, kept so the bug stays fixed.
#[test]
fn regression_seeds() {
    let seeds: &[(u64, usize, &str)] = &[];
    for (seed, f, what) in seeds {
        let r = run(&SimConfig::new(*seed, *f));
        assert!(r.ok(), "seed {seed} f={f} ({what}): {:?}", r.violations);
    }
}
