//! Execution replicas as the hypervisor runs them: an instance boots, runs,
//! is paused and resumed, or is destroyed; while it runs, the real
//! [`Replica`] handles one input at a time. Its state fetches block it, as
//! the agent's replica thread blocks: each costs the round trips through a
//! node relay (or the fetch timeout when the peer cannot answer), and the
//! replica's output leaves only when that time has passed.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use zz_agent::{FetchError, Replica, StateSource};
use zz_wire::{Msg, Principal, ReplicaId, Seq, StateGive, StateWant};

/// The agent's tick and heartbeat periods.
pub const TICK_MS: u64 = 50;
pub const HEARTBEAT_MS: u64 = 200;
/// The agent's state-request timeouts (`execution-agent/src/net.rs`): a
/// peer never heard from gets one short try, one that has answered before
/// two tries, and a background sync request one longer try. An answer
/// slower than its try (a busy peer, a long path) counts as a timeout.
const UNKNOWN_PEER_TIMEOUT_MS: u64 = 150;
const FETCH_TIMEOUTS_MS: [u64; 2] = [250, 1_500];
const BACKGROUND_FETCH_TIMEOUT_MS: u64 = 1_000;
/// Messages a paused instance's sockets hold until it resumes.
const PAUSED_BACKLOG: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Started or restored, not yet up.
    Booting,
    Running,
    Paused,
    Gone,
}

pub enum Input {
    Msg(Principal, Msg),
    Tick,
}

pub struct ReplicaHost {
    pub name: String,
    /// The backend generation of the current instance.
    pub generation: u64,
    pub run: Run,
    pub replica: Option<Replica>,
    pub queue: VecDeque<Input>,
    pub busy_until: u64,
    /// A run event is pending.
    pub scheduled: bool,
    /// The orchestrator link of the current instance.
    pub link: u64,
    /// Bumped whenever the instance stops or starts: stale events die.
    pub epoch: u64,
    /// This generation was made to misbehave: its fencing is no violation.
    pub faulty: bool,
    pub lying: bool,
    pub last_heartbeat: u64,
    /// The heartbeat last made, which the agent sends again every
    /// heartbeat period while a blocking fetch holds its replica thread.
    pub heartbeat: Option<Msg>,
    /// Peers that have answered this instance's state requests.
    pub heard_from: BTreeSet<ReplicaId>,
    pub tick_queued: bool,
}

impl ReplicaHost {
    pub fn new(name: String) -> Self {
        ReplicaHost {
            name,
            generation: 0,
            run: Run::Gone,
            replica: None,
            queue: VecDeque::new(),
            busy_until: 0,
            scheduled: false,
            link: 0,
            epoch: 0,
            faulty: false,
            lying: false,
            last_heartbeat: 0,
            heartbeat: None,
            heard_from: BTreeSet::new(),
            tick_queued: false,
        }
    }

    /// Queues a message; false if no instance can take it.
    pub fn offer(&mut self, from: Principal, msg: Msg) -> bool {
        match self.run {
            Run::Running => {
                self.queue.push_back(Input::Msg(from, msg));
                true
            }
            Run::Paused if self.queue.len() < PAUSED_BACKLOG => {
                self.queue.push_back(Input::Msg(from, msg));
                false
            }
            _ => false,
        }
    }

    pub fn stop(&mut self) {
        self.run = Run::Gone;
        self.replica = None;
        self.heartbeat = None;
        self.heard_from.clear();
        self.queue.clear();
        self.epoch += 1;
        self.scheduled = false;
        self.tick_queued = false;
    }
}

/// State from peers, answered in place, its waiting charged as `cost`.
pub struct SimSource<'a> {
    pub peers: &'a BTreeMap<ReplicaId, ReplicaHost>,
    pub rng: &'a mut ChaCha8Rng,
    pub now: u64,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub cost: u64,
    pub heard_from: &'a mut BTreeSet<ReplicaId>,
    /// A background sync's request (one longer try).
    pub background: bool,
}

impl SimSource<'_> {
    fn hop(&mut self) -> u64 {
        self.rng
            .gen_range(self.min_delay_ms..=self.max_delay_ms.max(self.min_delay_ms))
    }
}

impl StateSource for SimSource<'_> {
    fn fetch(&mut self, peer: ReplicaId, checkpoint: Seq, want: StateWant) -> Result<StateGive, FetchError> {
        let tries: &[u64] = if !self.heard_from.contains(&peer) {
            &[UNKNOWN_PEER_TIMEOUT_MS]
        } else if self.background {
            &[BACKGROUND_FETCH_TIMEOUT_MS]
        } else {
            &FETCH_TIMEOUTS_MS
        };
        for &timeout in tries {
            let at = self.now + self.cost;
            let answer = self
                .peers
                .get(&peer)
                .filter(|h| h.run == Run::Running)
                .and_then(|h| Some((h.busy_until, h.replica.as_ref()?.serve(checkpoint, &want)?)));
            let Some((busy_until, give)) = answer else {
                self.cost += timeout;
                continue;
            };
            // To a node, relayed to the peer, and the same way back; the
            // peer answers once its replica thread is free.
            let trip = self.hop() + self.hop() + self.hop() + self.hop();
            let wait = trip + busy_until.saturating_sub(at);
            // A late answer still tells the agent the peer is there.
            self.heard_from.insert(peer);
            if wait <= timeout {
                self.cost += wait;
                return Ok(give);
            }
            self.cost += timeout;
        }
        Err(FetchError::Timeout(peer))
    }
}
