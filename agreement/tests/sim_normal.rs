//! Normal-case liveness and safety under a well-behaved and a lossy network.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use zz_agreement::sim::seeds::for_seeds;
use zz_agreement::sim::{Sim, SimConfig};

fn run(cfg: SimConfig, max_ms: u64) -> Result<Sim, String> {
    let mut sim = Sim::new(cfg);
    let done = sim.run_until(Sim::all_clients_done, max_ms);
    if !sim.violations().is_empty() {
        return Err(format!("safety: {:?}", sim.violations()));
    }
    if !done {
        return Err(format!(
            "no liveness: {} batches done at {} ms, committed {:?}",
            sim.client_batches_done(),
            sim.now(),
            (0..sim.n())
                .map(|i| sim.core(i).map(|c| (c.view(), c.last_committed())))
                .collect::<Vec<_>>()
        ));
    }
    Ok(sim)
}

#[test]
fn normal_case_commits_every_batch_f1() {
    for_seeds("normal f=1", 20, |seed| {
        let sim = run(
            SimConfig {
                f: 1,
                seed,
                ..SimConfig::default()
            },
            10_000,
        )?;
        for i in 0..sim.n() {
            let s = sim.core(i).ok_or("down")?.stats();
            if s.view_changes_started != 0 {
                return Err(format!("a{i} started a view change in the normal case"));
            }
        }
        Ok(())
    });
}

#[test]
fn normal_case_commits_every_batch_f2() {
    for_seeds("normal f=2", 10, |seed| {
        run(
            SimConfig {
                f: 2,
                seed,
                ..SimConfig::default()
            },
            10_000,
        )
        .map(|_| ())
    });
}
