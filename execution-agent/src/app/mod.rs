//! The deterministic app runtime.
//!
//! How stale objects are found before a request runs: apps declare the keys
//! a request touches up front (`App::keys`), and the replica fetches the
//! stale ones first. As a safety net every read and write goes through a
//! `Txn` that refuses stale keys: an undeclared stale access aborts the
//! request (its buffered writes are dropped), the key is fetched, and the
//! request runs again. Writes are buffered in the `Txn` and applied only when
//! the request finishes, so a request that fails half-way changes nothing.

pub mod bank;
pub mod kv;
pub mod tenant;
pub mod wasm;

use crate::merkle::Key;
use crate::state::{Stale, State};
use zz_wire::{AppRequest, AppResponse, NonDet, Seq};

/// What a request sees besides the state: its place in the order and the
/// batch's agreed non-determinism.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ctx {
    pub seq: Seq,
    pub nondet: NonDet,
    /// The op's place among the ops of its seq (across the batches).
    pub op: u64,
    /// The op came from the deployment's `admin` client (the orchestrator).
    pub admin: bool,
}

/// A request's view of the store: reads see its own writes; writes are
/// buffered until commit. Records which keys were read and written.
pub struct Txn<'a> {
    state: &'a State,
    writes: Vec<(Key, Option<Vec<u8>>)>,
    reads: Vec<Key>,
}

impl<'a> Txn<'a> {
    pub fn new(state: &'a State) -> Self {
        Txn {
            state,
            writes: Vec::new(),
            reads: Vec::new(),
        }
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Stale> {
        if let Some((_, v)) = self.writes.iter().rev().find(|(k, _)| k == key) {
            return Ok(v.clone());
        }
        self.reads.push(key.to_vec());
        self.state.get(key).map(|v| v.map(<[u8]>::to_vec))
    }

    pub fn exists(&mut self, key: &[u8]) -> Result<bool, Stale> {
        self.get(key).map(|v| v.is_some())
    }

    pub fn put(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), Stale> {
        self.check(key)?;
        self.writes.push((key.to_vec(), Some(value)));
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<(), Stale> {
        self.check(key)?;
        self.writes.push((key.to_vec(), None));
        Ok(())
    }

    pub fn is_stale(&self, key: &[u8]) -> bool {
        self.state.is_stale(key)
    }

    fn check(&self, key: &[u8]) -> Result<(), Stale> {
        if self.state.is_stale(key) {
            return Err(Stale(key.to_vec()));
        }
        Ok(())
    }

    pub fn reads(&self) -> &[Key] {
        &self.reads
    }

    /// The buffered writes, in order (a later write to a key wins).
    pub fn into_writes(self) -> Vec<(Key, Option<Vec<u8>>)> {
        self.writes
    }
}

/// Why an op did not run (and wrote nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRun {
    /// It touched an object this replica must fetch first.
    #[error(transparent)]
    Stale(#[from] Stale),
    /// Something it needs besides state is not here yet (a tenant's
    /// component still on its way from the orchestrator). Its peers may
    /// have it, so an answer now could differ from theirs: the seq waits
    /// and is run again later, and the replica is behind meanwhile.
    #[error("{0}")]
    Unavailable(String),
}

/// A deterministic app: the same requests in the same order with the same
/// `Ctx` give the same responses and the same state on every replica.
pub trait App: Send {
    fn kind(&self) -> &'static str;
    /// Keys the request will read or write, so stale ones are fetched first.
    fn keys(&self, req: &AppRequest) -> Vec<Key>;
    /// Runs one request. `Err` only when it touched a stale key or lacks
    /// something besides state ([`NotRun`]); every correct replica that has
    /// what the request touches gives the same answer.
    fn execute(&self, ctx: &Ctx, txn: &mut Txn<'_>, req: &AppRequest) -> Result<AppResponse, NotRun>;
    /// Whether `execute` may return [`NotRun::Unavailable`]: the replica
    /// then notes each write of a seq, to take back a seq it cannot finish.
    fn may_be_unavailable(&self) -> bool {
        false
    }
    /// For apps that cannot declare their keys: after `execute` stopped at a
    /// stale key, the other stale keys the request would touch, found by a
    /// run that changes nothing (a guess: whatever it misses is fetched when
    /// the real run meets it).
    fn probe(&self, _ctx: &Ctx, _state: &State, _req: &AppRequest) -> Vec<Key> {
        Vec::new()
    }
}

/// Builds the built-in app of `kind`, serving paths under `/{prefix}/`.
pub fn build(kind: &str, prefix: &str) -> Option<Box<dyn App>> {
    match kind {
        "kv" => Some(Box::new(kv::Kv::new(prefix))),
        "bank" => Some(Box::new(bank::Bank::new(prefix))),
        _ => None,
    }
}

pub fn error(status: u16, msg: &str) -> AppResponse {
    AppResponse::json(status, &serde_json::json!({ "error": msg }))
}

/// Runs a request against the state and applies its writes if it finished.
pub fn run(app: &dyn App, state: &mut State, ctx: &Ctx, req: &AppRequest) -> Result<AppResponse, NotRun> {
    let mut txn = Txn::new(state);
    let resp = app.execute(ctx, &mut txn, req)?;
    for (k, v) in txn.into_writes() {
        state.write(k, v)?;
    }
    Ok(resp)
}

/// Written keys with their values before the write, oldest first.
pub type Undo = Vec<(Key, Option<Vec<u8>>)>;

/// `run`, noting in `undo` each written key's value before the write, so
/// the caller can take back a seq it cannot finish.
pub fn run_logged(
    app: &dyn App,
    state: &mut State,
    ctx: &Ctx,
    req: &AppRequest,
    undo: &mut Undo,
) -> Result<AppResponse, NotRun> {
    let mut txn = Txn::new(state);
    let resp = app.execute(ctx, &mut txn, req)?;
    for (k, v) in txn.into_writes() {
        let old = state.get(&k)?.map(<[u8]>::to_vec);
        state.write(k.clone(), v)?;
        undo.push((k, old));
    }
    Ok(resp)
}

/// The path below `/{prefix}`, e.g. `/foo` for `/kv/foo` with prefix `kv`.
fn strip<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    path.strip_prefix('/')?.strip_prefix(prefix)
}
