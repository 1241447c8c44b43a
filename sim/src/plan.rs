//! What goes wrong in a run, drawn from its seed before it starts: the
//! network's character, at most f misbehaving agreement nodes, at most f
//! faulty replicas per app, partitions, and when it all stops.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zz_wire::{NodeFault, ReplicaFault};

/// Virtual ms from the start at which clients begin.
pub const LOAD_FROM_MS: u64 = 1_500;
/// How long after the heal the run goes on: by then every app must be back
/// to f+1 active and f paused replicas (the liveness bound).
pub const RECOVERY_MS: u64 = 16_000;

/// How one misbehaving agreement node misbehaves.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeBehaviour {
    /// Stops (power cut) and is restarted from its store `down_ms` later.
    CrashRestart { down_ms: u64 },
    /// Crashes twice, the second time soon after it came back.
    CrashTwice { down_ms: u64 },
    /// A second live instance of the same identity; the other nodes are
    /// split between the two (Twins).
    Twins,
    /// ByzzFuzz-style small-scope mutations of its outgoing protocol
    /// messages, re-signed with its own key, at this rate.
    Mutate { rate: f64 },
    /// Sends old messages again besides the real ones.
    Replay { rate: f64 },
    /// A fault mode switched on through the orchestrator's API.
    Inject(NodeFault),
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodePlan {
    pub node: u16,
    pub at_ms: u64,
    pub behaviour: NodeBehaviour,
}

/// How one faulty replica misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplicaBehaviour {
    /// A fault mode switched on through the orchestrator's API.
    Inject(ReplicaFault),
    /// Its heartbeats claim progress it did not make (re-signed).
    LyingHeartbeats,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaPlan {
    pub app: u16,
    pub index: u16,
    pub at_ms: u64,
    pub behaviour: ReplicaBehaviour,
}

/// Agreement nodes cut off from one another between `at_ms` and `until_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    pub at_ms: u64,
    pub until_ms: u64,
    /// One side; the other is every other node.
    pub side: Vec<u16>,
}

/// A node that crashes (power cut) and restarts from its store.
#[derive(Clone, Debug, PartialEq)]
pub struct Restart {
    pub node: u16,
    pub at_ms: u64,
    pub down_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub loss: f64,
    pub duplicate: f64,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub nodes: Vec<NodePlan>,
    pub replicas: Vec<ReplicaPlan>,
    pub partitions: Vec<Partition>,
    /// Rolling restarts: correct nodes crash and come back one at a time
    /// (crashes are benign: at most one is down at once, whatever f is).
    pub restarts: Vec<Restart>,
    /// Faults stop, the network heals, crashed nodes are back.
    pub heal_ms: u64,
    /// The run ends; liveness is judged against this.
    pub end_ms: u64,
    /// Clients per app.
    pub clients: usize,
    /// A client floods every node with copies of its requests.
    pub flooding_client: bool,
    /// Replica time each executed seq takes: 0 is free, more is a slow
    /// host such as a VM under software emulation, whose busy replicas
    /// answer state requests late or past their timeout.
    pub exec_ms: u64,
    /// Seqs between execution checkpoints. Short intervals make checkpoints
    /// pass while a standby is paused, so a woken or refreshed standby
    /// catches up from certificates its peers may have dropped.
    pub checkpoint_interval: u64,
}

/// The checkpoint interval of a run that draws none.
pub const CHECKPOINT_INTERVAL: u64 = 16;

const REPLICA_FAULTS: [ReplicaFault; 7] = [
    ReplicaFault::Crash,
    ReplicaFault::Hang,
    ReplicaFault::CorruptReply,
    ReplicaFault::CorruptState,
    ReplicaFault::BadCheckpoint,
    ReplicaFault::ServeBadState,
    ReplicaFault::Slow,
];

impl Plan {
    /// No fault, a well-behaved network.
    pub fn calm(_f: usize) -> Plan {
        Plan {
            loss: 0.0,
            duplicate: 0.0,
            min_delay_ms: 1,
            max_delay_ms: 3,
            nodes: Vec::new(),
            replicas: Vec::new(),
            partitions: Vec::new(),
            restarts: Vec::new(),
            heal_ms: 5_000,
            end_ms: 5_000 + RECOVERY_MS,
            clients: 2,
            flooding_client: false,
            exec_ms: 0,
            checkpoint_interval: CHECKPOINT_INTERVAL,
        }
    }

