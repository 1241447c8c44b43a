//! Per-link read budgets: Aardvark's isolation of sources (NSDI'09 §4.2).
//!
//! Every link of a process feeds one signature checker and one event loop
//! through a shared queue. A peer that sends as fast as its socket allows
//! would fill that queue, and every correct peer's message would wait
//! behind thousands of its own: one faulty client, replica or node then
//! slows everyone. So each link's reader takes a token per message (and,
//! for the messages that ask the receiver for work — view changes, new
//! views, fetches, state transfer — per byte too) and, when its bucket is
//! empty, stops reading until it refills. TCP then pushes back on the
//! flooder alone. The rates are far above what a correct peer of that kind
//! sends (see the constants), so correct peers never wait here.

use std::time::Duration;
use zz_wire::{Msg, Principal};

/// Messages per second (and burst) a client link may deliver: a client
/// sends one batch per flush (about one per millisecond per app at most)
/// plus its retries.
pub const CLIENT_RATE: u64 = 2_000;
/// A replica sends a reply per committed seq, a checkpoint per K seqs, its
/// fetches and heartbeats.
pub const REPLICA_RATE: u64 = 10_000;
/// An agreement node: a pre-prepare, prepare and commit per seq and app,
/// forwarded requests, checkpoints.
pub const NODE_RATE: u64 = 40_000;
/// Messages per second that ask a node for work: a correct node sends a
/// view change and a fetch per retransmit period and app.
pub const COSTLY_RATE: u64 = 200;
/// Bytes per second of those (and a burst of `COSTLY_BURST`). Decoding is
/// what they cost before any check can refuse them: postcard reads a
/// digest or a signature byte by byte through serde, some 30 ns a byte
/// (`perf` of a node under `zz bench --attack flood-node`: 60% of its CPU
/// in `next_element_seed`), so 8 MB/s of padded view changes took half a
/// core per node, and a burst of 4 MB stalled each node's one thread for
/// some 150 ms at once, enough for its backups' timers to fire. A correct
/// node's view changes and fetches are tens of KB per app; a larger one
/// still passes whole, and the link then waits for its refill.
pub const COSTLY_BYTES: u64 = 1 << 20;
pub const COSTLY_BURST: u64 = 1 << 20;
/// State transfer a node relays for a replica: as `relay::RATE_PER_S`,
/// whose bucket only counts after the signature check.
pub const STATE_RATE: u64 = 500;
/// Objects travel as byte vectors that postcard decodes byte by byte (see
/// `COSTLY_BYTES`): 16 MB/s of unsolicited state responses cost each node
/// half a core (`zz bench --attack flood-replica`: 0.69 of fault-free).
/// A woken replica's on-demand fetch is a few objects per request; its
/// background sync of a large state through one node takes longer.
pub const STATE_BYTES: u64 = 4 << 20;
pub const STATE_BURST: u64 = 1 << 20;

/// A token bucket with time as an input (milliseconds).
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Tokens per second: thousandths of a token per millisecond.
    rate: i64,
    burst: i64,
    /// Thousandths of a token; negative while in debt.
    milli: i64,
    at_ms: u64,
}

/// A reader in debt reads on until it owes this many milliseconds of
/// refill, then waits them off in one sleep, not one per message.
const SLACK_MS: i64 = 10;

