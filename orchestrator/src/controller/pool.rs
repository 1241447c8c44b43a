//! The replica pool: start-up, pause/wake, fencing and replacement, and the
//! failure detectors (backend exits, heartbeat silence). Only a backend
//! exit or an f+1 FAULT certificate fences by default; silence suspects.

use super::{CommandError, Controller, ReplicaAction, STANDBY_READY};
use crate::backend::{BackendEvent, BackendState, Handle, ReplicaSpec};
use crate::metrics as m;
use crate::model::{ReplicaRecord, ReplicaState, ReplicaView, Role};
use zz_wire::{AppId, Heartbeat, Principal, ReplicaId};

impl Controller {
    fn spec(&self, id: ReplicaId, generation: u64) -> ReplicaSpec {
        ReplicaSpec {
            name: self.dep.replica_name(id),
            generation,
            key: self.generation_key(id, generation),
        }
    }

    pub(super) fn set_state(&mut self, id: ReplicaId, state: ReplicaState, kind: &str, detail: String) {
        let Some(r) = self.replicas.get_mut(&id) else {
            return;
        };
        let from = r.state;
        r.state = state;
        r.since_ms = self.clock.now_ms();
        let detail = if from == state {
            detail
        } else {
            format!("{} -> {}: {detail}", from.as_str(), state.as_str())
        };
        self.save_replica(id);
        self.emit(Some(id), None, kind, detail);
    }

    /// Takes over replicas a previous run left running; starts the rest.
    pub(super) async fn bootstrap(&mut self) {
        let active = self.active_target();
        for id in self.dep.all_replicas() {
            if self.idle(id.app) {
                continue;
            }
            let existing = self.replicas.get(&id).cloned();
            let live = matches!(
                existing.as_ref().map(|r| r.state),
                Some(ReplicaState::Active | ReplicaState::Paused | ReplicaState::Waking | ReplicaState::Provisioning)
            );
            if let (true, Some(rec), Some(h)) = (
                live,
                existing.as_ref(),
                existing.as_ref().and_then(|r| r.handle.clone()),
            ) {
                match self.backend.attach(&h).await {
                    BackendState::Stopped => {
                        self.emit(Some(id), None, "lost", "gone while we were away".into());
                    }
                    found => {
                        let state = match found {
                            BackendState::Paused => ReplicaState::Paused,
                            _ if rec.state == ReplicaState::Paused => {
                                // It was meant to be paused: finish the job.
                                let _ = self.backend.pause(&h).await;
                                ReplicaState::Paused
                            }
                            _ => rec.state,
                        };
                        self.set_state(id, state, "attached", format!("re-attached {}", h.token));
                        continue;
                    }
                }
            }
            if existing.as_ref().map(|r| r.state) == Some(ReplicaState::Hibernated) {
                continue;
            }
            let role = if usize::from(id.index) < active {
                Role::Active
            } else {
                Role::Standby
            };
            self.provision(id, role, "start-up").await;
        }
    }

