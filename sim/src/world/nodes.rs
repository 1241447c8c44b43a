//! Agreement nodes in the world: the real node machine, its store in
//! memory, its timers on the world's clock, crash and restart.

use super::{describe, Dest, Ev, World, NODE_RESTART_MS};
use rand::Rng;
use zz_agreement::node::links::verify_client_requests;
use zz_agreement::node::{authorised, NodeOut};
use zz_wire::{Msg, NodeFault, NodeId, Principal};

/// What a `slow` node adds to everything it sends (its driver sleeps this
/// long after each burst).
const SLOW_MS: u64 = 50;

impl World {
    /// Starts (or restarts) the node in `slot` from what its store holds.
    pub(crate) fn start_node(&mut self, slot: usize) {
        if self.nodes[slot].machine.is_some() {
            return;
        }
        let id = self.nodes[slot].id;
        let Some(identity) = self.ids.get(&Principal::Node(id)).cloned() else {
            return;
        };
        let restored = self.nodes[slot].store.restored();
        let seed_source = self.rng.gen();
        let keys = self.keys.clone();
        let machine =
            zz_agreement::node::NodeMachine::with_keys(self.dep.clone(), identity, keys, restored, seed_source);
        let mut m = match machine {
            Ok(m) => m,
            Err(e) => {
                self.violation(format!("node {id} cannot start from its store: {e}"));
                return;
            }
        };
        self.log(|| format!("node {id} (slot {slot}) starts"));
        let outs = m.start(self.now);
        self.nodes[slot].machine = Some(m);
        let link = self.link_id();
        self.nodes[slot].link = link;
        self.orch.link_up(self.now, Principal::Node(id), link);
        self.after_orch();
        self.node_outs(slot, outs);
    }

    /// A power cut: the process is gone, its store stays.
    pub(crate) fn crash_node(&mut self, slot: usize) {
        if self.nodes[slot].machine.take().is_none() {
            return;
        }
        let id = self.nodes[slot].id;
        self.log(|| format!("node {id} (slot {slot}) crashes"));
        self.stats.node_restarts += 1;
        self.nodes[slot].timers.clear();
        let link = self.nodes[slot].link;
        self.orch.link_down(self.now, link);
        self.after_orch();
    }

    /// What the node's link layer checks before the machine sees a message.
    pub(crate) fn node_msg(&mut self, slot: usize, from: Principal, msg: Msg) {
        if self.nodes[slot].machine.is_none() {
            return;
        }
        if !zz_agreement::node::allowed(from, &msg)
            || !authorised(&msg, self.dep.n())
            || msg.verify(&self.keys).is_err()
            || verify_client_requests(&msg, &self.keys).is_err()
        {
            return;
        }
        if self.cfg.trace && !matches!(msg, Msg::Heartbeat(_)) {
            let to = self.nodes[slot].id;
            self.log(|| format!("{from} -> {to}: {}", describe(&msg)));
        }
        let now = self.now;
        let Some(m) = self.nodes[slot].machine.as_mut() else {
            return;
        };
        let outs = m.on_msg(now, from, msg);
        self.node_outs(slot, outs);
    }

    /// Carries out a node machine's outputs in order. Writes go to the
    /// store at once, so everything after them leaves after them.
    pub(crate) fn node_outs(&mut self, slot: usize, outs: Vec<NodeOut>) {
        let me = self.nodes[slot].id;
        let from = Principal::Node(me);
        let slow = self.nodes[slot].machine.as_ref().and_then(|m| m.fault()) == Some(NodeFault::Slow);
        let extra = if slow { SLOW_MS } else { 0 };
        let link = self.nodes[slot].link;
        for o in outs {
            match o {
                NodeOut::Write(w) => self.nodes[slot].store.commit(std::slice::from_ref(&w)),
                NodeOut::ToPeer(to, m) => self.node_to_node(slot, to, m, extra),
                NodeOut::ToPeers(m) => {
                    for j in 0..self.dep.n() as u16 {
                        if j != me.0 {
                            self.node_to_node(slot, NodeId(j), m.clone(), extra);
                        }
                    }
                }
                NodeOut::ToOrchestrator(m) => self.send(from, link, Dest::Orch, m, extra),
                NodeOut::ToInbound(Principal::Client(c), m) => {
                    self.send(from, 0, Dest::Client(usize::from(c.0)), m, extra);
                }
                NodeOut::ToInbound(Principal::Replica(r), m) => self.send(from, 0, Dest::Replica(r), m, extra),
                NodeOut::ToInbound(..) => {}
                NodeOut::ToReplicas(app, m) => {
                    if let Msg::Order(o) = &m {
                        self.on_order(slot, o.app, o.seq, o.digest);
                        if self.cfg.trace {
                            let batches: Vec<String> = o
                                .proposal
                                .iter()
                                .flat_map(|p| p.requests.iter())
                                .map(|b| format!("{}#{}", b.body.client, b.body.first_id))
                                .collect();
                            self.log(|| format!("{me} orders app{} s{}: {}", o.app.0, o.seq, batches.join(" ")));
                        }
                    }
                    let rs: Vec<_> = self.dep.replicas(app).collect();
                    for r in rs {
                        self.send(from, 0, Dest::Replica(r), m.clone(), extra);
                    }
                }
                NodeOut::SetTimer(t, ms) => {
                    self.set_timer(slot, t, ms);
                }
                NodeOut::CancelTimer(t) => {
                    self.nodes[slot].timers.remove(&t);
                }
                NodeOut::Exit(code) => {
                    self.log(|| format!("node {me} exits with {code}"));
                    self.crash_node(slot);
                    self.push(self.now + NODE_RESTART_MS, Ev::NodeRestart { slot });
                    return;
                }
            }
        }
    }

    /// Arms `t`; a timer set again or cancelled never fires the old way.
    fn set_timer(&mut self, slot: usize, t: zz_agreement::node::NodeTimer, ms: u64) {
        let gen = self.link_id();
        self.nodes[slot].timers.insert(t, gen);
        self.push(self.now + ms, Ev::NodeTimer { slot, timer: t, gen });
    }

    /// Byzantine middleware, then Twins' split, then the network.
    fn node_to_node(&mut self, slot: usize, to: NodeId, msg: Msg, extra: u64) {
        let me = self.nodes[slot].id;
        if let Some((twin, twin_slot, side)) = &self.twins {
            if me.0 == *twin && (slot == *twin_slot) != side.contains(&to.0) {
                return;
            }
        }
        for (m, e) in self.through_middleware(slot, to, msg) {
            self.send_to_node(Principal::Node(me), to, m, extra + e);
        }
    }
}
