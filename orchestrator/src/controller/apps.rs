//! Tenants' Wasm apps: which deployment slot each occupies, and the slots'
//! replicas. A slot (a deployment app of kind `wasm`) with no app has no
//! replicas; deploying an app provisions f+1 active and f standby replicas
//! for its slot, removing it destroys them.
//!
//! The component itself is installed by an ordered op in the slot's log
//! (`zz_agent::app::tenant`); the controller only keeps the books and the
//! replicas, and is told when the install is certified.

use super::{CommandError, Controller};
use crate::model::{AppView, ReplicaState, Role, TenantApp};
use crate::store::Change;
use zz_wire::AppId;

/// The deployment app kind of a slot for tenants' apps.
pub const SLOT_KIND: &str = zz_wire::config::WASM_KIND;

/// Whether `name` may name a tenant's app: `[a-z][a-z0-9-]{0,31}`, and not
/// `v1` (the admin API's prefix).
pub fn valid_app_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name != "v1"
}

impl Controller {
    /// A slot with no app: none of its replicas run.
    pub(super) fn idle(&self, app: AppId) -> bool {
        self.dep.app(app).is_some_and(|a| a.kind == SLOT_KIND) && !self.apps.contains_key(&app)
    }

    fn slot_of(&self, name: &str) -> Option<AppId> {
        self.apps.iter().find(|(_, a)| a.name == name).map(|(id, _)| *id)
    }

    pub(super) fn app_views(&self) -> Vec<AppView> {
        let replicas = |app: AppId| -> Vec<String> {
            self.replicas
                .values()
                .filter(|r| r.id.app == app && r.state != ReplicaState::Stopped)
                .map(|r| r.name.clone())
                .collect()
        };
        let mut out = Vec::new();
        for app in self.dep.app_ids() {
            let Some(entry) = self.dep.app(app) else { continue };
            if entry.kind == SLOT_KIND {
                if let Some(t) = self.apps.get(&app) {
                    out.push(AppView {
                        name: t.name.clone(),
                        kind: "wasm".into(),
                        hash: Some(t.hash.clone()),
                        version: Some(t.version),
                        slot: Some(t.slot.clone()),
                        replicas: replicas(app),
                    });
                }
            } else {
                out.push(AppView {
                    name: entry.name.clone(),
                    kind: "builtin".into(),
                    hash: None,
                    version: None,
                    slot: None,
                    replicas: replicas(app),
                });
            }
        }
        out
    }

    /// Takes a free slot for a new app `name` and starts its replicas; the
    /// record stays at version 0 until the install is certified.
    pub(super) async fn reserve_app(&mut self, name: String, hash: String) -> Result<TenantApp, CommandError> {
        if !valid_app_name(&name) {
            return Err(CommandError::Refused(format!(
                "app name {name:?} must match [a-z][a-z0-9-]{{0,31}} and not be v1"
            )));
        }
        if self.dep.app_by_name(&name).is_some() || self.slot_of(&name).is_some() {
            return Err(CommandError::Refused(format!("the name {name:?} is taken")));
        }
        let free = self.dep.app_ids().find(|a| self.idle(*a)).ok_or_else(|| {
            CommandError::Conflict(format!(
                "every Wasm slot of the deployment is taken ({} in all); remove an app or deploy with more slots",
                self.dep.apps.iter().filter(|a| a.kind == SLOT_KIND).count()
            ))
        })?;
        let t = TenantApp {
            slot: self.app_name(free),
            name,
            hash,
            version: 0,
        };
        self.apps.insert(free, t.clone());
        self.pending.push(Change::App(t.clone()));
        self.emit(
            None,
            Some(free),
            "app-deploying",
            format!("{} takes slot {}", t.name, t.slot),
        );
        self.start_slot(free).await;
        Ok(t)
    }

    /// Provisions a slot's replicas: f+1 active, the rest standby.
    async fn start_slot(&mut self, app: AppId) {
        let active = self.active_target();
        for id in self.dep.replicas(app).collect::<Vec<_>>() {
            let role = if usize::from(id.index) < active {
                Role::Active
            } else {
                Role::Standby
            };
            self.provision(id, role, "app deployed").await;
        }
    }

    /// The install of `name` was certified at `version` with `hash`.
    pub(super) fn app_installed(&mut self, name: &str, hash: String, version: u64) -> Result<TenantApp, CommandError> {
        let slot = self
            .slot_of(name)
            .ok_or_else(|| CommandError::NotFound(format!("app {name}")))?;
        let t = self
            .apps
            .get_mut(&slot)
            .ok_or_else(|| CommandError::NotFound(format!("app {name}")))?;
        t.hash = hash;
        t.version = version;
        let t = t.clone();
        self.pending.push(Change::App(t.clone()));
        self.emit(
            None,
            Some(slot),
            "app-installed",
            format!("{} version {} ({})", t.name, t.version, t.hash),
        );
        Ok(t)
    }

    /// The app by name, with its slot.
    pub(super) fn tenant_app(&self, name: &str) -> Result<TenantApp, CommandError> {
        self.slot_of(name)
            .and_then(|s| self.apps.get(&s).cloned())
            .ok_or_else(|| CommandError::NotFound(format!("app {name}")))
    }

    /// Destroys the app's replicas and frees its slot.
    pub(super) async fn remove_app(&mut self, name: &str) -> Result<(), CommandError> {
        let slot = self
            .slot_of(name)
            .ok_or_else(|| CommandError::NotFound(format!("app {name}")))?;
        for id in self.dep.replicas(slot).collect::<Vec<_>>() {
            let Some(rec) = self.replicas.get(&id).cloned() else {
                continue;
            };
            if let Some(h) = &rec.handle {
                if let Err(e) = self.backend.destroy(h).await {
                    self.emit(Some(id), None, "destroy-failed", e.to_string());
                }
            }
            if let Some(r) = self.replicas.get_mut(&id) {
                r.handle = None;
            }
            self.suspects.remove(&id);
            self.unproven.remove(&id);
            self.set_state(id, ReplicaState::Stopped, "stopped", format!("app {name} removed"));
        }
        if let Some(t) = self.apps.remove(&slot) {
            self.pending.push(Change::RemoveApp(t.slot.clone()));
        }
        self.emit(
            None,
            Some(slot),
            "app-removed",
            format!("{name} removed; its slot is free"),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::valid_app_name;

    #[test]
    fn app_names_follow_the_contract() {
        for ok in ["guestbook", "a", "my-app-2", &"a".repeat(32)] {
            assert!(valid_app_name(ok), "{ok}");
        }
        for bad in ["", "V1", "v1", "1app", "-a", "a_b", "a.b", "Guest", &"a".repeat(33)] {
            assert!(!valid_app_name(bad), "{bad}");
        }
    }
}
