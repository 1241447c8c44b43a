//! Tenants' apps: WebAssembly components that export
//! `wasi:http/incoming-handler` and keep their state through
//! `wasi:keyvalue`, run by wasmtime so that every replica computes the same
//! answer and the same state.
//!
//! What makes a run deterministic:
//! - the component gets no filesystem, environment, arguments, sockets or
//!   outgoing HTTP (a call gets `HTTP-request-denied`), and a component that
//!   imports the filesystem or sockets is refused when it is loaded;
//! - both clocks read the batch's agreed timestamp, and every random source
//!   is seeded from the batch's agreed seed, the seq and the op's place in it;
//! - NaNs are canonicalised, threads are off, relaxed SIMD is deterministic;
//! - a request gets a fixed amount of fuel and memory; running out traps,
//!   and a trap answers the same 500 on every replica;
//! - each request runs in a fresh instance, so nothing but the key-value
//!   store carries over from one request to the next.
//!
//! The key-value store is the replica's Merkle state (`Txn`), so
//! checkpoints, on-demand fetch after a wake and corrupt-state detection
//! work as for the built-in apps. A component cannot say up front which keys
//! a request touches: a read of a stale key aborts the run, a dry run
//! (`App::probe`, stale objects read as missing) finds the others the
//! request goes on to touch, the replica fetches them in one round and runs
//! the request again.

mod host;
mod kv;

use super::{App, Ctx, NotRun, Txn};
use crate::merkle::Key;
use crate::state::Stale;
use bytes::Bytes;
use futures::future::Either;
use host::Host;
use http_body_util::{BodyExt, Full, Limited};
pub use kv::object_key;
use kv::KvServer;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::WasiHttpView as _;
use zz_wire::{AppRequest, AppResponse};

/// Fuel one request may burn (about one unit per Wasm instruction).
pub const FUEL_PER_REQUEST: u64 = 200_000_000;
/// Linear memory one instance may grow to.
pub const MEMORY_LIMIT: usize = 64 << 20;
/// Largest answer body a component may produce.
pub const MAX_RESPONSE: usize = 4 << 20;
/// Headers of a request a component sees, besides `x-zz-app`.
pub const FORWARDED_HEADERS: &[&str] = &["accept", "content-type"];

/// Interface prefixes no component may import: they would make a run depend
/// on the host it runs on.
const FORBIDDEN_IMPORTS: &[&str] = &["wasi:filesystem/", "wasi:sockets/"];

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("imports {0}, which zz apps may not use (no filesystem or sockets: a replica's answer must not depend on its host)")]
    Forbidden(String),
    #[error("does not fit the app world (it must export wasi:http/incoming-handler@0.2 and import only wasi:http, wasi:io, wasi:clocks, wasi:random, wasi:cli stdio and wasi:keyvalue): {0}")]
    WrongWorld(String),
}

/// The engine every component of this process runs on.
fn engine() -> Result<Engine, LoadError> {
    // Threads are not even compiled in (wasmtime's `threads` feature is off).
    let mut c = Config::new();
    c.wasm_component_model(true)
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool()));
    Engine::new(&c).map_err(|e| LoadError::Invalid(format!("{e:#}")))
}

/// Requests run one at a time per app (a dry run too), so a few instance
/// slots suffice; reusing them, warm, is what makes a fresh instance per
/// request cheap. The limits per component are the ones a request has
/// anyway (`Host`'s `StoreLimits`), and a component over them is refused
/// when it is compiled, that is at deploy time.
fn pool() -> PoolingAllocationConfig {
    const SLOTS: u32 = 4;
    const KEEP_RESIDENT: usize = 1 << 20;
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(SLOTS)
        .total_core_instances(SLOTS * 16)
        .total_memories(SLOTS * 4)
        .total_tables(SLOTS * 16)
        .total_stacks(SLOTS)
        .max_memory_size(MEMORY_LIMIT)
        // Reset by memset instead of returning the pages to the kernel:
        // page faults and TLB flushes were a large part of a request.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    p
}

/// The SHA-256 of a component's bytes, which names it everywhere.
pub fn component_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compiles and links a component, or says why it cannot be an app.
pub fn validate(bytes: &[u8]) -> Result<(), LoadError> {
    Loaded::new(bytes).map(|_| ())
}

