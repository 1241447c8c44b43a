//! Checkpoints bound the log; a node restarted from its durable state rejoins.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use zz_agreement::sim::seeds::for_seeds;
use zz_agreement::sim::{Sim, SimConfig};

fn finish(sim: &mut Sim, max_ms: u64) -> Result<(), String> {
    let done = sim.run_until(Sim::all_clients_done, max_ms);
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

#[test]
fn stable_checkpoints_truncate_the_log() {
    for f in [1, 2] {
        for_seeds(&format!("truncation f={f}"), if f == 1 { 10 } else { 4 }, |seed| {
            let cfg = SimConfig {
                f,
                seed,
                batches_per_client: 60,
                ..SimConfig::default()
            };
            let (k, window) = (cfg.checkpoint_interval, cfg.timing.log_window);
            let mut sim = Sim::new(cfg);
            let mut max_log = 0usize;
            let mut max_archive = 0usize;
            let done = sim.run_until(
                |s| {
                    for c in (0..s.n()).filter_map(|i| s.core(i)) {
                        max_log = max_log.max(c.log_len());
                        max_archive = max_archive.max(c.archive_len());
                    }
                    s.all_clients_done()
                },
                30_000,
            );
            if !done || !sim.violations().is_empty() {
                return Err(format!("done {done}, violations {:?}", sim.violations()));
            }
            for i in 0..sim.n() {
                let c = sim.core(i).ok_or("down")?;
                if c.stable_checkpoint() + 2 * k < c.last_committed() {
                    return Err(format!(
                        "a{i}: stable {} far below {}",
                        c.stable_checkpoint(),
                        c.last_committed()
                    ));
                }
                if c.stats().checkpoint_mismatch != 0 {
                    return Err(format!("a{i}: checkpoint mismatch"));
                }
            }
            if max_log as u64 > window || max_archive as u64 > window.max(k) {
                return Err(format!("log {max_log}, archive {max_archive} (window {window})"));
            }
            Ok(())
        });
    }
}

#[test]
fn a_restarted_backup_rejoins_from_durable_state() {
    for f in [1, 2] {
        for_seeds(&format!("restart backup f={f}"), if f == 1 { 20 } else { 5 }, |seed| {
            let mut sim = Sim::new(SimConfig {
                f,
                seed,
                batches_per_client: 30,
                ..SimConfig::default()
            });
            let n = sim.n();
            sim.run_for(60);
            sim.crash(n - 1);
            sim.run_for(100);
            sim.restart(n - 1);
            finish(&mut sim, 30_000)?;
            let others: Vec<usize> = (0..n - 1).collect();
            let target = sim.min_committed(&others);
            sim.run_until(|s| s.min_committed(&[n - 1]) >= target, 5_000);
            let c = sim.core(n - 1).ok_or("down")?;
            if c.last_committed() < target {
                return Err(format!("restarted node at {} of {target}", c.last_committed()));
            }
            Ok(())
        });
    }
}

#[test]
fn a_restarted_primary_rejoins_after_a_view_change() {
    for_seeds("restart primary f=1", 20, |seed| {
        let mut sim = Sim::new(SimConfig {
            f: 1,
            seed,
            batches_per_client: 20,
            ..SimConfig::default()
        });
        sim.run_for(40);
        sim.crash(0);
        sim.run_for(400);
        sim.restart(0);
        finish(&mut sim, 30_000)
    });
}

#[test]
fn safety_holds_under_combined_chaos() {
    for f in [1, 2] {
        for_seeds(&format!("chaos f={f}"), if f == 1 { 20 } else { 6 }, |seed| {
            let mut sim = Sim::new(SimConfig {
                f,
                seed,
                loss: 0.05,
                duplicate: 0.05,
                max_delay_ms: 15,
                batches_per_client: 20,
                ..SimConfig::default()
            });
            let n = sim.n();
            let victim = usize::try_from(seed % n as u64).unwrap_or(0);
            sim.run_for(50);
            sim.crash(victim);
            sim.run_for(300);
            sim.restart(victim);
            sim.isolate((victim + 1) % n);
            sim.run_for(200);
            sim.heal();
            finish(&mut sim, 60_000)
        });
    }
}
