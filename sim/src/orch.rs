//! The real orchestrator controller in virtual time: its clock is the
//! world's, its backend is [`SimBackend`], its links are channels the world
//! drains after every call. Every backend future is ready at once, so each
//! call runs to completion on the calling thread.

use crate::backend::SimBackend;
use futures::executor::block_on;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use zz_orchestrator::backend::BackendEvent;
use zz_orchestrator::controller::{ApiCmd, Command, CommandError, Controller, FaultTarget, Tuning};
use zz_orchestrator::model::{Clock, Event, ReplicaView};
use zz_orchestrator::store::Store;
use zz_wire::{Deployment, Identity, Msg, Principal};

/// Controls a link may hold before the controller's `try_send` fails.
const LINK_QUEUE: usize = 256;

pub struct OrchHost {
    ctl: Controller,
    clock: Arc<AtomicU64>,
    pub backend: Arc<SimBackend>,
    /// Open links by id: who is at the other end and what waits to go there.
    links: BTreeMap<u64, (Principal, mpsc::Receiver<Msg>)>,
    pub last_event: u64,
    pub errors: Vec<String>,
}

impl OrchHost {
    /// `keys` is the world's: a replacement's key, announced by the
    /// controller, is current for every simulated principal at once.
    pub fn new(dep: Deployment, identity: Identity, keys: zz_wire::Keyring, now: u64) -> anyhow::Result<Self> {
        let clock = Arc::new(AtomicU64::new(now));
        let backend = Arc::new(SimBackend::default());
        let ctl = Controller::new(dep, identity, backend.clone(), Store::in_memory()?, Tuning::default())?
            .with_keyring(keys)
            .with_clock(Clock::manual(clock.clone()));
        Ok(OrchHost {
            ctl,
            clock,
            backend,
            links: BTreeMap::new(),
            last_event: 0,
            errors: Vec::new(),
        })
    }

    fn at(&self, now: u64) {
        self.clock.store(now, Ordering::Relaxed);
    }

    fn note(&mut self, r: Result<(), zz_orchestrator::store::StoreError>) {
        if let Err(e) = r {
            self.errors.push(format!("orchestrator store: {e}"));
        }
    }

    pub fn start(&mut self, now: u64) {
        self.at(now);
        let r = block_on(self.ctl.start());
        self.note(r);
    }

    pub fn tick(&mut self, now: u64) {
        self.at(now);
        let r = block_on(self.ctl.tick());
        self.note(r);
    }

    pub fn backend_event(&mut self, now: u64, ev: BackendEvent) {
        self.at(now);
        let r = block_on(self.ctl.backend_event(ev));
        self.note(r);
    }

    fn command(&mut self, now: u64, cmd: Command) {
        self.at(now);
        let r = block_on(self.ctl.command(cmd));
        self.note(r);
    }

    pub fn link_up(&mut self, now: u64, peer: Principal, link: u64) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        self.links.insert(link, (peer, rx));
        self.command(now, Command::LinkUp { peer, link, tx });
    }

    pub fn link_down(&mut self, now: u64, link: u64) {
        if let Some((peer, _)) = self.links.remove(&link) {
            self.command(now, Command::LinkDown { peer, link });
        }
    }

    /// A message that arrived on `link`, checked as the link reader checks it.
    pub fn inbound(&mut self, now: u64, link: u64, msg: Msg, keys: &zz_wire::Keyring) {
        let Some((peer, _)) = self.links.get(&link) else { return };
        let peer = *peer;
        if zz_orchestrator::certs::check(peer, &msg, keys).is_ok() {
            self.command(now, Command::Inbound { peer, link, msg });
        }
    }

    /// What the controller queued on its links since the last call.
    pub fn outgoing(&mut self) -> Vec<(u64, Principal, Msg)> {
        let mut out = Vec::new();
        for (link, (peer, rx)) in self.links.iter_mut() {
            while let Ok(m) = rx.try_recv() {
                out.push((*link, *peer, m));
            }
        }
        out
    }

    pub fn inject(&mut self, now: u64, target: FaultTarget) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.command(
            now,
            Command::Api(ApiCmd::InjectFault {
                target,
                duration_ms: None,
                force: false,
                reply,
            }),
        );
        answer(rx).and_then(|r: Result<u64, CommandError>| r.map_err(|e| e.to_string()))
    }

    pub fn clear_fault(&mut self, now: u64, id: u64) {
        let (reply, _rx) = oneshot::channel();
        self.command(now, Command::Api(ApiCmd::ClearFault { id, reply }));
    }

    pub fn replicas(&mut self, now: u64) -> Vec<ReplicaView> {
        let (reply, rx) = oneshot::channel();
        self.command(now, Command::Api(ApiCmd::Replicas(reply)));
        answer(rx).unwrap_or_default()
    }

    /// Events since the last call.
    pub fn new_events(&mut self, now: u64) -> Vec<Event> {
        let (reply, rx) = oneshot::channel();
        self.command(
            now,
            Command::Api(ApiCmd::Events {
                since: self.last_event,
                reply,
            }),
        );
        let evs = answer(rx).unwrap_or_default();
        if let Some(e) = evs.last() {
            self.last_event = e.seq;
        }
        evs
    }
}

fn answer<T>(mut rx: oneshot::Receiver<T>) -> Result<T, String> {
    rx.try_recv().map_err(|_| "the controller did not answer".to_string())
}
