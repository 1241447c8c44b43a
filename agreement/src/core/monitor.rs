//! Aardvark's throughput monitor (Clement et al., NSDI'09, §4.3): a backup
//! expects the primary to keep up the throughput it recently delivered.
//!
//! PBFT's view-change timer (§4.5.2) restarts whenever a request executes,
//! so a primary that orders one batch just under the timeout keeps its view
//! for ever while throughput falls to almost nothing. Here each backup
//! counts the requests delivered per period (one view-change timeout) and
//! keeps the best of the recent periods. A period in which this backup
//! held client requests of its own (a client re-sent them to every node:
//! they are late) and the view delivered less than `1 / SLOW_FACTOR` of the
//! best counts as a strike; `STRIKES` strikes in a row and the backup asks
//! for a new view. Without such demand nothing is expected, so an idle or
//! lightly loaded system never suspects its primary.

use super::{Core, Status};
use std::collections::VecDeque;

/// Periods whose throughput make up the expectation (across views).
const HISTORY: usize = 32;
/// A period below `best / SLOW_FACTOR` with demand is a strike.
const SLOW_FACTOR: u64 = 2;
/// Strikes in a row that make a backup suspect the primary.
const STRIKES: u32 = 2;
/// Below this many requests in the best period the expectation is noise.
const MIN_BEST: u64 = 16;

#[derive(Debug, Default)]
pub(super) struct Monitor {
    /// Start of the current period; `None` until the view runs normally.
    start: Option<u64>,
    /// Requests delivered in the current period.
    delivered: u64,
    /// This backup held a request of its own during the period.
    demand: bool,
    /// Requests per period of the last `HISTORY` whole periods.
    history: VecDeque<u64>,
    strikes: u32,
}

impl Monitor {
    /// The best recent period: what the primary is expected to approach.
    pub(super) fn best(&self) -> u64 {
        self.history.iter().copied().max().unwrap_or(0)
    }
}

impl Core {
    fn monitor_period(&self) -> u64 {
        self.cfg.timing.view_change_timeout_ms.max(1)
    }

    /// Starts a fresh period (a new view, or the end of the last one).
    pub(super) fn monitor_restart(&mut self) {
        let m = &mut self.monitor;
        m.start = Some(self.now);
        m.delivered = 0;
        m.demand = !self.pool.is_empty();
    }

    /// A view change discards the period under way: it measures neither
    /// the old primary nor the new one.
    pub(super) fn monitor_pause(&mut self) {
        self.monitor.start = None;
        self.monitor.strikes = 0;
    }

    pub(super) fn monitor_delivered(&mut self, requests: u64) {
        self.monitor.delivered += requests;
    }

    pub(super) fn monitor_demand(&mut self) {
        self.monitor.demand = true;
    }

    /// Called on the periodic timer: closes a period that has run its
    /// length, scores it, and suspects the primary after `STRIKES` slow
    /// periods with demand in a row.
    pub(super) fn monitor_tick(&mut self) {
        if self.status != Status::Normal {
            return;
        }
        let period = self.monitor_period();
        let Some(start) = self.monitor.start else {
            return self.monitor_restart();
        };
        let elapsed = self.now.saturating_sub(start);
        if elapsed < period {
            return;
        }
        // Scaled to one period: ticks do not land exactly on its end.
        let rate = self.monitor.delivered.saturating_mul(period) / elapsed.max(1);
        let best = self.monitor.best();
        let demand = self.monitor.demand || !self.pool.is_empty();
        let slow = demand && best >= MIN_BEST && rate.saturating_mul(SLOW_FACTOR) < best;
        let m = &mut self.monitor;
        m.strikes = if slow { m.strikes + 1 } else { 0 };
        m.history.push_back(rate);
        if m.history.len() > HISTORY {
            m.history.pop_front();
        }
        let suspect = m.strikes >= STRIKES && !self.is_primary();
        self.monitor_restart();
        if suspect {
            self.stats.slow_primary_suspected += 1;
            // The next primary is judged against what it shows, not against
            // the expectation this one failed: when everything is slow (an
            // overloaded machine, a flood), replacing primaries one after
            // another would only add view changes.
            self.monitor.history.clear();
            self.start_view_change(self.view + 1);
        }
    }
}