impl Bucket {
    pub fn new(rate_per_s: u64, burst: u64, now_ms: u64) -> Bucket {
        let rate = i64::try_from(rate_per_s).unwrap_or(i64::MAX / 1000).max(1);
        let burst = i64::try_from(burst).unwrap_or(i64::MAX / 1000);
        Bucket {
            rate,
            burst,
            milli: burst.saturating_mul(1000),
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = i64::try_from(now_ms.saturating_sub(self.at_ms)).unwrap_or(i64::MAX);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.burst.saturating_mul(1000));
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Takes `n` tokens (going into debt if need be, so that a message
    /// larger than the burst still passes, later) and returns how long to
    /// wait before reading on.
    pub fn take(&mut self, n: u64, now_ms: u64) -> Duration {
        self.refill(now_ms);
        let need = i64::try_from(n).unwrap_or(i64::MAX / 1000).saturating_mul(1000);
        self.milli = self.milli.saturating_sub(need);
        if self.milli >= -self.rate.saturating_mul(SLACK_MS) {
            return Duration::ZERO;
        }
        let owed = self.milli.saturating_neg();
        let wait_ms = owed.saturating_add(self.rate - 1) / self.rate;
        Duration::from_millis(u64::try_from(wait_ms).unwrap_or(u64::MAX))
    }
}

/// The budgets of one link, by the principal the handshake proved.
#[derive(Debug)]
pub struct LinkBudget {
    all: Option<Bucket>,
    costly: Option<(Bucket, Bucket)>,
    state: Option<(Bucket, Bucket)>,
}

impl LinkBudget {
    pub fn new(peer: Principal, now_ms: u64) -> LinkBudget {
        let all = match peer {
            Principal::Client(_) => Some(CLIENT_RATE),
            Principal::Replica(_) => Some(REPLICA_RATE),
            Principal::Node(_) => Some(NODE_RATE),
            // The orchestrator is trusted (it fences on certificates only).
            Principal::Orchestrator => None,
        };
        let costly = (peer != Principal::Orchestrator).then(|| {
            (
                Bucket::new(COSTLY_RATE, COSTLY_RATE * 2, now_ms),
                Bucket::new(COSTLY_BYTES, COSTLY_BURST, now_ms),
            )
        });
        let state = (peer != Principal::Orchestrator).then(|| {
            (
                Bucket::new(STATE_RATE, STATE_RATE * 2, now_ms),
                Bucket::new(STATE_BYTES, STATE_BURST, now_ms),
            )
        });
        LinkBudget {
            all: all.map(|r| Bucket::new(r, r, now_ms)),
            costly,
            state,
        }
    }

    /// Charges `msg` (`bytes` long on the wire) to the link; how long its
    /// reader should wait before reading the next frame.
    pub fn charge(&mut self, msg: &Msg, bytes: usize, now_ms: u64) -> Duration {
        let mut wait = self.all.as_mut().map_or(Duration::ZERO, |b| b.take(1, now_ms));
        let class = match msg {
            Msg::StateRequest(_) | Msg::StateResponse(_) => &mut self.state,
            m if is_costly(m) => &mut self.costly,
            _ => return wait,
        };
        if let Some((count, size)) = class {
            wait = wait.max(count.take(1, now_ms)).max(size.take(bytes as u64, now_ms));
        }
        wait
    }
}

/// Messages that make the receiver do work beyond their own size: check
/// nested proofs, answer with its log.
fn is_costly(msg: &Msg) -> bool {
    matches!(
        msg,
        Msg::ViewChange(_) | Msg::NewView(_) | Msg::LogFetch(_) | Msg::BodyFetch(_) | Msg::FetchOrders(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use zz_wire::{ClientId, Heartbeat, Identity, LogFetch, NodeId};

    fn heartbeat(who: Principal) -> Msg {
        Msg::Heartbeat(Identity::from_seed(who, [3; 32]).sign(Heartbeat {
            from: who,
            app: zz_wire::AppId(0),
            view: 0,
            last_executed: 0,
            last_checkpoint: 0,
            fetched_objects: 0,
            stale_objects: 0,
            time_ms: 0,
        }))
    }

    #[test]
    fn a_link_within_its_rate_is_never_held() {
        let who = Principal::Client(ClientId(1));
        let mut b = LinkBudget::new(who, 0);
        let m = heartbeat(who);
        // Half the rate for ten seconds, one message per 1/1000 s.
        for ms in 0..10_000u64 {
            if ms % 1000 < 1000 * CLIENT_RATE / 2 / 1000 {
                assert_eq!(b.charge(&m, 100, ms), Duration::ZERO, "held at {ms} ms");
            }
        }
    }

    #[test]
    fn a_flooding_client_is_held_to_its_rate() {
        let who = Principal::Client(ClientId(1));
        let mut b = LinkBudget::new(who, 0);
        let m = heartbeat(who);
        // Read as fast as the budget lets: after the burst, one second of
        // reading admits `CLIENT_RATE` more.
        let (mut now, mut read) = (0u64, 0u64);
        while now < 2_000 {
            let wait = b.charge(&m, 100, now);
            read += 1;
            now += u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        }
        // The burst, two seconds of refill, and one slack of debt.
        assert!(read <= CLIENT_RATE * 3 + CLIENT_RATE / 50, "read {read} in 2 s");
        assert!(read >= CLIENT_RATE * 2, "read {read} in 2 s");
    }

    #[test]
    fn fetches_are_held_to_the_costly_rate_on_a_node_link() {
        let who = Principal::Node(NodeId(3));
        let mut b = LinkBudget::new(who, 0);
        let fetch = Msg::LogFetch(Identity::from_seed(who, [4; 32]).sign(LogFetch {
            node: NodeId(3),
            app: zz_wire::AppId(0),
            from: 1,
        }));
        // The burst (two seconds' worth) passes; a third second's worth at
        // once leaves the link a second of refill to wait for.
        let mut held = Duration::ZERO;
        for _ in 0..COSTLY_RATE * 3 {
            held = b.charge(&fetch, 64, 0);
        }
        assert!(held >= Duration::from_millis(900), "held {held:?}");
        // Its normal-case messages are far inside the node rate.
        let mut n = LinkBudget::new(who, 0);
        assert_eq!(n.charge(&heartbeat(who), 64, 0), Duration::ZERO);
    }

    #[test]
    fn a_message_larger_than_the_burst_passes_then_holds_the_link() {
        let who = Principal::Node(NodeId(3));
        let mut b = Bucket::new(COSTLY_BYTES, COSTLY_BYTES, 0);
        let _ = who;
        let wait = b.take(COSTLY_BYTES * 2, 0);
        assert_eq!(wait, Duration::from_millis(1000));
        assert_eq!(b.take(1, 1000), Duration::ZERO);
    }
}
