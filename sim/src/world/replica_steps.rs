//! Execution replicas in the world: what the backend's calls do to their
//! instances, and the agent's loop (one input at a time, ticks, heartbeats,
//! background sync) with blocking fetches charged as busy time.

use super::{describe, Dest, Ev, World};
use crate::backend::Op;
use crate::replicas::{Input, Run, SimSource, HEARTBEAT_MS, TICK_MS};
use rand::Rng;
use zz_agent::{Config, Out, Replica};
use zz_orchestrator::backend::{BackendEvent, Handle};
use zz_wire::{Msg, NodeId, Principal, ReplicaId};

/// Objects a background sync installs per tick at most (the agent's bucket batch).
const BACKGROUND_BUCKETS: usize = 512;

impl World {
    fn host_of(&self, h: &Handle) -> Option<ReplicaId> {
        self.by_name.get(&h.name).copied()
    }

    /// Carries out one backend call on the simulated hypervisor.
    pub(crate) fn backend_op(&mut self, op: Op) {
        self.log(|| format!("backend {op:?}"));
        let (h, fresh) = match &op {
            Op::Start(h) => (h, true),
            Op::Restore(h) => (h, false),
            Op::Pause(h) | Op::Resume(h) | Op::Hibernate(h) | Op::Destroy(h) => (h, false),
        };
        let Some(r) = self.host_of(h) else { return };
        let now = self.now;
        match op {
            Op::Start(h) | Op::Restore(h) => {
                let boot = if fresh {
                    self.rng.gen_range(150..800)
                } else {
                    self.rng.gen_range(200..400)
                };
                let Some(host) = self.replicas.get_mut(&r) else { return };
                if fresh {
                    host.stop();
                    host.faulty = false;
                    host.lying = false;
                }
                host.generation = h.generation;
                host.run = Run::Booting;
                host.epoch += 1;
                let epoch = host.epoch;
                self.push(now + boot, Ev::ReplicaUp { r, epoch, fresh });
            }
            Op::Pause(h) => {
                let Some(host) = self.replicas.get_mut(&r).filter(|x| x.generation == h.generation) else {
                    return;
                };
                // Also cancels a resume still under way.
                if matches!(host.run, Run::Running | Run::Paused) {
                    host.run = Run::Paused;
                    host.epoch += 1;
                    host.scheduled = false;
                    host.tick_queued = false;
                }
            }
            Op::Resume(h) => {
                let delay = self.rng.gen_range(1..15);
                let Some(host) = self.replicas.get_mut(&r).filter(|x| x.generation == h.generation) else {
                    return;
                };
                if host.run == Run::Paused {
                    // Still paused until the resume completes: what arrives
                    // meanwhile waits in its sockets, as before.
                    host.epoch += 1;
                    let epoch = host.epoch;
                    self.push(now + delay, Ev::ReplicaUp { r, epoch, fresh: false });
                }
            }
            Op::Hibernate(h) => {
                if let Some(host) = self.replicas.get_mut(&r).filter(|x| x.generation == h.generation) {
                    host.run = Run::Paused;
                    host.epoch += 1;
                    host.scheduled = false;
                    host.tick_queued = false;
                }
            }
            Op::Destroy(h) => {
                let Some(host) = self.replicas.get(&r).filter(|x| x.generation == h.generation) else {
                    return;
                };
                let (correct, name, link) = (host.run != Run::Gone && !host.faulty, host.name.clone(), host.link);
                if correct {
                    self.violation(format!(
                        "correct replica {name} (generation {}) was fenced",
                        h.generation
                    ));
                }
                self.stats.fenced += 1;
                if let Some(host) = self.replicas.get_mut(&r) {
                    host.stop();
                }
                self.orch.link_down(now, link);
                self.after_orch();
            }
        }
    }

