//! Faulty agreement nodes: crashed, equivocating, slow, silent, forging and
//! replaying nodes, and a primary with an implausible clock. Safety must hold
//! and the correct nodes must keep committing.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use zz_agreement::sim::byz::{
    self, DelayPrePrepares, Equivocate, Forge, ForgeRequests, Replay, Silent, SkewTimestamps,
};
use zz_agreement::sim::seeds::for_seeds;
use zz_agreement::sim::{Sim, SimConfig};
use zz_wire::NodeFault;

const MAX_MS: u64 = 30_000;

fn cfg(f: usize, seed: u64) -> SimConfig {
    SimConfig {
        f,
        seed,
        ..SimConfig::default()
    }
}

/// Runs to completion and checks safety and liveness.
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
            "stuck: {} batches done at {} ms; nodes {state:?}",
            sim.client_batches_done(),
            sim.now()
        ));
    }
    Ok(())
}

fn max_view(sim: &Sim) -> u64 {
    sim.correct_nodes()
        .filter_map(|i| sim.core(i))
        .map(|c| c.view())
        .max()
        .unwrap_or(0)
}

fn crashed_primary(f: usize, seeds: u64) {
    for_seeds(&format!("crashed primary f={f}"), seeds, |seed| {
        let mut sim = Sim::new(cfg(f, seed));
        sim.run_for(20);
        sim.crash(0);
        finish(&mut sim)?;
        if max_view(&sim) == 0 {
            return Err("no view change".into());
        }
        Ok(())
    });
}

#[test]
fn crashed_primary_is_replaced_by_a_view_change_f1() {
    crashed_primary(1, 20);
}

#[test]
fn crashed_primary_is_replaced_by_a_view_change_f2() {
    crashed_primary(2, 5);
}

#[test]
fn equivocating_primary_cannot_split_the_log() {
    for_seeds("equivocating primary (middleware) f=1", 20, |seed| {
        let mut sim = Sim::new(cfg(1, seed));
        sim.add_middleware(0, Box::new(Equivocate));
        finish(&mut sim)?;
        if max_view(&sim) == 0 {
            return Err("equivocation went unnoticed".into());
        }
        Ok(())
    });
    for_seeds("equivocating primary (core fault) f=2", 5, |seed| {
        let mut sim = Sim::new(cfg(2, seed));
        sim.set_fault(0, Some(NodeFault::Equivocate));
        finish(&mut sim)
    });
}

#[test]
fn primary_slower_than_the_timeout_still_makes_progress() {
    for f in [1, 2] {
        for_seeds(&format!("slow primary f={f}"), if f == 1 { 20 } else { 5 }, |seed| {
            let c = cfg(f, seed);
            let delay_ms = c.timing.view_change_timeout_ms - 60;
            let mut sim = Sim::new(c);
            sim.add_middleware(0, Box::new(DelayPrePrepares { delay_ms }));
            finish(&mut sim)
        });
    }
}

#[test]
fn f_silent_backups_do_not_stop_progress() {
    for f in [1, 2] {
        for_seeds(&format!("silent backups f={f}"), if f == 1 { 20 } else { 5 }, |seed| {
            let mut sim = Sim::new(cfg(f, seed));
            let n = sim.n();
            for i in n - f..n {
                sim.add_middleware(i, Box::new(Silent));
            }
            finish(&mut sim)?;
            if max_view(&sim) != 0 {
                return Err("silent backups caused a view change".into());
            }
            Ok(())
        });
    }
}

#[test]
fn forged_signatures_are_all_rejected() {
    for f in [1, 2] {
        for_seeds(&format!("forgers f={f}"), if f == 1 { 20 } else { 5 }, |seed| {
            let mut sim = Sim::new(cfg(f, seed));
            // The primary and f-1 backups forge everything they send.
            for i in 0..f {
                sim.add_middleware(
                    i,
                    Box::new(Forge {
                        stranger: byz::stranger(u8::try_from(i + 100).unwrap_or(255)),
                    }),
                );
            }
            finish(&mut sim)?;
            if sim.net.rejected_signatures == 0 {
                return Err("no forged signature was rejected".into());
            }
            if sim.net.rejected_authors == 0 {
                return Err("no impersonation was rejected".into());
            }
            Ok(())
        });
    }
}

#[test]
fn a_primary_that_slips_in_requests_no_client_signed_is_replaced_and_none_is_delivered() {
    for f in [1, 2] {
        for_seeds(&format!("request forger f={f}"), if f == 1 { 10 } else { 3 }, |seed| {
            let mut sim = Sim::new(cfg(f, seed));
            let forger = ForgeRequests::default();
            let forged = forger.forged.clone();
            sim.add_middleware(0, Box::new(forger));
            finish(&mut sim)?;
            let forged = forged.lock().unwrap().clone();
            for i in sim.correct_nodes() {
                if let Some((seq, _)) = sim.node(i).delivered.iter().find(|(_, d)| forged.contains(d)) {
                    return Err(format!("node {i} delivered a forged proposal at seq {seq}"));
                }
            }
            if forged.is_empty() || sim.net.rejected_signatures == 0 {
                return Err(format!(
                    "{} proposals forged, {} rejected",
                    forged.len(),
                    sim.net.rejected_signatures
                ));
            }
            if max_view(&sim) == 0 {
                return Err("the forging primary was never replaced".into());
            }
            Ok(())
        });
    }
}

#[test]
fn replayed_messages_are_dropped() {
    for f in [1, 2] {
        for_seeds(&format!("replayers f={f}"), if f == 1 { 20 } else { 5 }, |seed| {
            let mut sim = Sim::new(SimConfig {
                batches_per_client: 20,
                ..cfg(f, seed)
            });
            for i in 0..f {
                sim.add_middleware(i, Box::new(Replay::new(0.5)));
            }
            finish(&mut sim)?;
            let dropped: u64 = sim
                .correct_nodes()
                .filter_map(|i| sim.core(i))
                .map(|c| c.stats().dropped_old)
                .sum();
            if dropped == 0 {
                return Err("no replayed message was dropped as old".into());
            }
            Ok(())
        });
    }
}

#[test]
fn implausible_timestamps_are_refused() {
    for f in [1, 2] {
        for (k, offset_ms) in [5_000i64, -5_000].into_iter().enumerate() {
            for_seeds(
                &format!("clock {offset_ms} f={f}"),
                if f == 1 { 10 } else { 4 },
                |seed| {
                    let c = cfg(f, seed * 2 + k as u64);
                    let skew = c.timing.max_clock_skew_ms;
                    let mut sim = Sim::new(c);
                    sim.add_middleware(0, Box::new(SkewTimestamps { offset_ms }));
                    finish(&mut sim)?;
                    let rejected: u64 = sim
                        .correct_nodes()
                        .filter_map(|i| sim.core(i))
                        .map(|c| c.stats().rejected_timestamps)
                        .sum();
                    if rejected == 0 {
                        return Err("no timestamp was refused".into());
                    }
                    for i in sim.correct_nodes() {
                        let seen = sim.node(i).max_skew_seen;
                        if seen > skew + 100 {
                            return Err(format!("a{i} delivered a timestamp {seen} ms off"));
                        }
                    }
                    Ok(())
                },
            );
        }
    }
}