/// A compiled component, linked and ready to instantiate per request.
struct Loaded {
    pre: ProxyPre<Host>,
}

impl Loaded {
    fn new(bytes: &[u8]) -> Result<Self, LoadError> {
        let engine = engine()?;
        let component = Component::new(&engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        for (name, _) in component.component_type().imports(&engine) {
            if FORBIDDEN_IMPORTS.iter().any(|p| name.starts_with(p)) {
                return Err(LoadError::Forbidden(name.to_string()));
            }
        }
        let mut linker = Linker::<Host>::new(&engine);
        host::link(&mut linker).map_err(|e| LoadError::Invalid(format!("linking the host: {e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = ProxyPre::new(pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        Ok(Loaded { pre })
    }
}

/// A Wasm app serving the paths under `/{prefix}/`.
pub struct WasmApp {
    prefix: String,
    /// Prefixed to every object key the component writes.
    namespace: Vec<u8>,
    hash: [u8; 32],
    loaded: Arc<Loaded>,
    rt: tokio::runtime::Runtime,
}

impl WasmApp {
    pub fn new(prefix: &str, bytes: &[u8]) -> Result<Self, LoadError> {
        let loaded = Loaded::new(bytes)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LoadError::Invalid(format!("starting the component's runtime: {e}")))?;
        Ok(WasmApp {
            prefix: prefix.to_string(),
            namespace: Vec::new(),
            hash: component_hash(bytes),
            loaded: Arc::new(loaded),
            rt,
        })
    }

    /// The app keeps its objects under `namespace`.
    pub fn with_namespace(mut self, namespace: Vec<u8>) -> Self {
        self.namespace = namespace;
        self
    }

    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The request as the component sees it: the path below `/{prefix}`,
    /// authority `zz`, the forwarded headers and `x-zz-app`.
    fn http_request(&self, req: &AppRequest) -> Result<hyper::Request<Full<Bytes>>, String> {
        let below = req
            .path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(self.prefix.as_str()))
            .filter(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
            .ok_or_else(|| format!("path {:?} is not under /{}", req.path, self.prefix))?;
        let path = match below {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        let mut b = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(format!("http://zz{path}"))
            .header("x-zz-app", self.prefix.as_str());
        for (k, v) in &req.headers {
            if FORWARDED_HEADERS.contains(&k.as_str()) {
                b = b.header(k.as_str(), v.as_str());
            }
        }
        b.body(Full::new(Bytes::from(req.body.clone())))
            .map_err(|e| format!("bad request: {e}"))
    }
}

/// How one run ended, before it becomes an answer.
enum Outcome {
    Answer(AppResponse),
    Failed(&'static str),
}

impl App for WasmApp {
    fn kind(&self) -> &'static str {
        "wasm"
    }

    /// Unknown before the component runs: stale keys are found as it reads.
    fn keys(&self, _req: &AppRequest) -> Vec<Key> {
        Vec::new()
    }

    fn execute(&self, ctx: &Ctx, txn: &mut Txn<'_>, req: &AppRequest) -> Result<AppResponse, NotRun> {
        let (outcome, stale) = self.run(ctx, txn, req, false);
        if let Some(key) = stale.into_iter().next() {
            return Err(Stale(key).into());
        }
        Ok(match outcome {
            Outcome::Answer(r) => r,
            Outcome::Failed(why) => super::error(500, why),
        })
    }

    /// A dry run in which a stale object reads as missing (and a write to
    /// one is dropped): the stale objects a request goes on to touch, so a
    /// woken replica fetches them in one round instead of one run each.
    fn probe(&self, ctx: &Ctx, state: &crate::state::State, req: &AppRequest) -> Vec<Key> {
        let mut txn = Txn::new(state);
        self.run(ctx, &mut txn, req, true).1
    }
}

impl WasmApp {
    /// One run of the component against `txn`; the stale keys it touched
    /// (it stopped at the first, unless `probe`).
    fn run(&self, ctx: &Ctx, txn: &mut Txn<'_>, req: &AppRequest, probe: bool) -> (Outcome, Vec<Key>) {
        let hreq = match self.http_request(req) {
            Ok(r) => r,
            Err(e) => return (Outcome::Answer(super::error(400, &e)), Vec::new()),
        };
        let (calls, server) = KvServer::new(txn, probe);
        let loaded = self.loaded.clone();
        let seeds = Seeds::new(ctx);
        let host = Host::new(ctx, &seeds, calls, self.namespace.clone());
        let run = async move { serve(&loaded.pre, Store::new(loaded.pre.engine(), host), hreq).await };
        self.rt.block_on(async { tokio::join!(run, server.serve()) })
    }
}

/// Runs the handler in `store` and collects its answer, reading the body
/// while the component writes it.
async fn serve(pre: &ProxyPre<Host>, mut store: Store<Host>, req: hyper::Request<Full<Bytes>>) -> Outcome {
    if store.set_fuel(FUEL_PER_REQUEST).is_err() {
        return Outcome::Failed("app could not be metered");
    }
    store.limiter(|h| &mut h.limits);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let req = req.map(|b| b.map_err(|never: std::convert::Infallible| -> ErrorCode { match never {} }));
    let (Ok(req), Ok(out)) = (
        store.data_mut().http().new_incoming_request(Scheme::Http, req),
        store.data_mut().http().new_response_outparam(tx),
    ) else {
        return Outcome::Failed("app request could not be built");
    };
    // Owns the store: it goes (and with it the response channel) as soon as
    // the component returns or traps.
    let call = Box::pin(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
    });
    let answer = Box::pin(async {
        let resp = match rx.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(code)) => return Err(error_name(&code)),
            Err(_) => return Err("app gave no response"),
        };
        let (parts, body) = resp.into_parts();
        let body = match Limited::new(body, MAX_RESPONSE).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Err("app response too large or cut short"),
        };
        let mut headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        headers.sort();
        Ok(AppResponse {
            status: parts.status.as_u16(),
            headers,
            body: body.to_vec(),
        })
    });
    // The body is read while the component writes it. If the component
    // returns first, an answer it never gave ends at once.
    let (called, answered) = match futures::future::select(call, answer).await {
        Either::Left((Err(trap), _)) => return Outcome::Failed(trap_name(&trap)),
        Either::Left((Ok(()), answer)) => (Ok(()), answer.await),
        Either::Right((answered, call)) => (call.await, answered),
    };
    match (called, answered) {
        (Ok(()), Ok(r)) => Outcome::Answer(r),
        (Err(trap), _) => Outcome::Failed(trap_name(&trap)),
        (Ok(()), Err(why)) => Outcome::Failed(why),
    }
}

