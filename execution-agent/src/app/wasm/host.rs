//! What a component's store holds, and the host interfaces it is linked to.

use super::kv::{self, Calls};
use super::{Seeds, MEMORY_LIMIT};
use crate::app::Ctx;
use rand_chacha::rand_core::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use std::time::Duration;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::p2::{HttpResult, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};
use wasmtime_wasi_http::WasiHttpCtx;

/// One request's store: WASI with nothing of the host's, HTTP without
/// outgoing requests, limits, and the line to the key-value store.
pub(super) struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutgoing,
    pub(super) limits: StoreLimits,
    pub(super) kv: Calls,
    pub(super) namespace: Vec<u8>,
}

impl Host {
    pub(super) fn new(ctx: &Ctx, seeds: &Seeds, kv: Calls, namespace: Vec<u8>) -> Self {
        let agreed = AgreedTime(ctx.nondet.timestamp_ms);
        let wasi = WasiCtx::builder()
            // The replica's log; never part of the answer.
            .inherit_stdout()
            .inherit_stderr()
            .wall_clock(agreed)
            .monotonic_clock(agreed)
            .secure_random(ChaCha20Rng::from_seed(seeds.secure))
            .insecure_random(ChaCha20Rng::from_seed(seeds.insecure))
            .insecure_random_seed(seeds.insecure_seed)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Host {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutgoing,
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT)
                .instances(64)
                .tables(64)
                .memories(16)
                .build(),
            kv,
            namespace,
        }
    }

    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Links every interface a component may import.
pub(super) fn link(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    kv::link(linker)
}

/// Outgoing HTTP would make an answer depend on the world outside.
struct NoOutgoing;

impl WasiHttpHooks for NoOutgoing {
    fn send_request(
        &mut self,
        _request: hyper::Request<HyperOutgoingBody>,
        _config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        Err(ErrorCode::HttpRequestDenied.into())
    }
}

/// Both clocks read the batch's agreed timestamp.
#[derive(Clone, Copy)]
struct AgreedTime(u64);

impl HostWallClock for AgreedTime {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl HostMonotonicClock for AgreedTime {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.saturating_mul(1_000_000)
    }
}
