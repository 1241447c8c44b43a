//! The whole zz system in one deterministic, seeded simulation.
//!
//! Every role runs its real logic: each agreement node is a
//! [`NodeMachine`](zz_agreement::node::NodeMachine) (the PBFT cores and reply
//! voters of every app) over an in-memory store with the node store's
//! semantics; each execution replica is a [`Replica`](zz_agent::Replica)
//! with the real apps and Merkle state; the orchestrator is the real
//! [`Controller`](zz_orchestrator::controller::Controller) (certificates,
//! pool policy, fault injection through its API) on a simulated backend and
//! a virtual clock; clients act as the gateway does (sign, send to every
//! node, accept f+1 matching answers, retransmit, give up at a deadline).
//!
//! What is simulated instead of real: the network (seeded delay, loss,
//! duplication, reordering, partitions that heal), time (one virtual
//! clock, no sleeps), the hypervisor (pause, resume, boot, destroy with
//! drawn delays), and a replica's blocking state fetch, which costs the
//! replica the round trips (or the timeout) it would have waited.
//!
//! One `u64` seed draws the whole run: the deployment's keys, the fault
//! plan, every message delay and every client's workload. A run is checked
//! by the oracles in [`oracle`] and [`World::check`](world::World).

pub mod backend;
mod clients;
pub mod mutate;
pub mod oracle;
mod orch;
pub mod plan;
mod replicas;
pub mod shrink;
pub mod world;

pub use plan::Plan;
pub use world::{Report, World};

/// Knobs of one run that are not drawn from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub f: usize,
    /// Keep a readable trace of every message and decision.
    pub trace: bool,
    /// Draw no fault at all (a baseline run).
    pub calm: bool,
}

impl SimConfig {
    pub fn new(seed: u64, f: usize) -> Self {
        SimConfig {
            seed,
            f,
            trace: false,
            calm: false,
        }
    }
}

/// Runs one seed to the end and checks it.
pub fn run(cfg: &SimConfig) -> Report {
    let plan = if cfg.calm {
        Plan::calm(cfg.f)
    } else {
        Plan::draw(cfg.seed, cfg.f)
    };
    let mut w = World::new(cfg, plan);
    w.run();
    w.report()
}

/// The one-line command that replays a seed with its trace.
pub fn replay_command(seed: u64, f: usize) -> String {
    format!("scripts/sim.sh --seed {seed} --f {f} --trace")
}