    /// Starts a fresh instance (new generation, empty state).
    pub(super) async fn provision(&mut self, id: ReplicaId, role: Role, why: &str) {
        let now = self.clock.now_ms();
        let generation = self.replicas.get(&id).map_or(1, |r| r.generation + 1);
        let key = (generation > 1).then(|| Box::new(self.announce_key(id, generation)));
        let mut retired_keys = self
            .replicas
            .get(&id)
            .map(|r| r.retired_keys.clone())
            .unwrap_or_default();
        retired_keys.extend(self.replicas.get(&id).and_then(|r| r.key.as_deref().cloned()));
        let drop = retired_keys.len().saturating_sub(super::keys::RETIRED_KEPT);
        retired_keys.drain(..drop);
        let spec = ReplicaSpec {
            name: self.dep.replica_name(id),
            generation,
            key: key.as_deref().map(|cert| self.generation_key_for(cert.clone())),
        };
        let rec = ReplicaRecord {
            id,
            name: spec.name.clone(),
            app_name: self.app_name(id.app),
            state: ReplicaState::Provisioning,
            generation,
            role,
            handle: None,
            host: self.backend.host(&spec),
            backend: self.backend.kind().to_string(),
            last_executed: 0,
            last_checkpoint: 0,
            fetched_objects: 0,
            stale_objects: 0,
            last_heartbeat_ms: None,
            since_ms: now,
            cold: false,
            sync_progress_ms: 0,
            key,
            retired_keys,
        };
        let from = self.replicas.insert(id, rec).map(|r| r.state);
        self.instance_links.remove(&id);
        self.suspects.remove(&id);
        if role == Role::Standby {
            self.unproven.insert(id);
        } else {
            self.unproven.remove(&id);
        }
        self.tracker.new_instance(id, now);
        self.instance_started.insert(id, now);
        self.save_replica(id);
        self.emit(
            Some(id),
            None,
            "provisioning",
            format!(
                "{} -> provisioning: generation {generation} ({why})",
                from.map_or("new", |s| s.as_str())
            ),
        );
        let started = match self.backend.provision(&spec).await {
            Ok(()) => self.backend.start(&spec).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(h) => {
                if let Some(r) = self.replicas.get_mut(&id) {
                    r.handle = Some(h);
                    // Where it landed: not the first choice if that host was down.
                    r.host = self.backend.host(&spec);
                }
                if role == Role::Active {
                    self.set_state(id, ReplicaState::Active, "started", "process started".into());
                } else {
                    self.save_replica(id);
                }
            }
            Err(e) => {
                self.set_state(id, ReplicaState::Faulty, "start-failed", e.to_string());
            }
        }
    }

    /// Operator actions from the API.
    pub(super) async fn act(&mut self, id: ReplicaId, action: ReplicaAction) -> Result<ReplicaView, CommandError> {
        let rec = self
            .replicas
            .get(&id)
            .cloned()
            .ok_or_else(|| CommandError::NotFound(format!("replica {}", self.dep.replica_name(id))))?;
        match action {
            ReplicaAction::Pause => self.pause(id, "operator").await?,
            ReplicaAction::Wake => {
                if !rec.state.is_standby() {
                    return Err(CommandError::Conflict(format!(
                        "{} is {}, not paused or hibernated",
                        rec.name,
                        rec.state.as_str()
                    )));
                }
                self.wake(id, None, "operator").await?;
            }
            ReplicaAction::Hibernate { cold } => self.hibernate(id, cold).await?,
            ReplicaAction::Replace => {
                self.fence_and_replace(id, None, "operator").await;
            }
        }
        self.replicas
            .get(&id)
            .map(ReplicaView::from)
            .ok_or(CommandError::NotFound(rec.name))
    }

    async fn pause(&mut self, id: ReplicaId, why: &str) -> Result<(), CommandError> {
        let rec = self.replicas.get(&id).cloned().ok_or(CommandError::Unavailable)?;
        let h = match (rec.state, rec.handle) {
            (ReplicaState::Paused, _) => return Ok(()),
            (ReplicaState::Active | ReplicaState::Waking | ReplicaState::Provisioning, Some(h)) => h,
            (s, _) => {
                return Err(CommandError::Conflict(format!(
                    "{} is {}, cannot pause",
                    rec.name,
                    s.as_str()
                )))
            }
        };
        self.backend.pause(&h).await?;
        if let Some(r) = self.replicas.get_mut(&id) {
            r.role = Role::Standby;
        }
        self.set_state(id, ReplicaState::Paused, "paused", why.to_string());
        Ok(())
    }

    /// Suspends to disk (`backend.hibernate`), or with `cold` destroys the
    /// instance so that nothing of it is left until a wake provisions anew.
    async fn hibernate(&mut self, id: ReplicaId, cold: bool) -> Result<(), CommandError> {
        let rec = self.replicas.get(&id).cloned().ok_or(CommandError::Unavailable)?;
        match rec.state {
            ReplicaState::Hibernated if rec.cold == cold => return Ok(()),
            ReplicaState::Hibernated => {
                return Err(CommandError::Conflict(format!(
                    "{} is already hibernated {}; wake it first",
                    rec.name,
                    if rec.cold { "cold" } else { "warm" }
                )))
            }
            ReplicaState::Faulty | ReplicaState::Stopped => {
                return Err(CommandError::Conflict(format!(
                    "{} is {}, cannot hibernate",
                    rec.name,
                    rec.state.as_str()
                )))
            }
            _ => {}
        }
        match (&rec.handle, cold) {
            (Some(h), true) => self.backend.destroy(h).await?,
            (Some(h), false) => self.backend.hibernate(h).await?,
            (None, _) => {}
        }
        if let Some(r) = self.replicas.get_mut(&id) {
            r.handle = None;
            r.role = Role::Standby;
            r.cold = cold;
        }
        let why = if cold {
            "operator (cold: instance destroyed)"
        } else {
            "operator"
        };
        self.set_state(id, ReplicaState::Hibernated, "hibernated", why.into());
        Ok(())
    }

