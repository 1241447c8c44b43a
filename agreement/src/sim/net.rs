//! The event queue and network counters of the simulator.

use crate::core::TimerId;
use zz_wire::{Msg, Principal};

/// Counters of the simulated network and driver.
#[derive(Clone, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub lost: u64,
    pub cut: u64,
    pub duplicated: u64,
    /// Dropped by the driver-side signature checks (the message's own and
    /// its proposals' client batches) before reaching a core.
    pub rejected_signatures: u64,
    /// Dropped because the message names another author than the node that
    /// sent it (what an authenticated link refuses).
    pub rejected_authors: u64,
}

pub(super) enum Event {
    /// `from`: the sender the link would prove.
    ToNode {
        from: Principal,
        to: usize,
        msg: Msg,
    },
    Timer {
        node: usize,
        id: TimerId,
        gen: u64,
    },
    ClientTick {
        client: usize,
    },
}

pub(super) struct Queued {
    pub at: u64,
    pub n: u64,
    pub ev: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.n) == (o.at, o.n)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.n).cmp(&(o.at, o.n))
    }
}
