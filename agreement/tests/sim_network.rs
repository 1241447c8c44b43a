//! An unreliable network: loss, duplication, reordering, partitions that
//! heal, and a node cut off long enough to fall behind and catch up.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use zz_agreement::sim::seeds::for_seeds;
use zz_agreement::sim::{Sim, SimConfig};

const MAX_MS: u64 = 60_000;

fn finish(sim: &mut Sim) -> Result<(), String> {
    let done = sim.run_until(Sim::all_clients_done, MAX_MS);
    if !sim.violations().is_empty() {
        return Err(format!("safety: {:?}", sim.violations()));
    }
    if !done {
        let state: Vec<_> = (0..sim.n())
            .map(|i| {
                sim.core(i)
                    .map(|c| (c.view(), c.in_view_change(), c.last_committed(), c.stable_checkpoint()))
            })
            .collect();
        return Err(format!(
            "stuck: {} batches done; nodes {state:?}",
            sim.client_batches_done()
        ));
    }
    Ok(())
}

fn seeds(f: usize) -> u64 {
    if f == 1 {
        20
    } else {
        5
    }
}

#[test]
fn ten_percent_loss_with_duplicates_and_reordering() {
    for f in [1, 2] {
        for_seeds(&format!("lossy f={f}"), seeds(f), |seed| {
            let mut sim = Sim::new(SimConfig {
                f,
                seed,
                loss: 0.10,
                duplicate: 0.05,
                min_delay_ms: 1,
                max_delay_ms: 20,
                ..SimConfig::default()
            });
            finish(&mut sim)?;
            if sim.net.lost == 0 {
                return Err("nothing was lost".into());
            }
            Ok(())
        });
    }
}

#[test]
fn a_partition_without_quorum_stalls_then_heals() {
    for f in [1, 2] {
        for_seeds(&format!("partition f={f}"), seeds(f), |seed| {
            let mut sim = Sim::new(SimConfig {
                f,
                seed,
                batches_per_client: 20,
                ..SimConfig::default()
            });
            let n = sim.n();
            sim.run_for(30);
            // Neither side has 2f+1 nodes.
            let (a, b): (Vec<usize>, Vec<usize>) = (0..n).partition(|i| *i < n / 2);
            sim.partition(&a, &b);
            sim.run_for(200);
            let during = sim.client_batches_done();
            sim.run_for(600);
            if sim.client_batches_done() > during + 2 * sim.config().clients as u64 {
                return Err("progress without a quorum".into());
            }
            sim.heal();
            finish(&mut sim)
        });
    }
}

#[test]
fn a_lagging_node_catches_up_through_log_fetch() {
    for f in [1, 2] {
        for_seeds(&format!("lagging node f={f}"), seeds(f), |seed| {
            let mut sim = Sim::new(SimConfig {
                f,
                seed,
                batches_per_client: 30,
                checkpoint_interval: 16,
                ..SimConfig::default()
            });
            let n = sim.n();
            let lagger = n - 1;
            sim.run_for(10);
            sim.isolate(lagger);
            let others: Vec<usize> = (0..n - 1).collect();
            let start = sim.min_committed(&others);
            // Run until the others are well ahead, past a checkpoint.
            sim.run_until(|s| s.min_committed(&others) >= start + 20, 10_000);
            sim.heal();
            finish(&mut sim)?;
            let target = sim.min_committed(&others);
            sim.run_until(|s| s.min_committed(&[lagger]) >= target, 5_000);
            let core = sim.core(lagger).ok_or("lagger down")?;
            if core.last_committed() < target {
                return Err(format!("lagger at {} of {target}", core.last_committed()));
            }
            if core.stats().fetched == 0 {
                return Err("caught up without LogFetch".into());
            }
            Ok(())
        });
    }
}