    pub fn draw(seed: u64, f: usize) -> Plan {
        // A stream of its own, so the plan does not shift when the run's
        // other random choices change.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a5a_0f0f_c3c3_9696);
        let n = 3 * f + 1;
        let heal_ms = rng.gen_range(4_000..7_000);
        let fault_window = LOAD_FROM_MS..heal_ms - 500;
        let mut plan = Plan::calm(f);
        plan.heal_ms = heal_ms;
        plan.end_ms = heal_ms + RECOVERY_MS;
        plan.max_delay_ms = *pick(&mut rng, &[2, 5, 20, 60]);
        plan.min_delay_ms = rng.gen_range(0..=plan.max_delay_ms.min(2));
        plan.loss = *pick(&mut rng, &[0.0, 0.0, 0.001, 0.01, 0.03]);
        plan.duplicate = *pick(&mut rng, &[0.0, 0.0, 0.01, 0.05]);
        plan.clients = rng.gen_range(1..=3);
        plan.flooding_client = rng.gen_bool(0.1);

        let bad_nodes = rng.gen_range(0..=f);
        let mut nodes: Vec<u16> = (0..n as u16).collect();
        for _ in 0..bad_nodes {
            let node = nodes.remove(rng.gen_range(0..nodes.len()));
            let at_ms = rng.gen_range(fault_window.clone());
            let behaviour = match rng.gen_range(0..9) {
                0 => NodeBehaviour::CrashRestart {
                    down_ms: rng.gen_range(50..2_000),
                },
                1 => NodeBehaviour::CrashTwice {
                    down_ms: rng.gen_range(50..800),
                },
                2 => NodeBehaviour::Twins,
                3 | 4 => NodeBehaviour::Mutate {
                    rate: *pick(&mut rng, &[0.05, 0.2, 0.5]),
                },
                5 => NodeBehaviour::Replay { rate: 0.2 },
                6 => NodeBehaviour::Inject(NodeFault::Mute),
                7 => NodeBehaviour::Inject(NodeFault::Equivocate),
                _ => NodeBehaviour::Inject(NodeFault::Slow),
            };
            plan.nodes.push(NodePlan { node, at_ms, behaviour });
        }
        if rng.gen_bool(0.3) {
            let at_ms = rng.gen_range(fault_window.clone());
            let until_ms = (at_ms + rng.gen_range(100..3_000)).min(heal_ms);
            let side = if rng.gen_bool(0.5) {
                vec![rng.gen_range(0..n as u16)]
            } else {
                (0..n as u16).filter(|_| rng.gen_bool(0.5)).collect()
            };
            plan.partitions.push(Partition { at_ms, until_ms, side });
        }
        if rng.gen_bool(0.3) {
            // Nodes other than the misbehaving ones, in a random order.
            let mut order: Vec<u16> = nodes.clone();
            let k = rng.gen_range(2..=order.len().max(2)).min(order.len());
            let mut at_ms = rng.gen_range(fault_window.clone());
            for _ in 0..k {
                let node = order.remove(rng.gen_range(0..order.len()));
                let down_ms = rng.gen_range(20..600);
                if at_ms + down_ms >= heal_ms {
                    break;
                }
                plan.restarts.push(Restart { node, at_ms, down_ms });
                at_ms += down_ms + rng.gen_range(1..400);
            }
        }
        for app in 0..2u16 {
            let faulty = rng.gen_range(0..=f);
            let mut slots: Vec<u16> = (0..(2 * f + 1) as u16).collect();
            for _ in 0..faulty {
                let index = slots.remove(rng.gen_range(0..slots.len()));
                let behaviour = if rng.gen_bool(0.1) {
                    ReplicaBehaviour::LyingHeartbeats
                } else {
                    ReplicaBehaviour::Inject(*pick(&mut rng, &REPLICA_FAULTS))
                };
                plan.replicas.push(ReplicaPlan {
                    app,
                    index,
                    at_ms: rng.gen_range(fault_window.clone()),
                    behaviour,
                });
            }
        }
        // Drawn last: the draws above stay what they were before it.
        if rng.gen_bool(0.25) {
            plan.exec_ms = *pick(&mut rng, &[5, 20, 60]);
        }
        if rng.gen_bool(0.3) {
            plan.checkpoint_interval = *pick(&mut rng, &[4, 8]);
        }
        plan
    }

    /// One line per fault, for the report.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "net: delay {}..{} ms, loss {}, dup {}; clients/app {}{}; heal at {} ms, end at {} ms",
            self.min_delay_ms,
            self.max_delay_ms,
            self.loss,
            self.duplicate,
            self.clients,
            if self.flooding_client { " (one flooding)" } else { "" },
            self.heal_ms,
            self.end_ms
        );
        if self.exec_ms > 0 {
            s += &format!("; replicas take {} ms per seq", self.exec_ms);
        }
        if self.checkpoint_interval != CHECKPOINT_INTERVAL {
            s += &format!("; checkpoints every {} seqs", self.checkpoint_interval);
        }
        for n in &self.nodes {
            s += &format!("\n  node a{} at {} ms: {:?}", n.node, n.at_ms, n.behaviour);
        }
        for r in &self.replicas {
            s += &format!(
                "\n  replica app{}-e{} at {} ms: {:?}",
                r.app, r.index, r.at_ms, r.behaviour
            );
        }
        for r in &self.restarts {
            s += &format!("\n  node a{} restarts at {} ms, down {} ms", r.node, r.at_ms, r.down_ms);
        }
        for p in &self.partitions {
            s += &format!(
                "\n  partition {:?} | rest from {} to {} ms",
                p.side, p.at_ms, p.until_ms
            );
        }
        s
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.gen_range(0..xs.len())]
}
