//! View-change latency in virtual time: the primary crashes under load and
//! the first batch is committed in the new view within what the protocol's
//! timers and message delays allow. Virtual time is deterministic per seed,
//! so the bound is exact, not a guess about a machine's speed.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use zz_agreement::sim::seeds::for_seeds;
use zz_agreement::sim::{Sim, SimConfig};

/// Crashes the primary of view 0 at a seeded moment of steady load; returns
/// the virtual ms from the crash until f+1 correct nodes committed a client
/// batch in view 1 or later (what a client needs for a certified answer).
fn crash_to_new_view_commit(cfg: SimConfig) -> Result<u64, String> {
    let f = cfg.f;
    let warmup = 50 + cfg.seed % 97;
    let mut sim = Sim::new(cfg);
    sim.run_for(warmup);
    if sim.client_batches_done() == 0 {
        return Err("no progress before the crash".into());
    }
    sim.crash(0);
    let crashed_at = sim.now();
    let done = sim.run_until(|s| s.commit_in_view_at(1, f + 1).is_some(), 10_000);
    if !sim.violations().is_empty() {
        return Err(format!("safety: {:?}", sim.violations()));
    }
    let at = sim
        .commit_in_view_at(1, f + 1)
        .filter(|_| done)
        .ok_or_else(|| format!("no commit in a new view 10 s after the crash at {crashed_at}"))?;
    Ok(at - crashed_at)
}

/// The longest the chain can take: the client notices after its retry
/// period (checked every tick) and re-sends to every node (one delay); each
/// backup times out the request; view changes cross (one delay), the new
/// primary sends its new view and a fresh pre-prepare (one delay, plus the
/// batch timer), then prepare and commit (two delays); one more delay of
/// slack for a view change that a backup joins on f+1 instead of its timer.
fn bound(c: &SimConfig) -> u64 {
    let t = &c.timing;
    t.client_retry_ms
        + c.client_tick_ms
        + t.view_change_timeout_ms
        + 6 * c.max_delay_ms
        + t.batch_delay_us.div_ceil(1000)
}

fn scenario(name: &str, f: usize, seeds: u64) {
    let mut worst = 0;
    for_seeds(name, seeds, |seed| {
        let cfg = SimConfig {
            f,
            seed,
            batches_per_client: 10_000,
            ..SimConfig::default()
        };
        let limit = bound(&cfg);
        let took = crash_to_new_view_commit(cfg)?;
        worst = worst.max(took);
        if took > limit {
            return Err(format!(
                "first commit in the new view {took} ms after the crash, bound {limit} ms"
            ));
        }
        Ok(())
    });
    eprintln!("{name}: worst crash → new-view commit {worst} virtual ms");
}

#[test]
fn crashed_primary_first_commit_in_new_view_is_bounded_f1() {
    scenario("crash → new-view commit f=1", 1, 20);
}

#[test]
fn crashed_primary_first_commit_in_new_view_is_bounded_f2() {
    scenario("crash → new-view commit f=2", 2, 5);
}

/// A crashed primary restarted after the view change comes back in its old
/// view; it must join the current one by itself (the others never send it a
/// view change), or the next crash of any other node leaves no quorum.
#[test]
fn a_restarted_primary_joins_the_current_view_and_counts_for_the_quorum() {
    for_seeds("restarted primary joins the view", 20, |seed| {
        let mut sim = Sim::new(SimConfig {
            seed,
            batches_per_client: 10_000,
            ..SimConfig::default()
        });
        sim.run_for(50 + seed % 97);
        sim.crash(0);
        if !sim.run_until(|s| s.commit_in_view_at(1, 2).is_some(), 5_000) {
            return Err("no commit in view 1 after the crash".into());
        }
        sim.restart(0);
        let in_view = |s: &Sim| {
            let others = s.core(1).map(|c| c.view());
            s.core(0)
                .is_some_and(|c| Some(c.view()) == others && !c.in_view_change())
        };
        if !sim.run_until(in_view, 3_000) {
            let views: Vec<_> = (0..4)
                .map(|i| sim.core(i).map(|c| (c.view(), c.in_view_change())))
                .collect();
            return Err(format!("a0 did not join the current view: {views:?}"));
        }
        // Now a backup of the current view crashes: a0's votes are needed.
        let view = sim.core(1).map_or(0, |c| c.view());
        let primary = usize::try_from(view % 4).unwrap_or(0);
        let backup = (1..4).find(|i| *i != primary).unwrap_or(1);
        sim.crash(backup);
        let before = sim.client_batches_done();
        sim.run_for(2_000);
        if !sim.violations().is_empty() {
            return Err(format!("safety: {:?}", sim.violations()));
        }
        if sim.client_batches_done() <= before + 10 {
            return Err(format!(
                "no progress with a{backup} crashed: {} → {} batches",
                before,
                sim.client_batches_done()
            ));
        }
        Ok(())
    });
}
