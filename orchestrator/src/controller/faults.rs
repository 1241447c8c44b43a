//! Fault injection: signed Control commands to replicas and agreement nodes
//! over their links, with a nonce that grows per target.

use super::{CommandError, Controller};
use crate::metrics as m;
use crate::model::{FaultKind, FaultRecord};
use crate::store::Change;
use std::collections::BTreeSet;
use zz_wire::{Control, ControlCmd, Msg, NodeFault, NodeId, Principal, ReplicaFault, ReplicaId};

/// A validated injection: the kind always matches the target's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    Replica(ReplicaId, ReplicaFault),
    Node(NodeId, NodeFault),
}

impl FaultTarget {
    fn principal(self) -> Principal {
        match self {
            FaultTarget::Replica(r, _) => Principal::Replica(r),
            FaultTarget::Node(n, _) => Principal::Node(n),
        }
    }

    fn kind(self) -> FaultKind {
        match self {
            FaultTarget::Replica(_, k) => FaultKind::Replica(k),
            FaultTarget::Node(_, k) => FaultKind::Node(k),
        }
    }
}

fn set_cmd(kind: FaultKind) -> ControlCmd {
    match kind {
        FaultKind::Replica(k) => ControlCmd::SetFault(k),
        FaultKind::Node(k) => ControlCmd::SetNodeFault(k),
    }
}

impl Controller {
    /// Refuses a fault that would leave more than f replicas of one app, or
    /// more than f agreement nodes, with an injected fault at once: zz
    /// promises nothing past f (f+1 matching wrong answers certify; PBFT
    /// loses safety), so such an injection shows the model broken, not zz.
    /// Every kind counts, even `slow`: the bound is on faulty parts.
    pub(super) fn within_f(&self, target: FaultTarget) -> Result<(), CommandError> {
        let who = target.principal();
        let same_group = |p: &Principal| match (p, who) {
            (Principal::Replica(a), Principal::Replica(b)) => a.app == b.app,
            (Principal::Node(_), Principal::Node(_)) => true,
            _ => false,
        };
        let mut faulty: BTreeSet<Principal> = self.faults.values().map(|f| f.target).filter(same_group).collect();
        faulty.insert(who);
        let f = self.dep.f;
        if faulty.len() <= f {
            return Ok(());
        }
        let names: Vec<String> = faulty.iter().map(|p| self.dep.name(*p)).collect();
        let (what, why) = match who {
            Principal::Replica(r) => (
                format!("replicas of {}", self.app_name(r.app)),
                "f+1 matching wrong answers would then certify",
            ),
            _ => (
                "agreement nodes".to_string(),
                "PBFT then guarantees neither safety nor progress",
            ),
        };
        Err(CommandError::Refused(format!(
            "refused: {} {what} would have a fault at once ({}), more than f = {f}; {why}, which demonstrates \
             breaking zz's fault model, not zz. Pass \"force\": true (zz inject --force) to inject it anyway",
            faulty.len(),
            names.join(", ")
        )))
    }

    pub(super) fn inject(&mut self, target: FaultTarget, duration_ms: Option<u64>) -> u64 {
        let now = self.clock.now_ms();
        let id = self.next_fault;
        self.next_fault += 1;
        let who = target.principal();
        let kind = target.kind();
        let delivered = self.send_control(who, set_cmd(kind));
        let apps: Vec<zz_wire::AppId> = match who {
            Principal::Replica(r) => vec![r.app],
            _ => self.dep.app_ids().collect(),
        };
        for app in apps {
            self.tracker.on_injected(app, now);
        }
        let rec = FaultRecord {
            id,
            target: who,
            target_name: self.dep.name(who),
            kind,
            created_at: now,
            expires_at: duration_ms.map(|d| now.saturating_add(d)),
            delivered,
        };
        metrics::counter!(m::FAULTS_INJECTED, "kind" => kind.as_str()).increment(1);
        let detail = format!(
            "fault {id}: {} on {}{}{}",
            kind.as_str(),
            rec.target_name,
            duration_ms.map_or_else(String::new, |d| format!(" for {d} ms")),
            if delivered {
                ""
            } else {
                " (not connected; sent when it connects)"
            }
        );
        self.pending.push(Change::Fault(rec.clone()));
        self.faults.insert(id, rec);
        self.emit_for(who, "fault-injected", detail);
        id
    }

    pub(super) fn clear_fault(&mut self, id: u64, why: &str) -> Result<(), CommandError> {
        let rec = self
            .faults
            .remove(&id)
            .ok_or_else(|| CommandError::NotFound(format!("fault {id}")))?;
        self.pending.push(Change::RemoveFault(id));
        // ClearFaults clears every fault of the target; the others go again.
        self.send_control(rec.target, ControlCmd::ClearFaults);
        self.resend_faults(rec.target);
        self.emit_for(
            rec.target,
            "fault-cleared",
            format!("fault {id}: {} on {} ({why})", rec.kind.as_str(), rec.target_name),
        );
        Ok(())
    }

    /// Forgets the faults injected into an instance that was fenced: its
    /// replacement comes from a clean image and must not inherit them.
    pub(super) fn forget_faults(&mut self, who: Principal) {
        let ids: Vec<u64> = self.faults.values().filter(|f| f.target == who).map(|f| f.id).collect();
        for id in ids {
            if let Some(rec) = self.faults.remove(&id) {
                self.pending.push(Change::RemoveFault(id));
                self.emit_for(
                    who,
                    "fault-cleared",
                    format!(
                        "fault {id}: {} on {} (instance fenced)",
                        rec.kind.as_str(),
                        rec.target_name
                    ),
                );
            }
        }
    }

    pub(super) fn expire_faults(&mut self, now: u64) {
        let due: Vec<u64> = self
            .faults
            .values()
            .filter(|f| f.expires_at.is_some_and(|t| t <= now))
            .map(|f| f.id)
            .collect();
        for id in due {
            let _ = self.clear_fault(id, "duration elapsed");
        }
    }

    /// Sends the target its active faults (after a reconnect or a clear).
    pub(super) fn resend_faults(&mut self, who: Principal) {
        let kinds: Vec<(u64, FaultKind)> = self
            .faults
            .values()
            .filter(|f| f.target == who)
            .map(|f| (f.id, f.kind))
            .collect();
        for (id, kind) in kinds {
            let delivered = self.send_control(who, set_cmd(kind));
            if let Some(f) = self.faults.get_mut(&id) {
                if delivered && !f.delivered {
                    f.delivered = true;
                    self.pending.push(Change::Fault(f.clone()));
                }
            }
        }
    }

    /// Signs and queues a Control; false if the target has no live link.
    fn send_control(&mut self, target: Principal, cmd: ControlCmd) -> bool {
        let Some((_, tx)) = self.links.get(&target) else {
            return false;
        };
        let key = self.dep.name(target);
        let last = self.nonces.get(&key).copied().unwrap_or(0);
        // Wall-clock floor: nonces keep growing even if the store was lost.
        let nonce = (last + 1).max(self.clock.now_ms());
        let msg = Msg::Control(self.identity.sign(Control { target, nonce, cmd }));
        if tx.try_send(msg).is_err() {
            metrics::counter!(m::DROPPED, "reason" => "link-queue-full").increment(1);
            return false;
        }
        self.nonces.insert(key.clone(), nonce);
        self.pending.push(Change::Nonce(key, nonce));
        true
    }
}