    /// Resumes a paused replica, restores a hibernated one, or provisions a
    /// clean instance for a cold one (it then fetches state like any other).
    async fn wake(&mut self, id: ReplicaId, incident: Option<u64>, why: &str) -> Result<(), CommandError> {
        let rec = self.replicas.get(&id).cloned().ok_or(CommandError::Unavailable)?;
        match (rec.state, &rec.handle) {
            (ReplicaState::Paused, Some(h)) => self.backend.resume(h).await?,
            (ReplicaState::Hibernated, _) => {
                let spec = self.spec(id, rec.generation);
                let h = if rec.cold {
                    self.backend.provision(&spec).await?;
                    self.backend.start(&spec).await?
                } else {
                    self.backend.restore(&spec).await?
                };
                if let Some(r) = self.replicas.get_mut(&id) {
                    r.handle = Some(h);
                    r.cold = false;
                }
            }
            _ => return Ok(()),
        }
        let now = self.clock.now_ms();
        if let Some(r) = self.replicas.get_mut(&id) {
            r.role = Role::Active;
        }
        self.unproven.remove(&id);
        self.joined_at.insert(id, now);
        metrics::counter!(m::WAKES, "app" => rec.app_name.clone()).increment(1);
        if let Some(i) = incident {
            if self.tracker.mark_woken(i, now) {
                self.save_incident(i);
            }
        }
        self.set_state(id, ReplicaState::Waking, "woken", why.to_string());
        Ok(())
    }

    /// The standbys of `app` in the order to wake them: paused ones (a
    /// resume), hibernated ones (a restore), cold ones (a fresh instance),
    /// then by index.
    fn standbys_in_wake_order(&self, app: AppId) -> Vec<ReplicaId> {
        let mut standbys: Vec<(u8, ReplicaId)> = self
            .replicas
            .values()
            .filter(|r| r.id.app == app && r.state.is_standby())
            .map(|r| (u8::from(r.state == ReplicaState::Hibernated) + u8::from(r.cold), r.id))
            .collect();
        standbys.sort();
        standbys.into_iter().map(|(_, id)| id).collect()
    }

    /// Wakes standbys of `app` (up to f), paused ones first.
    pub(super) async fn wake_standbys(&mut self, app: AppId, incident: Option<u64>, _now: u64) {
        let standbys = self.standbys_in_wake_order(app);
        let why = incident.map_or_else(|| "capacity".to_string(), crate::timeline::wake_reason);
        for id in standbys.into_iter().take(self.dep.f) {
            if let Err(e) = self.wake(id, incident, &why).await {
                self.emit(Some(id), None, "wake-failed", e.to_string());
            }
        }
    }

    /// Destroys the instance and starts a clean one as the next standby.
    pub(super) async fn fence_and_replace(&mut self, id: ReplicaId, incident: Option<u64>, why: &str) {
        let Some(rec) = self.replicas.get(&id).cloned() else {
            return;
        };
        if rec.state != ReplicaState::Faulty {
            self.set_state(id, ReplicaState::Faulty, "faulty", why.to_string());
        }
        let mut outcome = "destroyed";
        if let Some(h) = &rec.handle {
            if let Err(e) = self.backend.destroy(h).await {
                self.emit(Some(id), None, "destroy-failed", e.to_string());
                // Unreachable, maybe with its host: it can no longer vote anyway.
                outcome = "not destroyed (see destroy-failed); the replacement retires its key";
            }
        }
        if let Some(r) = self.replicas.get_mut(&id) {
            r.handle = None;
        }
        self.emit(
            Some(id),
            None,
            "fenced",
            format!("generation {} {outcome}", rec.generation),
        );
        metrics::counter!(m::REPLACEMENTS, "app" => rec.app_name.clone()).increment(1);
        self.forget_faults(Principal::Replica(id));
        self.provision(id, Role::Standby, "replacement").await;
        if let Some(i) = incident {
            if self.tracker.mark_replaced(i, id) {
                self.save_incident(i);
            }
        }
        if rec.state.is_running() {
            self.ensure_capacity(id.app).await;
        }
    }

