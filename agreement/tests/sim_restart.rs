//! Crash-restart safety (issue 25, item 1): a node that restarts must not
//! forget what it prepared or committed, or a later view can fill those seqs
//! with other values. PBFT keeps its log on stable storage for this; so does
//! zz (`Action::Record`, written before any vote that depends on it).
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use zz_agreement::sim::seeds::for_seeds;
use zz_agreement::sim::{Sim, SimConfig};
use zz_wire::Timing;

fn cfg(f: usize, seed: u64) -> SimConfig {
    SimConfig {
        f,
        seed,
        // No checkpoint (and so no periodic `Persist`) before the restarts:
        // only what the node records while voting can save it.
        checkpoint_interval: 64,
        timing: Timing {
            log_window: 128,
            ..SimConfig::default().timing
        },
        batches_per_client: 40,
        ..SimConfig::default()
    }
}

fn stuck(sim: &Sim) -> String {
    let state: Vec<_> = (0..sim.n())
        .map(|i| {
            sim.core(i)
                .map(|c| (c.view(), c.in_view_change(), c.last_committed(), c.stable_checkpoint()))
        })
        .collect();
    format!(
        "{} batches done at {} ms; nodes {state:?}",
        sim.client_batches_done(),
        sim.now()
    )
}

/// f lagging nodes are cut off while the other 2f+1 commit; then the primary
/// stops and 2f backups restart one after the other. The restarted nodes and
/// the lagging ones form the next view's quorum: unless the restarted nodes
/// remember their prepared certificates, that view assigns new batches to
/// seqs that are already committed (a fork with no Byzantine node; with f=1,
/// a Byzantine new primary that omits its own P set gets the same from one
/// restart).
fn restarts_in_a_row_keep_the_log(f: usize, seeds: u64) {
    for_seeds(&format!("restarts in a row f={f}"), seeds, |seed| {
        let mut sim = Sim::new(cfg(f, seed));
        let n = sim.n();
        let quorum: Vec<usize> = (0..n - f).collect();
        let lagging: Vec<usize> = (n - f..n).collect();
        sim.partition(&quorum, &lagging);
        if !sim.run_until(|s| s.min_committed(&quorum) >= 5, 5_000) {
            return Err(format!("no progress before the restarts: {}", stuck(&sim)));
        }
        sim.crash(0);
        for i in 1..=2 * f {
            sim.crash(i);
            sim.run_for(5);
            sim.restart(i);
        }
        sim.heal();
        let live: Vec<usize> = (1..n).collect();
        let target = sim.min_committed(&live) + 5;
        let progressed = sim.run_until(|s| s.min_committed(&live) >= target, 20_000);
        if !sim.violations().is_empty() {
            return Err(format!("safety: {:?}", sim.violations()));
        }
        if !progressed {
            return Err(format!("stuck after the restarts: {}", stuck(&sim)));
        }
        // The old primary comes back and must agree with the rest.
        sim.restart(0);
        sim.run_until(Sim::all_clients_done, 30_000);
        if !sim.violations().is_empty() {
            return Err(format!("safety after a0 returned: {:?}", sim.violations()));
        }
        Ok(())
    });
}

#[test]
fn restarted_nodes_keep_their_prepared_log_f1() {
    restarts_in_a_row_keep_the_log(1, 20);
}

#[test]
fn restarted_nodes_keep_their_prepared_log_f2() {
    restarts_in_a_row_keep_the_log(2, 8);
}
