//! View changes and new views carry pre-prepare headers; a node that lacks
//! a body the new view re-issues fetches it (issue 25 item 7). Here the new
//! primary itself lacks them: it was cut off from the old primary while the
//! others prepared, then the old primary crashes.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use zz_agreement::sim::seeds::for_seeds;
use zz_agreement::sim::{Sim, SimConfig};

#[test]
fn a_new_primary_without_the_bodies_it_reissues_fetches_them_and_all_batches_commit() {
    let mut fetched_in = 0;
    let seeds = 20;
    for_seeds("new primary lacks bodies f=1", seeds, |seed| {
        let mut sim = Sim::new(SimConfig {
            f: 1,
            seed,
            batches_per_client: 30,
            ..SimConfig::default()
        });
        // Node 1 is view 1's primary; it hears nothing from node 0.
        sim.partition(&[1], &[0]);
        sim.run_for(40 + seed % 60);
        sim.crash(0);
        sim.heal();
        let done = sim.run_until(Sim::all_clients_done, 30_000);
        if !sim.violations().is_empty() {
            return Err(format!("safety: {:?}", sim.violations()));
        }
        if !done {
            return Err(format!("stuck: {} batches done", sim.client_batches_done()));
        }
        let c = sim.core(1).unwrap();
        if c.view() == 0 {
            return Err("no view change".into());
        }
        if c.stats().bodies_fetched > 0 {
            fetched_in += 1;
        }
        Ok(())
    });
    eprintln!("new primary fetched bodies in {fetched_in} of {seeds} seeds");
    assert!(fetched_in > 0, "the scenario never needed a body fetch");
}