    /// A new standby is up: it is paused, unless an open incident of its
    /// app still lacks the replicas that break the tie (no standby was left
    /// when it opened; its WAKEs were spent), in which case it joins now.
    async fn standby_ready(&mut self, id: ReplicaId, why: &str) {
        let running = self
            .replicas
            .values()
            .filter(|r| r.id.app == id.app && r.state.is_running())
            .count();
        let incident = self.tracker.open_incident(id.app).map(|i| i.id);
        if let Some(i) = incident.filter(|_| running < 2 * self.dep.f + 1) {
            if self.tracker.mark_woken(i, self.clock.now_ms()) {
                self.save_incident(i);
            }
            self.activate(id, crate::timeline::activate_reason(i));
            return;
        }
        // Fewer than f+1 execute (two replicas were fenced at once and no
        // standby was left to wake): the new one restores capacity.
        if running < self.active_target() {
            let why = format!("ready; {running} of {} replicas executing", self.active_target());
            self.activate(id, why);
            return;
        }
        if let Err(e) = self.pause(id, why).await {
            self.emit(Some(id), None, "pause-failed", e.to_string());
        }
    }

    /// A ready replica executes from now on instead of standing by.
    fn activate(&mut self, id: ReplicaId, why: String) {
        if let Some(r) = self.replicas.get_mut(&id) {
            r.role = Role::Active;
        }
        self.unproven.remove(&id);
        self.joined_at.insert(id, self.clock.now_ms());
        self.set_state(id, ReplicaState::Active, "active", why);
    }

    /// Resumes a paused standby that fell far behind so it catches up in a
    /// quiet moment; the heartbeat path pauses it again once it holds the
    /// whole checkpoint, and an incident meanwhile takes it as it is.
    async fn refresh(&mut self, id: ReplicaId, behind: u64, paused_ms: u64, busy: Option<f64>) {
        let Some(h) = self.replicas.get(&id).and_then(|r| r.handle.clone()) else {
            return;
        };
        if let Err(e) = self.backend.resume(&h).await {
            self.emit(Some(id), None, "refresh-failed", e.to_string());
            return;
        }
        if let Some(r) = self.replicas.get_mut(&id) {
            r.role = Role::Standby;
        }
        self.set_state(
            id,
            ReplicaState::Provisioning,
            "refresh",
            format!(
                "paused -> provisioning: catching up, {behind} seqs behind after {} s paused{}",
                paused_ms / 1000,
                busy.map(|b| format!(", machine {:.0}% busy", b * 100.0))
                    .unwrap_or_default()
            ),
        );
    }

    /// Keeps f+1 replicas of `app` executing while any standby is left.
    async fn ensure_capacity(&mut self, app: AppId) {
        let running = self
            .replicas
            .values()
            .filter(|r| r.id.app == app && r.state.is_running())
            .count();
        let missing = self.active_target().saturating_sub(running);
        if missing == 0 {
            return;
        }
        let standbys = self.standbys_in_wake_order(app);
        let incident = self.tracker.open_incident(app).map(|i| i.id);
        for id in standbys.into_iter().take(missing) {
            if let Err(e) = self.wake(id, incident, "capacity").await {
                self.emit(Some(id), None, "wake-failed", e.to_string());
            }
        }
    }

