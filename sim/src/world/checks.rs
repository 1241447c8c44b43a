//! The oracles the world checks itself: agreement as it runs, and at the
//! end liveness (answers, f+1 active and f standby per app) and the
//! history's kv and bank rules.

use super::{World, ANSWER_GRACE_MS, EPOCH_MS};
use crate::oracle;
use zz_orchestrator::controller::STANDBY_READY;
use zz_orchestrator::model::Event;
use zz_wire::{AppId, Digest, Seq};

impl World {
    /// Agreement: no two correct nodes deliver different batches at a seq.
    pub(crate) fn on_order(&mut self, slot: usize, app: AppId, seq: Seq, digest: Digest) {
        if self.nodes[slot].byzantine {
            return;
        }
        match self.agreed.get(&(app, seq)) {
            None => {
                self.stats.seqs_agreed += 1;
                self.agreed.insert((app, seq), (digest, slot));
            }
            Some((d, other)) if *d != digest => {
                let other = *other;
                self.violation(format!(
                    "app {} seq {seq}: node slot {slot} delivered {digest:?}, node slot {other} delivered {d:?}",
                    app.0
                ));
            }
            Some(_) => {}
        }
    }

    /// The controller's new events, each logged when tracing, and for every
    /// standby it paused as ready: a correct one holds what its heartbeat
    /// claimed (executed through the checkpoint, no object left to fetch).
    /// After the next fencing it may be the only copy of the state.
    pub(crate) fn check_standbys_ready(&mut self) {
        let events = self.orch.new_events(self.now);
        for e in &events {
            self.log_event(e);
        }
        let ready: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind == "paused" && e.detail == STANDBY_READY)
            .collect();
        if ready.is_empty() {
            return;
        }
        let views = self.orch.replicas(self.now);
        for e in ready {
            let Some(name) = &e.replica else { continue };
            let Some(r) = self.by_name.get(name).copied() else {
                continue;
            };
            let Some(claimed) = views.iter().find(|v| &v.id == name).map(|v| v.last_checkpoint) else {
                continue;
            };
            let Some(host) = self.replicas.get(&r).filter(|h| !h.faulty && !h.lying) else {
                continue;
            };
            let Some(x) = &host.replica else { continue };
            let (executed, stale) = (x.last_executed(), x.state().stale_count());
            if executed < claimed || stale > 0 {
                self.violation(format!(
                    "standby {name} (generation {}) was paused as ready for checkpoint {claimed} \
                     but has executed through {executed} with {stale} objects stale",
                    host.generation
                ));
            }
        }
    }

    /// At the end, long after the heal, the correct nodes of each app work
    /// in one view, and any correct node still changing views asks for at
    /// most the next one (PBFT §4.5.2: alone, it waits there), so the next
    /// view change takes it in. A node left further above would be out of
    /// every quorum until the others climbed to it.
    fn judge_views(&mut self) {
        let apps: Vec<AppId> = self.dep.app_ids().collect();
        for a in apps {
            let views: Vec<(usize, u64, bool)> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| !n.byzantine)
                .filter_map(|(slot, n)| {
                    let c = n.machine.as_ref()?.core(a)?;
                    Some((slot, c.view(), c.in_view_change()))
                })
                .collect();
            let working: Vec<u64> = views.iter().filter(|v| !v.2).map(|v| v.1).collect();
            let ok = match (working.iter().min(), working.iter().max()) {
                (Some(lo), Some(hi)) => lo == hi && views.iter().all(|v| !v.2 || v.1 <= hi + 1),
                _ => false,
            };
            if !ok {
                let list: Vec<String> = views
                    .iter()
                    .map(|(slot, v, vc)| format!("slot {slot} v{v}{}", if *vc { " changing" } else { "" }))
                    .collect();
                self.violation(format!(
                    "app {}: the correct nodes do not end working in one view: {}",
                    a.0,
                    list.join(", ")
                ));
            }
        }
    }

    pub(crate) fn log_event(&mut self, e: &Event) {
        let who = e.replica.clone().or(e.app.clone()).unwrap_or_default();
        self.log(|| format!("orchestrator event {} {who}: {}", e.kind, e.detail));
    }

    /// After the heal: every request answered, every app back to f+1
    /// active and f paused; and the kv and bank oracles over the history.
    pub(super) fn judge_end(&mut self) {
        if self.cfg.trace {
            for (slot, n) in self.nodes.iter().enumerate() {
                let Some(m) = &n.machine else { continue };
                for a in self.dep.app_ids() {
                    let (Some(c), Some(v)) = (m.core(a), m.voter(a)) else {
                        continue;
                    };
                    let line = format!(
                        "node slot {slot} app{}: view {} committed {} stable {} voter {:?} voter-stable {}",
                        a.0,
                        c.view(),
                        c.last_committed(),
                        c.stable_checkpoint(),
                        v.stats(),
                        v.stable_seq()
                    );
                    self.trace.push(line);
                }
            }
            for (r, h) in &self.replicas {
                if let Some(x) = &h.replica {
                    let line = format!(
                        "replica {r} gen {} {:?}: executed {} stable {} {:?}",
                        h.generation,
                        h.run,
                        x.last_executed(),
                        x.stable_seq(),
                        x.stats()
                    );
                    self.trace.push(line);
                }
            }
        }
        let heal = EPOCH_MS + self.plan.heal_ms;
        for r in &self.history {
            if r.ret_ms.is_some() {
                self.stats.ops_answered += 1;
            } else {
                self.stats.ops_unanswered += 1;
            }
        }
        let late: Vec<String> = self
            .history
            .iter()
            .filter(|r| r.ret_ms.is_none() && r.call_ms >= heal + ANSWER_GRACE_MS)
            .map(|r| format!("c{} {:?} at {} ms", r.client.0, r.call, r.call_ms - EPOCH_MS))
            .collect();
        if !late.is_empty() {
            self.violation(format!(
                "{} requests made {} ms or more after the heal got no answer: {}",
                late.len(),
                ANSWER_GRACE_MS,
                late.join("; ")
            ));
        }
        for v in oracle::check(&self.history) {
            self.violation(v);
        }
        let views = self.orch.replicas(self.now);
        let apps: Vec<AppId> = self.dep.app_ids().collect();
        for a in apps {
            let name = self.dep.app(a).map(|e| e.name.clone()).unwrap_or_default();
            let of = |s| views.iter().filter(|v| v.app == name && v.state == s).count();
            use zz_orchestrator::model::ReplicaState::{Active, Paused, Provisioning};
            // A paused standby the pool resumed for a refresh (or a fresh
            // replacement catching up) is still a standby.
            let (active, standby) = (of(Active), of(Paused) + of(Provisioning));
            if active != self.f + 1 || standby != self.f {
                let states: Vec<String> = views
                    .iter()
                    .filter(|v| v.app == name)
                    .map(|v| format!("{}={}", v.id, v.state.as_str()))
                    .collect();
                self.violation(format!(
                    "{name} is not back to {} active + {} standby at the end: {}",
                    self.f + 1,
                    self.f,
                    states.join(" ")
                ));
            }
        }
        self.judge_views();
        let errors = std::mem::take(&mut self.orch.errors);
        for e in errors {
            self.violation(e);
        }
    }
}