    /// Boot, restore or resume finished: the instance runs and dials out.
    pub(crate) fn replica_up(&mut self, r: ReplicaId, epoch: u64, fresh: bool) {
        let now = self.now;
        let dep = self.dep.clone();
        let Some(host) = self.replicas.get_mut(&r).filter(|h| h.epoch == epoch) else {
            return;
        };
        let resumed = host.replica.is_some() && !fresh;
        if host.replica.is_none() {
            let name = host.name.clone();
            let Some(identity) = self
                .orch
                .backend
                .identity(&name)
                .or_else(|| self.ids.get(&Principal::Replica(r)).cloned())
            else {
                return;
            };
            let Some(app) = dep.app(r.app).and_then(|a| zz_agent::app::build(&a.kind, &a.name)) else {
                return;
            };
            host.replica = Some(Replica::new(
                Config::from_deployment(&dep, r),
                identity,
                self.keys.clone(),
                app,
            ));
        }
        host.run = Run::Running;
        host.epoch += 1;
        let epoch = host.epoch;
        let outs = if resumed {
            // A resumed process keeps its links; it just runs again.
            Vec::new()
        } else {
            host.replica.as_mut().map(|x| x.start(now)).unwrap_or_default()
        };
        self.log(|| format!("replica {r} up ({})", if resumed { "resumed" } else { "started" }));
        if !resumed {
            let old = self.replicas.get(&r).map(|h| h.link).unwrap_or(0);
            let link = self.link_id();
            if let Some(h) = self.replicas.get_mut(&r) {
                h.link = link;
            }
            if old != 0 {
                self.orch.link_down(now, old);
            }
            self.orch.link_up(now, Principal::Replica(r), link);
            self.after_orch();
        }
        self.push(now, Ev::ReplicaTick { r, epoch });
        self.wake_replica(r);
        self.replica_outs(r, outs);
    }

    pub(crate) fn replica_msg(&mut self, r: ReplicaId, from: Principal, link: u64, msg: Msg) {
        let Some(host) = self.replicas.get_mut(&r) else { return };
        // The orchestrator's link to an instance dies with it.
        if from == Principal::Orchestrator && link != host.link {
            return;
        }
        if host.offer(from, msg) {
            self.wake_replica(r);
        }
    }

    /// Makes sure a run is pending for a running replica with input queued.
    fn wake_replica(&mut self, r: ReplicaId) {
        let now = self.now;
        let Some(host) = self.replicas.get_mut(&r) else { return };
        if host.run != Run::Running || host.scheduled || host.queue.is_empty() {
            return;
        }
        host.scheduled = true;
        let (at, epoch) = (host.busy_until.max(now), host.epoch);
        self.push(at, Ev::ReplicaRun { r, epoch });
    }

    pub(crate) fn replica_tick(&mut self, r: ReplicaId, epoch: u64) {
        let now = self.now;
        let Some(host) = self
            .replicas
            .get_mut(&r)
            .filter(|h| h.epoch == epoch && h.run == Run::Running)
        else {
            return;
        };
        if !host.tick_queued {
            host.tick_queued = true;
            host.queue.push_back(Input::Tick);
        }
        self.push(now + TICK_MS, Ev::ReplicaTick { r, epoch });
        self.wake_replica(r);
    }