    pub(super) async fn on_replica_heartbeat(&mut self, id: ReplicaId, hb: &Heartbeat, now: u64) {
        let stable = self.stable_checkpoint(id.app);
        let grace = self.tuning.standby_grace_ms;
        let Some(r) = self.replicas.get_mut(&id) else {
            return;
        };
        r.last_executed = hb.last_executed;
        r.last_checkpoint = hb.last_checkpoint;
        let fetched = hb.fetched_objects.saturating_sub(r.fetched_objects);
        if fetched > 0 || hb.stale_objects < r.stale_objects {
            r.sync_progress_ms = now;
        }
        r.fetched_objects = hb.fetched_objects;
        r.stale_objects = hb.stale_objects;
        r.last_heartbeat_ms = Some(now);
        let (state, role, since, idle) = (r.state, r.role, r.since_ms, r.idle_ms(now));
        if self.suspects.remove(&id) {
            self.emit(Some(id), None, "unsuspected", "heartbeat again after a silence".into());
        }
        // The catch-up work of a replica just woken is part of an incident's
        // story; later background sync is not worth an event each heartbeat.
        if fetched > 0
            && matches!(state, ReplicaState::Waking | ReplicaState::Active)
            && now.saturating_sub(since) < 10_000
        {
            self.emit(
                Some(id),
                None,
                "fetched",
                crate::timeline::fetched_detail(fetched, hb.stale_objects),
            );
        }
        match (state, role) {
            (ReplicaState::Waking, _) => {
                self.set_state(id, ReplicaState::Active, "active", "heartbeat after wake".into());
            }
            (ReplicaState::Provisioning, Role::Standby) => {
                // A standby must hold the whole checkpoint before it is
                // paused: after the next fencing it may be the only copy.
                // The grace counts from its last progress: a large
                // checkpoint takes a while to copy, a stuck sync does not.
                let caught_up = hb.last_checkpoint >= stable && hb.stale_objects == 0;
                if caught_up {
                    self.standby_ready(id, STANDBY_READY).await;
                } else if idle > grace {
                    self.standby_ready(id, "standby grace elapsed").await;
                }
            }
            _ => {}
        }
        // Heartbeats are frequent: persist them only with other changes.
    }

    pub(super) async fn on_backend(&mut self, ev: BackendEvent) {
        match ev {
            BackendEvent::Exited { handle, status } => {
                let Some(id) = self.owner_of(&handle) else {
                    return;
                };
                let state = self.replicas.get(&id).map(|r| r.state);
                if matches!(
                    state,
                    Some(ReplicaState::Hibernated | ReplicaState::Stopped | ReplicaState::Faulty)
                ) {
                    return;
                }
                self.emit(Some(id), None, "exited", status.clone());
                self.fence_and_replace(id, None, &format!("process exited: {status}"))
                    .await;
            }
            BackendEvent::Host { kind, detail } => self.emit(None, None, kind, detail),
        }
    }

    fn owner_of(&self, h: &Handle) -> Option<ReplicaId> {
        self.replicas
            .values()
            .find(|r| r.handle.as_ref() == Some(h))
            .map(|r| r.id)
    }

