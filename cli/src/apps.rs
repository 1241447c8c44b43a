//! Tenants' Wasm apps, the parts that live beside the orchestrator: the
//! `Installer` behind `/v1/apps` (validation with the agent's own runtime,
//! the component files replicas read, ordered installs through the
//! deployment's `admin` client) and the gateway's routes to them.

use crate::admin::AdminClient;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use zz_agent::app::tenant::{Install, Installed, INSTALL, REMOVE};
use zz_agreement::client::{Client, ClientError};
use zz_orchestrator::api::apps::Installer;
use zz_orchestrator::model::{AppView, TenantApp};
use zz_wire::{AppId, AppRequest, Deployment};

/// How long an install or removal may take to be certified (replicas of a
/// new app are still starting when it is first sent).
const CERTIFY_WITHIN: Duration = Duration::from_secs(60);

/// How often a gateway apart from the orchestrator reads the app list.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Tenant app name → the deployment slot it runs in; what the gateway reads.
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<String, AppId>>>);

impl Routes {
    pub fn get(&self, name: &str) -> Option<AppId> {
        self.0.read().ok()?.get(name).copied()
    }

    /// Routes for `apps` as the admin API lists them: each deployed Wasm
    /// app (version 1 or later) to its slot.
    fn set(&self, dep: &Deployment, apps: &[AppView]) {
        let next = apps
            .iter()
            .filter(|a| a.kind == zz_wire::config::WASM_KIND && a.version.is_some_and(|v| v > 0))
            .filter_map(|a| Some((a.name.clone(), dep.app_by_name(a.slot.as_deref()?)?)))
            .collect();
        if let Ok(mut r) = self.0.write() {
            *r = next;
        }
    }

    /// For a gateway apart from the orchestrator (`zz gateway
    /// --apps-from`): reads `GET /v1/apps` every `FOLLOW_EVERY` and routes
    /// what it lists. While the admin API cannot be read, the last routes
    /// stay (logged once per outage).
    pub fn follow(&self, admin: AdminClient, dep: Arc<Deployment>) -> tokio::task::JoinHandle<()> {
        let routes = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let apps = admin
                    .get("/v1/apps")
                    .await
                    .and_then(|v| serde_json::from_value::<Vec<AppView>>(v).map_err(anyhow::Error::from));
                match apps {
                    Ok(apps) => {
                        routes.set(&dep, &apps);
                        if failing {
                            tracing::info!("reading the apps from the admin API again");
                        }
                        failing = false;
                    }
                    Err(e) if !failing => {
                        tracing::warn!("cannot read the apps from the admin API (keeping the last routes): {e:#}");
                        failing = true;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
            }
        })
    }

    /// The orchestrator's hook: routes for the apps it now holds.
    pub fn hook(&self, dep: Arc<Deployment>) -> zz_orchestrator::controller::AppsHook {
        let routes = self.0.clone();
        Arc::new(move |apps: &[TenantApp]| {
            let next = apps
                .iter()
                .filter(|a| a.version > 0)
                .filter_map(|a| dep.app_by_name(&a.slot).map(|s| (a.name.clone(), s)))
                .collect();
            if let Ok(mut r) = routes.write() {
                *r = next;
            }
        })
    }
}

pub struct AppInstaller {
    /// `<data dir>/components`: agents read `<hash>.wasm` from here.
    pub components: PathBuf,
    pub client: Client,
}

impl AppInstaller {
    /// Sends an admin op until it is certified or `CERTIFY_WITHIN` passes.
    async fn order(client: Client, slot: AppId, req: AppRequest) -> Result<zz_wire::AppResponse, String> {
        let start = Instant::now();
        loop {
            match client.call(slot, req.clone()).await {
                Ok(r) => return Ok(r),
                Err(ClientError::Timeout(_)) if start.elapsed() < CERTIFY_WITHIN => continue,
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    }
}

impl Installer for AppInstaller {
    fn validate(&self, component: &[u8]) -> Result<(), String> {
        zz_agent::app::wasm::validate(component).map_err(|e| e.to_string())
    }

    fn store(&self, component: &[u8]) -> Result<String, String> {
        let hash = hex::encode(zz_agent::app::wasm::component_hash(component));
        let path = self.components.join(format!("{hash}.wasm"));
        if path.exists() {
            return Ok(hash);
        }
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.components)?;
            // Two deploys of the same bytes at once each write their own.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = self.components.join(format!(".{hash}.{}.{n}.tmp", std::process::id()));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(component)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.components)?.sync_all()
        };
        write().map_err(|e| format!("storing the component in {}: {e}", self.components.display()))?;
        Ok(hash)
    }

    fn install(&self, slot: AppId, name: String, hash: String) -> BoxFuture<'static, Result<u64, String>> {
        let client = self.client.clone();
        Box::pin(async move {
            let body = serde_json::to_vec(&Install { name, hash }).map_err(|e| e.to_string())?;
            let req = AppRequest::new(INSTALL, "/", body);
            let resp = Self::order(client, slot, req).await?;
            if resp.status != 200 {
                return Err(format!(
                    "replicas answered {}: {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                ));
            }
            let done: Installed = serde_json::from_slice(&resp.body).map_err(|e| e.to_string())?;
            Ok(done.version)
        })
    }

    fn component(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        zz_agent::app::tenant::DirComponents(self.components.clone()).read(hash)
    }

    fn remove(&self, slot: AppId) -> BoxFuture<'static, Result<(), String>> {
        let client = self.client.clone();
        Box::pin(async move {
            let resp = Self::order(client, slot, AppRequest::new(REMOVE, "/", Vec::new())).await?;
            match resp.status {
                204 => Ok(()),
                s => Err(format!(
                    "replicas answered {s}: {}",
                    String::from_utf8_lossy(&resp.body)
                )),
            }
        })
    }
}
