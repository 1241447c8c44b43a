//! The hypervisor as the simulator sees it: the real controller drives this
//! backend; every call succeeds or fails at once (as the process backend's
//! signals do) and is logged, and the world then carries it out on its
//! simulated instances with the delays a real resume or boot takes.

use futures::future::{ready, BoxFuture, FutureExt};
use std::collections::BTreeMap;
use std::sync::Mutex;
use zz_orchestrator::backend::{Backend, BackendError, BackendState, Handle, ReplicaSpec};
use zz_wire::Identity;

/// One call the controller made, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Start(Handle),
    Pause(Handle),
    Resume(Handle),
    Hibernate(Handle),
    Restore(Handle),
    Destroy(Handle),
}

#[derive(Default)]
struct Inner {
    ops: Vec<Op>,
    states: BTreeMap<String, BackendState>,
    /// The key each replica's newest instance was given, if not the
    /// deployment's.
    keys: BTreeMap<String, Identity>,
}

#[derive(Default)]
pub struct SimBackend {
    inner: Mutex<Inner>,
}

fn token(spec_name: &str, generation: u64) -> String {
    format!("{spec_name}#{generation}")
}

impl SimBackend {
    /// The calls made since the last take.
    pub fn take_ops(&self) -> Vec<Op> {
        self.inner
            .lock()
            .map(|mut i| std::mem::take(&mut i.ops))
            .unwrap_or_default()
    }

    /// The key replica `name`'s newest instance signs with, if the
    /// controller gave it one of its own (every replacement).
    pub fn identity(&self, name: &str) -> Option<Identity> {
        self.inner.lock().ok().and_then(|i| i.keys.get(name).cloned())
    }

    /// The instance stopped on its own (crashed): later calls on it fail.
    pub fn exited(&self, h: &Handle) {
        if let Ok(mut i) = self.inner.lock() {
            i.states.insert(h.token.clone(), BackendState::Stopped);
        }
    }

    fn call(&self, h: &Handle, need: &[BackendState], to: BackendState, op: Op) -> Result<(), BackendError> {
        let mut i = self
            .inner
            .lock()
            .map_err(|_| BackendError::Config("simulated backend poisoned".into()))?;
        let now = i.states.get(&h.token).copied().unwrap_or(BackendState::Stopped);
        if !need.contains(&now) {
            return Err(BackendError::NotRunning(h.name.clone()));
        }
        i.states.insert(h.token.clone(), to);
        i.ops.push(op);
        Ok(())
    }

    fn launch(&self, spec: &ReplicaSpec, restore: bool) -> Result<Handle, BackendError> {
        let h = Handle {
            name: spec.name.clone(),
            generation: spec.generation,
            token: token(&spec.name, spec.generation),
        };
        let mut i = self
            .inner
            .lock()
            .map_err(|_| BackendError::Config("simulated backend poisoned".into()))?;
        i.states.insert(h.token.clone(), BackendState::Running);
        if let Some(k) = &spec.key {
            i.keys.insert(spec.name.clone(), k.identity.clone());
        }
        i.ops.push(if restore {
            Op::Restore(h.clone())
        } else {
            Op::Start(h.clone())
        });
        Ok(h)
    }
}

use BackendState::{Paused, Running, Stopped};

impl Backend for SimBackend {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn host(&self, _: &ReplicaSpec) -> String {
        "sim".into()
    }

    fn provision<'a>(&'a self, _: &'a ReplicaSpec) -> BoxFuture<'a, Result<(), BackendError>> {
        ready(Ok(())).boxed()
    }

    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<Handle, BackendError>> {
        ready(self.launch(spec, false)).boxed()
    }

    fn pause<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        ready(self.call(h, &[Running, Paused], Paused, Op::Pause(h.clone()))).boxed()
    }

    fn resume<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        ready(self.call(h, &[Running, Paused], Running, Op::Resume(h.clone()))).boxed()
    }

    fn hibernate<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        ready(self.call(h, &[Running, Paused], Stopped, Op::Hibernate(h.clone()))).boxed()
    }

    fn restore<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<Handle, BackendError>> {
        ready(self.launch(spec, true)).boxed()
    }

    fn destroy<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        // Destroying what is already gone succeeds: fencing is idempotent.
        let r = self
            .call(h, &[Running, Paused, Stopped], Stopped, Op::Destroy(h.clone()))
            .or(Ok(()));
        ready(r).boxed()
    }

    fn state<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, BackendState> {
        let s = self
            .inner
            .lock()
            .ok()
            .and_then(|i| i.states.get(&h.token).copied())
            .unwrap_or(Stopped);
        ready(s).boxed()
    }

    fn attach<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, BackendState> {
        self.state(h)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        ready(()).boxed()
    }
}