    pub(super) async fn on_tick(&mut self) {
        let now = self.clock.now_ms();
        let t = self.tuning.clone();
        let mut silent = Vec::new();
        let mut ready = Vec::new();
        let mut settled = Vec::new();
        let mut unstarted = Vec::new();
        for r in self.replicas.values() {
            let quiet_since = r.last_heartbeat_ms.unwrap_or(0).max(r.since_ms);
            let limit = if r.last_heartbeat_ms.is_some() {
                t.silence_ms
            } else {
                t.startup_grace_ms
            };
            match (r.state, r.role) {
                (ReplicaState::Active, _) if now.saturating_sub(quiet_since) > limit => {
                    silent.push((r.id, now.saturating_sub(quiet_since)));
                }
                (ReplicaState::Provisioning, Role::Standby) if r.idle_ms(now) > t.standby_grace_ms => {
                    ready.push(r.id);
                }
                (ReplicaState::Waking, _) if now.saturating_sub(r.since_ms) > t.waking_grace_ms => {
                    settled.push(r.id);
                }
                // No instance: its start failed (a fenced one's handle goes
                // only as its replacement is provisioned, in the same step).
                (ReplicaState::Faulty, _)
                    if r.handle.is_none() && now.saturating_sub(r.since_ms) > t.retry_start_ms =>
                {
                    unstarted.push(r.id);
                }
                _ => {}
            }
        }
        for id in unstarted {
            let running = self
                .replicas
                .values()
                .filter(|r| r.id.app == id.app && r.state.is_running())
                .count();
            let role = if running < self.active_target() {
                Role::Active
            } else {
                Role::Standby
            };
            self.provision(id, role, "retry after a failed start").await;
        }
        let mut refresh = Vec::new();
        if t.refresh_checkpoints.is_some() {
            // Sampled every tick, so each reading covers the last tick.
            let busy = self.backend.cpu_busy();
            for r in self.replicas.values() {
                let paused_ms = now.saturating_sub(r.since_ms);
                if r.state == ReplicaState::Paused && !self.tracker.busy(r.id.app, now, t.settle_ms) {
                    let behind = self.stable_checkpoint(r.id.app).saturating_sub(r.last_checkpoint);
                    if t.refresh_due(paused_ms, behind, self.dep.checkpoint_interval, busy) {
                        refresh.push((r.id, behind, paused_ms, busy));
                    }
                }
            }
        }
        for (id, behind, paused_ms, busy) in refresh {
            self.refresh(id, behind, paused_ms, busy).await;
        }
        for id in settled {
            self.set_state(id, ReplicaState::Active, "active", "wake grace elapsed".into());
        }
        // Suspicion lasts while the replica is meant to execute.
        let replicas = &self.replicas;
        self.suspects
            .retain(|id| replicas.get(id).is_some_and(|r| r.state == ReplicaState::Active));
        for (id, ms) in silent {
            if t.silence_fencing {
                self.fence_and_replace(id, None, &format!("silent for {ms} ms")).await;
            } else {
                self.suspect(id, ms).await;
            }
        }
        for id in ready {
            self.standby_ready(id, "standby grace elapsed").await;
        }
        for app in self.dep.app_ids().collect::<Vec<_>>() {
            self.rebalance(app, now).await;
        }
        self.expire_faults(now);
    }

    /// An active replica went silent: a standby takes its place, so f+1
    /// replicas answer, but it is not destroyed. It is fenced if the nodes'
    /// audit names it (an f+1 FAULT certificate), paused first when the app
    /// settles, and trusted again if it heartbeats.
    async fn suspect(&mut self, id: ReplicaId, silent_ms: u64) {
        if !self.suspects.insert(id) {
            return;
        }
        self.emit(
            Some(id),
            None,
            "suspected",
            format!("silent for {silent_ms} ms: a standby is woken; fenced only on an f+1 FAULT certificate"),
        );
        let why = format!("{} suspected", self.dep.replica_name(id));
        if let Some(standby) = self.standbys_in_wake_order(id.app).into_iter().next() {
            let incident = self.tracker.open_incident(id.app).map(|i| i.id);
            if let Err(e) = self.wake(standby, incident, &why).await {
                self.emit(Some(standby), None, "wake-failed", e.to_string());
            }
        }
    }

    /// Back to f+1 active once the app is quiet: keeps the most advanced,
    /// pausing suspects first.
    async fn rebalance(&mut self, app: AppId, now: u64) {
        if self.tracker.busy(app, now, self.tuning.settle_ms) {
            return;
        }
        let mut active: Vec<(bool, u64, ReplicaId)> = self
            .replicas
            .values()
            .filter(|r| r.id.app == app && r.state == ReplicaState::Active)
            .map(|r| (self.suspects.contains(&r.id), r.last_executed, r.id))
            .collect();
        let target = self.active_target();
        if active.len() <= target {
            return;
        }
        // Trusted before suspected (a silent replica's last heartbeat may
        // show it ahead), then most advanced; among equals the lower index.
        active.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.index.cmp(&b.2.index)));
        for (_, _, id) in active.split_off(target) {
            if let Err(e) = self.pause(id, "back to f+1 active").await {
                self.emit(Some(id), None, "pause-failed", e.to_string());
            }
        }
    }

    /// Shutdown: nothing is left running.
    pub(super) async fn stop_all(&mut self) {
        self.backend.shutdown().await;
        let ids: Vec<ReplicaId> = self.replicas.keys().copied().collect();
        for id in ids {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            if r.state == ReplicaState::Stopped {
                continue;
            }
            r.handle = None;
            self.set_state(id, ReplicaState::Stopped, "stopped", "orchestrator shutdown".into());
        }
    }
}
