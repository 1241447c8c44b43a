//! Per-generation replica keys (DESIGN.md, "Added in the second round"):
//! every replacement signs with a fresh key, which the nodes are told of
//! (and relay to the app's replicas) before it can open a link, so a
//! fenced instance's key, stolen or not, stops counting.
//!
//! The key of generation g ≥ 2 is derived from the orchestrator's own
//! secret, the replica and g: a restarted orchestrator re-derives it, and
//! no one without the orchestrator's key can.

use super::Controller;
use crate::backend::GenerationKey;
use zz_wire::{Hasher, Identity, Msg, Principal, ReplicaId, ReplicaKey, Signed};

/// Earlier generations' announcements kept per replica.
pub(super) const RETIRED_KEPT: usize = 8;

impl Controller {
    /// The identity replica `id`'s instance of `generation` signs with.
    fn generation_identity(&self, id: ReplicaId, generation: u64) -> Identity {
        let context = Hasher::new("zz/replica-generation/v1")
            .u16(id.app.0)
            .u16(id.index)
            .u64(generation)
            .finish();
        self.identity.derive(Principal::Replica(id), &context)
    }

    /// A fresh key for `id`'s new `generation`: signed, made current in
    /// this process's keyring and sent to every connected node. The key it
    /// replaces still counts for checkpoints up to what any node had
    /// committed, plus a checkpoint interval (what the fenced instance may
    /// have signed while the nodes' heartbeats were on their way).
    pub(super) fn announce_key(&mut self, id: ReplicaId, generation: u64) -> Signed<ReplicaKey> {
        let committed = self
            .nodes
            .values()
            .filter_map(|n| n.apps.get(&id.app))
            .map(|a| a.last_committed)
            .max()
            .unwrap_or(0);
        let cert = self.identity.sign(ReplicaKey {
            replica: id,
            generation,
            public_key: self.generation_identity(id, generation).public(),
            retired_through: committed.saturating_add(self.dep.checkpoint_interval),
        });
        if let Err(e) = cert.apply(&self.keys) {
            tracing::error!(error = %e, "the orchestrator's own key announcement does not verify");
        }
        for (who, (_, tx)) in &self.links {
            if matches!(who, Principal::Node(_)) {
                let _ = tx.try_send(Msg::ReplicaKey(Box::new(cert.clone())));
            }
        }
        cert
    }

    /// What a backend needs to start `id`'s instance of `generation`:
    /// nothing for generation 1 (the deployment's key file), else the
    /// derived identity and the announcement the agent shows for it.
    pub(super) fn generation_key(&self, id: ReplicaId, generation: u64) -> Option<GenerationKey> {
        let cert = self.replicas.get(&id)?.key.as_deref()?.clone();
        (cert.body.generation == generation).then(|| self.generation_key_for(cert))
    }

    /// The identity `cert` announces, with it.
    pub(super) fn generation_key_for(&self, cert: Signed<ReplicaKey>) -> GenerationKey {
        GenerationKey {
            identity: self.generation_identity(cert.body.replica, cert.body.generation),
            cert,
        }
    }

    /// Tells a node that just linked every replacement key (nodes keep
    /// them, but one may have restarted from an older store or missed one).
    pub(super) fn resend_keys(&self, who: Principal) {
        if !matches!(who, Principal::Node(_)) {
            return;
        }
        let Some((_, tx)) = self.links.get(&who) else { return };
        for cert in self
            .replicas
            .values()
            .flat_map(|r| r.retired_keys.iter().chain(r.key.as_deref()))
        {
            let _ = tx.try_send(Msg::ReplicaKey(Box::new(cert.clone())));
        }
    }

    /// Makes the stored replacement keys current in `keys` (at start-up).
    pub(super) fn apply_stored_keys(&self) {
        for cert in self
            .replicas
            .values()
            .flat_map(|r| r.retired_keys.iter().chain(r.key.as_deref()))
        {
            if let Err(e) = cert.apply(&self.keys) {
                tracing::warn!(error = %e, replica = %self.dep.replica_name(cert.body.replica), "stored replica key does not verify; ignored");
            }
        }
    }
}
