//! Execution replicas as the hypervisor runs them: an instance boots, runs,
//! is paused and resumed, or is destroyed; while it runs, the real
//! [`Replica`] handles one input at a time. Its state fetches block it, as
//! the agent's replica thread blocks: each costs the round trips through a
//! node relay (or the fetch timeout when the peer cannot answer), and the
//! replica's output leaves only when that time has passed.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use zz_agent::{FetchError, Replica, StateSource};
use zz_wire::{Msg, Principal, ReplicaId, Seq, StateGive, StateWant};

/// The agent's tick and heartbeat periods.
pub const TICK_MS: u64 = 50;
pub const HEARTBEAT_MS: u64 = 200;
/// What a fetch from a peer that does not answer costs (the agent's first timeout).
const FETCH_TIMEOUT_MS: u64 = 250;
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
}

impl SimSource<'_> {
    fn hop(&mut self) -> u64 {
        self.rng
            .gen_range(self.min_delay_ms..=self.max_delay_ms.max(self.min_delay_ms))
    }
}

impl StateSource for SimSource<'_> {
    fn fetch(&mut self, peer: ReplicaId, checkpoint: Seq, want: StateWant) -> Result<StateGive, FetchError> {
        let at = self.now + self.cost;
        let answer = self
            .peers
            .get(&peer)
            .filter(|h| h.run == Run::Running)
            .and_then(|h| Some((h.busy_until, h.replica.as_ref()?.serve(checkpoint, &want)?)));
        match answer {
            Some((busy_until, give)) => {
                // To a node, relayed to the peer, and the same way back.
                let trip = self.hop() + self.hop() + self.hop() + self.hop();
                self.cost += trip + busy_until.saturating_sub(at);
                Ok(give)
            }
            None => {
                self.cost += FETCH_TIMEOUT_MS;
                Err(FetchError::Timeout(peer))
            }
        }
    }
}