/// A trap as the same words on every replica (its message may carry
/// addresses or backtraces that differ).
fn trap_name(e: &wasmtime::Error) -> &'static str {
    if kv::is_stale(e) {
        return "app state unavailable";
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => "app ran out of fuel",
        Some(wasmtime::Trap::StackOverflow) => "app overflowed its stack",
        Some(wasmtime::Trap::UnreachableCodeReached) => "app aborted",
        Some(wasmtime::Trap::MemoryOutOfBounds) => "app accessed memory out of bounds",
        Some(_) => "app trapped",
        None => "app failed",
    }
}

fn error_name(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::InternalError(_) => "app reported an internal error",
        _ => "app reported an HTTP error",
    }
}

/// The seeds of one request's random sources, from the batch's agreed seed,
/// the seq and the op's place in the batch.
pub(crate) struct Seeds {
    pub secure: [u8; 32],
    pub insecure: [u8; 32],
    pub insecure_seed: u128,
}

impl Seeds {
    fn new(ctx: &Ctx) -> Self {
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(b"zz-wasm-random");
            h.update(label);
            h.update(ctx.nondet.seed.to_le_bytes());
            h.update(ctx.seq.to_le_bytes());
            h.update(ctx.op.to_le_bytes());
            h.finalize().into()
        };
        let s = derive(b"insecure-seed");
        let mut lo = [0u8; 16];
        lo.copy_from_slice(&s[..16]);
        Seeds {
            secure: derive(b"secure"),
            insecure: derive(b"insecure"),
            insecure_seed: u128::from_le_bytes(lo),
        }
    }
}

#[cfg(test)]
mod tests;
