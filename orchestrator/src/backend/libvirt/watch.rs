//! Notices VMs that stopped on their own (the agent exited and the guest
//! powered off, qemu crashed, someone ran `virsh destroy`) by polling the
//! domain state of every instance the backend believes is up.

use super::{hv, Inner};
use crate::backend::BackendEvent;
use std::sync::Weak;
use std::time::Duration;

/// One tracked instance at the time of a poll.
struct Probe {
    name: String,
    seq: u64,
    uri: String,
    domain: String,
}

/// Runs until the backend is dropped.
pub async fn run(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let probes: Vec<Probe> = strong
            .tracked()
            .iter()
            .map(|(name, t)| Probe {
                name: name.clone(),
                seq: t.seq,
                uri: t.uri.clone(),
                domain: t.domain.clone(),
            })
            .collect();
        if probes.is_empty() {
            continue;
        }
        let worker = strong.clone();
        let polled = tokio::task::spawn_blocking(move || {
            probes
                .into_iter()
                .map(|p| {
                    let seen = worker.hosts.conn(&p.uri).and_then(|c| hv::seen(&c, &p.domain));
                    (p, seen)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(polled) = polled else {
            continue;
        };
        for (p, seen) in polled {
            let status = match seen {
                Ok(hv::Seen::Running | hv::Seen::Paused) => continue,
                Ok(hv::Seen::ShutOff { .. }) => "shut off (guest powered off or was destroyed)",
                Ok(hv::Seen::Crashed) => "crashed",
                Ok(hv::Seen::Gone) => "domain vanished (undefined behind our back)",
                // An unreachable host is not a dead VM: other detectors
                // (agent heartbeats, reply audits) decide about that.
                Err(e) => {
                    tracing::debug!(domain = %p.domain, "state poll failed: {e}");
                    continue;
                }
            };
            // Only if nothing (hibernate, destroy, a restart) replaced the
            // entry since the snapshot: those transitions are deliberate.
            let handle = {
                let mut tracked = strong.tracked();
                match tracked.get(&p.name) {
                    Some(t) if t.seq == p.seq => tracked.remove(&p.name).map(|t| t.handle),
                    _ => None,
                }
            };
            if let Some(handle) = handle {
                tracing::warn!(domain = %p.domain, status, "replica VM stopped on its own");
                let event = BackendEvent::Exited {
                    handle,
                    status: status.to_string(),
                };
                if strong.events.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}
