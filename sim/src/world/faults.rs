//! The plan carried out: faults start at their times, partitions open and
//! close, and at the heal every fault stops.

use super::{Ev, NodeHost, World, EPOCH_MS};
use crate::mutate::Mutate;
use crate::plan::{NodeBehaviour, ReplicaBehaviour};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use zz_agreement::sim::byz::Replay;
use zz_orchestrator::controller::FaultTarget;
use zz_wire::{AppId, NodeId, ReplicaId};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    Node(usize),
    Replica(usize),
    PartitionStart(usize),
    PartitionEnd(usize),
    Restart(usize),
}

impl World {
    pub(crate) fn schedule_plan(&mut self) {
        let at = |ms: u64| EPOCH_MS + ms;
        let mut steps = Vec::new();
        for (i, n) in self.plan.nodes.iter().enumerate() {
            steps.push((at(n.at_ms), Step::Node(i)));
        }
        for (i, r) in self.plan.replicas.iter().enumerate() {
            steps.push((at(r.at_ms), Step::Replica(i)));
        }
        for (i, p) in self.plan.partitions.iter().enumerate() {
            steps.push((at(p.at_ms), Step::PartitionStart(i)));
            steps.push((at(p.until_ms), Step::PartitionEnd(i)));
        }
        for (i, r) in self.plan.restarts.iter().enumerate() {
            steps.push((at(r.at_ms), Step::Restart(i)));
        }
        for (t, s) in steps {
            self.push(t, Ev::Fault(s));
        }
        self.push(at(self.plan.heal_ms), Ev::Heal);
    }

    pub(crate) fn fault(&mut self, step: Step) {
        let heal = EPOCH_MS + self.plan.heal_ms;
        match step {
            Step::Node(i) => {
                let p = self.plan.nodes[i].clone();
                let slot = usize::from(p.node);
                self.log(|| format!("FAULT node a{}: {:?}", p.node, p.behaviour));
                match p.behaviour {
                    NodeBehaviour::CrashRestart { down_ms } => {
                        self.crash_node(slot);
                        let back = (self.now + down_ms).min(heal);
                        self.push(back, Ev::NodeRestart { slot });
                    }
                    NodeBehaviour::CrashTwice { down_ms } => {
                        self.crash_node(slot);
                        let back = self.now + down_ms;
                        self.push(back, Ev::NodeRestart { slot });
                        let again = back + down_ms / 2 + 1;
                        if again + down_ms < heal {
                            self.push(again, Ev::NodeCrash { slot, down_ms });
                        }
                    }
                    NodeBehaviour::Twins => self.start_twin(slot),
                    NodeBehaviour::Mutate { rate } => {
                        self.nodes[slot].byzantine = true;
                        self.nodes[slot].middleware.push(Box::new(Mutate::new(rate)));
                    }
                    NodeBehaviour::Replay { rate } => {
                        self.nodes[slot].byzantine = true;
                        self.nodes[slot].middleware.push(Box::new(Replay::new(rate)));
                    }
                    NodeBehaviour::Inject(kind) => {
                        self.nodes[slot].byzantine = true;
                        match self.orch.inject(self.now, FaultTarget::Node(NodeId(p.node), kind)) {
                            Ok(id) => self.injected.push(id),
                            Err(e) => self.log(|| format!("injection refused: {e}")),
                        }
                        self.after_orch();
                    }
                }
            }
            Step::Replica(i) => {
                let p = self.plan.replicas[i].clone();
                let r = ReplicaId {
                    app: AppId(p.app),
                    index: p.index,
                };
                self.log(|| format!("FAULT replica {r}: {:?}", p.behaviour));
                let Some(host) = self.replicas.get_mut(&r) else { return };
                host.faulty = true;
                match p.behaviour {
                    ReplicaBehaviour::LyingHeartbeats => host.lying = true,
                    ReplicaBehaviour::Inject(kind) => {
                        match self.orch.inject(self.now, FaultTarget::Replica(r, kind)) {
                            Ok(id) => self.injected.push(id),
                            Err(e) => {
                                self.log(|| format!("injection refused: {e}"));
                                if let Some(h) = self.replicas.get_mut(&r) {
                                    h.faulty = false;
                                }
                            }
                        }
                        self.after_orch();
                    }
                }
            }
            Step::Restart(i) => {
                let r = self.plan.restarts[i].clone();
                self.log(|| format!("RESTART node a{} for {} ms", r.node, r.down_ms));
                self.push(
                    self.now,
                    Ev::NodeCrash {
                        slot: usize::from(r.node),
                        down_ms: r.down_ms,
                    },
                );
            }
            Step::PartitionStart(i) => {
                let pairs = self.partition_pairs(i);
                let side = self.plan.partitions[i].side.clone();
                self.log(|| format!("partition {side:?}"));
                self.cut.extend(pairs);
            }
            Step::PartitionEnd(i) => {
                for p in self.partition_pairs(i) {
                    self.cut.remove(&p);
                }
            }
        }
    }

    fn partition_pairs(&self, i: usize) -> Vec<(u16, u16)> {
        let side: BTreeSet<u16> = self.plan.partitions[i].side.iter().copied().collect();
        let n = self.dep.n() as u16;
        let mut pairs = Vec::new();
        for a in side.iter().copied() {
            for b in (0..n).filter(|b| !side.contains(b)) {
                pairs.push((a, b));
                pairs.push((b, a));
            }
        }
        pairs
    }

    /// A second live instance of node `slot`'s identity, from a copy of its
    /// store; a random part of the other nodes talks to it instead.
    fn start_twin(&mut self, slot: usize) {
        let id = self.nodes[slot].id;
        let others: Vec<u16> = (0..self.dep.n() as u16).filter(|x| *x != id.0).collect();
        let side: BTreeSet<u16> = others.iter().copied().filter(|_| self.rng.gen_bool(0.5)).collect();
        let twin_slot = self.nodes.len();
        self.nodes[slot].byzantine = true;
        self.nodes.push(NodeHost {
            id,
            machine: None,
            store: self.nodes[slot].store.clone(),
            timers: BTreeMap::new(),
            middleware: Vec::new(),
            byzantine: true,
            link: 0,
            twin: true,
        });
        self.twins = Some((id.0, twin_slot, side));
        self.start_node(twin_slot);
    }

    /// Faults stop: the network heals, injected faults are cleared, the
    /// twin retires, crashed nodes are back.
    pub(crate) fn heal(&mut self) {
        self.log(|| "HEAL".to_string());
        self.cut.clear();
        self.loss = 0.0;
        self.duplicate = 0.0;
        for slot in 0..self.nodes.len() {
            self.nodes[slot].middleware.clear();
            if self.nodes[slot].twin {
                self.crash_node(slot);
            }
        }
        self.twins = None;
        for id in std::mem::take(&mut self.injected) {
            self.orch.clear_fault(self.now, id);
        }
        self.after_orch();
        for h in self.replicas.values_mut() {
            h.lying = false;
        }
        for slot in 0..self.nodes.len() {
            if !self.nodes[slot].twin && self.nodes[slot].machine.is_none() {
                self.start_node(slot);
            }
        }
    }
}
