//! Shrinking a failing run: the smallest plan, found greedily, under which
//! the same seed still breaks the same oracle.
//!
//! A run's plan is a list of faults plus the network's character. The
//! shrinker tries the plan without each fault in turn, then with a calmer
//! network (no loss, no duplication, no slow replicas, no flooding client,
//! short delays), keeping each change under which the run still fails the
//! same way, and repeats until no change is kept. The seed stays the same,
//! so the run is as deterministic as the original; which of its other
//! random choices (delays, workload) fall where may change with the plan.

use crate::plan::Plan;
use crate::{SimConfig, World};

/// What a shrink found.
pub struct Shrunk {
    /// The smallest failing plan found.
    pub plan: Plan,
    /// Its violations.
    pub violations: Vec<String>,
    /// Runs spent.
    pub runs: usize,
}

/// Runs `plan` under `cfg`'s seed and f; its violations.
pub fn violations(cfg: &SimConfig, plan: Plan) -> Vec<String> {
    let mut quiet = cfg.clone();
    quiet.trace = false;
    let mut w = World::new(&quiet, plan);
    w.run();
    w.report().violations
}

/// The oracle a violation breaks, without its numbers: "at 21446 ms: app 1:
/// the correct nodes do not end ..." and the same at other times, seqs or
/// replicas are one kind.
pub fn kind(violation: &str) -> String {
    let mut out = String::new();
    let mut digits = false;
    for c in violation.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('#');
            }
            digits = true;
        } else {
            digits = false;
            out.push(c);
        }
    }
    let out = out.strip_prefix("at # ms: ").map(str::to_string).unwrap_or(out);
    out.chars().take(48).collect()
}

fn same_failure(found: &[String], wanted: &[String]) -> bool {
    let kinds: Vec<String> = found.iter().map(|v| kind(v)).collect();
    wanted.iter().any(|w| kinds.contains(&kind(w)))
}

/// `p` without each one of the faults in the list `faults` picks out.
fn drop_each<T>(p: &Plan, out: &mut Vec<Plan>, faults: fn(&mut Plan) -> &mut Vec<T>) {
    for i in 0.. {
        let mut q = p.clone();
        let list = faults(&mut q);
        if i >= list.len() {
            return;
        }
        list.remove(i);
        out.push(q);
    }
}

/// Every one-step simplification of `p`, most useful first: fewer faults,
/// then a calmer network and load.
fn candidates(p: &Plan) -> Vec<Plan> {
    let mut out = Vec::new();
    drop_each(p, &mut out, |q| &mut q.nodes);
    drop_each(p, &mut out, |q| &mut q.replicas);
    drop_each(p, &mut out, |q| &mut q.partitions);
    drop_each(p, &mut out, |q| &mut q.restarts);
    let calmer: [fn(&mut Plan) -> bool; 7] = [
        |q| std::mem::replace(&mut q.flooding_client, false),
        |q| std::mem::replace(&mut q.loss, 0.0) > 0.0,
        |q| std::mem::replace(&mut q.duplicate, 0.0) > 0.0,
        |q| std::mem::replace(&mut q.exec_ms, 0) > 0,
        |q| {
            std::mem::replace(&mut q.checkpoint_interval, crate::plan::CHECKPOINT_INTERVAL)
                != crate::plan::CHECKPOINT_INTERVAL
        },
        |q| {
            let wide = q.max_delay_ms > q.min_delay_ms + 2;
            q.max_delay_ms = q.max_delay_ms.min(q.min_delay_ms + 2);
            wide
        },
        |q| {
            let more = q.clients > 1;
            q.clients = q.clients.saturating_sub(1).max(1);
            more
        },
    ];
    for calm in calmer {
        let mut q = p.clone();
        if calm(&mut q) {
            out.push(q);
        }
    }
    out
}

/// Shrinks `plan`, which fails under `cfg` with `failed`, within `budget`
/// runs.
pub fn shrink(cfg: &SimConfig, plan: Plan, failed: Vec<String>, budget: usize) -> Shrunk {
    let mut best = Shrunk {
        plan,
        violations: failed,
        runs: 0,
    };
    'outer: loop {
        for q in candidates(&best.plan) {
            if best.runs >= budget {
                break 'outer;
            }
            best.runs += 1;
            let v = violations(cfg, q.clone());
            if same_failure(&v, &best.violations) {
                best.plan = q;
                best.violations = v;
                continue 'outer;
            }
        }
        break;
    }
    best
}

/// The one-line command that shrinks a seed again and replays the result
/// with its trace.
pub fn replay_shrunk_command(seed: u64, f: usize) -> String {
    format!("scripts/sim.sh --seed {seed} --f {f} --shrink --trace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_violation_kind_ignores_times_seqs_and_names_numbers() {
        assert_eq!(
            kind("at 21914 ms: bank is not back to 2 active + 1 standby at the end: bank-e0=active"),
            kind("at 9000 ms: bank is not back to 3 active + 2 standby at the end: bank-e1=paused")
        );
        assert_ne!(
            kind("at 21446 ms: app 1: the correct nodes do not end working in one view"),
            kind("at 21446 ms: kv is not back to 2 active + 1 standby at the end")
        );
    }

    #[test]
    fn every_candidate_is_simpler_by_one_step() {
        let p = Plan::draw(3_002_195, 1);
        let faults = |q: &Plan| q.nodes.len() + q.replicas.len() + q.partitions.len() + q.restarts.len();
        for q in candidates(&p) {
            assert!(q != p, "a candidate equal to the plan");
            assert!(faults(&q) + 1 >= faults(&p) && faults(&q) <= faults(&p));
        }
    }

    /// Seed 3002195 f=1 (an incident left open once every node but one
    /// that voted on it restarted): the shrinker keeps the failure and
    /// drops what it does not need.
    #[test]
    fn a_failing_seed_shrinks_to_a_smaller_plan_that_fails_the_same_way() {
        let cfg = SimConfig::new(3_002_195, 1);
        let plan = Plan::draw(cfg.seed, cfg.f);
        let failed = violations(&cfg, plan.clone());
        assert!(!failed.is_empty(), "seed 3002195 f=1 no longer fails: pick another");
        let s = shrink(&cfg, plan.clone(), failed.clone(), 60);
        assert!(same_failure(&s.violations, &failed), "{:?}", s.violations);
        assert_eq!(violations(&cfg, s.plan.clone()), s.violations, "not deterministic");
        let size = |q: &Plan| q.nodes.len() + q.replicas.len() + q.partitions.len() + q.restarts.len();
        assert!(s.plan != plan && size(&s.plan) <= size(&plan), "{}", s.plan.describe());
    }
}