    /// The replica thread takes its next input.
    pub(crate) fn replica_run(&mut self, r: ReplicaId, epoch: u64) {
        let now = self.now;
        let Some(mut host) = self.replicas.remove(&r) else {
            return;
        };
        if host.epoch != epoch || host.run != Run::Running {
            self.replicas.insert(r, host);
            return;
        }
        host.scheduled = false;
        let (Some(input), Some(mut replica)) = (host.queue.pop_front(), host.replica.take()) else {
            self.replicas.insert(r, host);
            return;
        };
        let mut heartbeat = None;
        let executed = replica.last_executed();
        let mut src = SimSource {
            peers: &self.replicas,
            rng: &mut self.rng,
            now,
            min_delay_ms: self.plan.min_delay_ms,
            max_delay_ms: self.plan.max_delay_ms,
            cost: 0,
            heard_from: &mut host.heard_from,
            background: false,
        };
        let outs = match input {
            Input::Msg(from, msg) => {
                if self.cfg.trace && !matches!(msg, Msg::Heartbeat(_)) {
                    let line = format!("{from} -> {r}: {}", describe(&msg));
                    self.trace.push(format!("{:>7} {line}", now - super::EPOCH_MS));
                }
                replica.on_msg(now, from, msg, &mut src)
            }
            Input::Tick => {
                host.tick_queued = false;
                let mut out = replica.on_tick(now, &mut src);
                if now >= host.last_heartbeat + HEARTBEAT_MS {
                    host.last_heartbeat = now;
                    heartbeat = replica
                        .heartbeat(now)
                        .map(|hb| if host.lying { lie(&self.ids, r, hb) } else { hb });
                    if let Some(hb) = &heartbeat {
                        out.push(Out::Broadcast(hb.clone()));
                        out.push(Out::ToOrchestrator(hb.clone()));
                    }
                }
                if host.queue.is_empty() && replica.state().stale_count() > 0 {
                    src.background = true;
                    let _ = replica.background_sync(BACKGROUND_BUCKETS, &mut src);
                }
                out
            }
        };
        let waited = src.cost;
        let cost = waited + (replica.last_executed().saturating_sub(executed)) * self.plan.exec_ms;
        host.busy_until = now + cost;
        // While a fetch blocks the replica thread the agent repeats the
        // heartbeat it made last to the orchestrator (`NetSource::keep_alive`);
        // executing sends none.
        if let Some(hb) = host.heartbeat.clone().filter(|_| waited > HEARTBEAT_MS) {
            for at in (HEARTBEAT_MS..waited).step_by(HEARTBEAT_MS as usize) {
                self.send(Principal::Replica(r), host.link, Dest::Orch, hb.clone(), at);
            }
        }
        if heartbeat.is_some() {
            host.heartbeat = heartbeat;
        }
        host.replica = Some(replica);
        self.replicas.insert(r, host);
        self.replica_outs(r, outs);
        self.wake_replica(r);
    }

    /// Sends a replica's outputs once its busy time has passed.
    fn replica_outs(&mut self, r: ReplicaId, outs: Vec<Out>) {
        let Some(host) = self.replicas.get(&r) else { return };
        let mut extra = host.busy_until.saturating_sub(self.now);
        let link = host.link;
        let from = Principal::Replica(r);
        for o in outs {
            match o {
                Out::Broadcast(m) => {
                    for n in 0..self.dep.n() as u16 {
                        self.send_to_node(from, NodeId(n), m.clone(), extra);
                    }
                }
                Out::ToNode(n, m) => self.send_to_node(from, n, m, extra),
                Out::ToOrchestrator(m) => self.send(from, link, Dest::Orch, m, extra),
                Out::Delay(d) => {
                    extra += u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                    if let Some(h) = self.replicas.get_mut(&r) {
                        h.busy_until = self.now + extra;
                    }
                }
                Out::Exit(code) => {
                    self.log(|| format!("replica {r} exits with {code}"));
                    self.replica_exited(r, code);
                    return;
                }
            }
        }
    }

    fn replica_exited(&mut self, r: ReplicaId, code: i32) {
        let Some(host) = self.replicas.get_mut(&r) else { return };
        let handle = Handle {
            name: host.name.clone(),
            generation: host.generation,
            token: format!("{}#{}", host.name, host.generation),
        };
        let link = host.link;
        host.stop();
        self.orch.backend.exited(&handle);
        self.orch.link_down(self.now, link);
        self.orch.backend_event(
            self.now,
            BackendEvent::Exited {
                handle,
                status: format!("exit status {code}"),
            },
        );
        self.after_orch();
    }
}

/// A heartbeat claiming progress the replica never made, re-signed.
fn lie(ids: &std::collections::BTreeMap<Principal, zz_wire::Identity>, r: ReplicaId, hb: Msg) -> Msg {
    let (Msg::Heartbeat(s), Some(id)) = (&hb, ids.get(&Principal::Replica(r))) else {
        return hb;
    };
    let mut b = s.body;
    b.last_executed += 1_000;
    b.last_checkpoint += 1_000;
    b.stale_objects = 0;
    Msg::Heartbeat(id.sign(b))
}
