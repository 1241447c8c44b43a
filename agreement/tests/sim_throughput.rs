//! Throughput of the real core in the simulator (all 4 nodes on one thread,
//! every signature made and checked). Not a CI test: run with
//! `cargo test --release -p zz-agreement --test sim_throughput -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use std::time::Instant;
use zz_agreement::sim::{Sim, SimConfig};

#[test]
#[ignore]
fn ordered_requests_per_second_f1() {
    let mut cfg = SimConfig {
        f: 1,
        seed: 1,
        min_delay_ms: 0,
        max_delay_ms: 1,
        clients: 4,
        batches_per_client: 2_000,
        ops_per_batch: 16,
        outstanding: 64,
        client_tick_ms: 1,
        ..SimConfig::default()
    };
    cfg.timing.batch_max = 64;
    cfg.timing.pipeline = 8;
    cfg.timing.log_window = 1024;
    cfg.checkpoint_interval = 128;
    cfg.timing.client_retry_ms = 60_000;
    cfg.timing.view_change_timeout_ms = 60_000;
    let ops = cfg.clients as u64 * cfg.batches_per_client * cfg.ops_per_batch as u64;
    let mut sim = Sim::new(cfg);
    let t = Instant::now();
    assert!(sim.run_until(Sim::all_clients_done, 600_000));
    let secs = t.elapsed().as_secs_f64();
    assert!(sim.violations().is_empty());
    let seqs = sim.core(0).map_or(0, |c| c.last_committed());
    println!(
        "{ops} requests in {seqs} proposals ordered by 4 nodes in {secs:.2} s wall: {:.0} requests/s, {:.0} proposals/s (one thread runs all nodes and clients)",
        ops as f64 / secs,
        seqs as f64 / secs
    );
}
