//! A deployment's Wasm slot: the app a tenant deployed at run time.
//!
//! Which component runs is itself replicated state: an ordered `ZZ-INSTALL`
//! op from the deployment's `admin` client writes the app's name, the
//! component's hash, its version and the seq it was first installed at under
//! a reserved key; `ZZ-REMOVE` deletes it. So every replica switches
//! component at the same point of the order, a replica restored from a
//! checkpoint fetches the record like any other object, and an upgrade keeps
//! the app's keys. The app's keys live under a namespace named by the seq of
//! its first install: an app deployed later in the same slot starts empty.
//!
//! The component's bytes come from a `Components` source and are checked
//! against the agreed hash before they run.

use super::wasm::{component_hash, WasmApp};
use super::{error, App, Ctx, NotRun, Txn};
use crate::merkle::Key;
use crate::state::Stale;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use zz_wire::{AppRequest, AppResponse};

/// The deployment app kind of a Wasm slot.
pub const KIND: &str = zz_wire::config::WASM_KIND;
/// The op that installs or upgrades the slot's component (body: `Install`).
pub const INSTALL: &str = "ZZ-INSTALL";
/// The op that removes the slot's app.
pub const REMOVE: &str = "ZZ-REMOVE";
/// Where the installed app's record lives; no bucket key can equal it.
const META: &[u8] = b"\0zz-app";

/// What `ZZ-INSTALL` carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    pub name: String,
    /// SHA-256 of the component, hex.
    pub hash: String,
}

/// The slot's app as the replicated state records it; also the answer of
/// `ZZ-INSTALL`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub name: String,
    pub hash: String,
    pub version: u64,
    /// The seq of the first install under this name: the keys' namespace.
    pub generation: u64,
}

/// Where a replica finds a component's bytes by hash.
pub trait Components: Send {
    fn get(&self, hash: &[u8; 32]) -> Option<Vec<u8>>;
}

/// Components as files `<hex hash>.wasm` in a directory.
pub struct DirComponents(pub PathBuf);

impl DirComponents {
    /// The bytes of `<hex hash>.wasm`, if they are there and match.
    pub fn read(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.0.join(format!("{}.wasm", hex::encode(hash)))).ok()?;
        (component_hash(&bytes) == *hash).then_some(bytes)
    }
}

impl Components for DirComponents {
    fn get(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        self.read(hash)
    }
}

/// Why the installed component cannot run.
enum Load {
    /// Not here yet: its bytes are still on their way.
    Unavailable(String),
    /// Not runnable anywhere: every replica answers the same error.
    Broken(String),
}

/// What a loaded component was loaded as: hash, name, generation.
type Loading = ([u8; 32], String, u64);

pub struct Tenant {
    components: Box<dyn Components>,
    /// The component last run (an upgrade replaces it).
    loaded: Mutex<Option<(Loading, Arc<WasmApp>)>>,
}

impl Tenant {
    pub fn new(components: Box<dyn Components>) -> Self {
        Tenant {
            components,
            loaded: Mutex::new(None),
        }
    }

    fn installed(txn: &mut Txn<'_>) -> Result<Option<Installed>, Stale> {
        Ok(txn.get(META)?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// The installed component, loaded. `Unavailable` while its bytes are
    /// not here (tried again when the seq is); `Broken` for what no
    /// replica can run (the same on all of them).
    fn app(&self, meta: &Installed) -> Result<Arc<WasmApp>, Load> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&meta.hash, &mut hash).map_err(|e| Load::Broken(format!("bad hash: {e}")))?;
        let key = (hash, meta.name.clone(), meta.generation);
        // The cache is one assignment: a poisoned lock is taken over.
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, app)) = loaded.as_ref() {
            if *k == key {
                return Ok(app.clone());
            }
        }
        let bytes = self
            .components
            .get(&hash)
            .ok_or_else(|| Load::Unavailable(format!("component {} is not available here yet", meta.hash)))?;
        let app = WasmApp::new(&meta.name, &bytes)
            .map_err(|e| Load::Broken(e.to_string()))?
            .with_namespace(meta.generation.to_le_bytes().to_vec());
        let app = Arc::new(app);
        *loaded = Some((key, app.clone()));
        Ok(app)
    }

    fn install(ctx: &Ctx, txn: &mut Txn<'_>, req: &AppRequest) -> Result<AppResponse, NotRun> {
        let Ok(install) = serde_json::from_slice::<Install>(&req.body) else {
            return Ok(error(400, "ZZ-INSTALL takes {\"name\", \"hash\"}"));
        };
        if install.hash.len() != 64 || hex::decode(&install.hash).is_err() {
            return Ok(error(400, "hash must be 64 hex digits"));
        }
        let next = match Self::installed(txn)? {
            // The same install again (a client's retry): nothing changes.
            Some(prev) if prev.name == install.name && prev.hash == install.hash => {
                return Ok(AppResponse::json(200, &prev));
            }
            Some(prev) if prev.name == install.name => Installed {
                name: install.name,
                hash: install.hash,
                version: prev.version + 1,
                generation: prev.generation,
            },
            _ => Installed {
                name: install.name,
                hash: install.hash,
                version: 1,
                generation: ctx.seq,
            },
        };
        let body = serde_json::to_vec(&next).unwrap_or_default();
        txn.put(META, body)?;
        Ok(AppResponse::json(200, &next))
    }
}

impl App for Tenant {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn keys(&self, _req: &AppRequest) -> Vec<Key> {
        vec![META.to_vec()]
    }

    fn probe(&self, ctx: &Ctx, state: &crate::state::State, req: &AppRequest) -> Vec<Key> {
        let mut txn = Txn::new(state);
        match Self::installed(&mut txn) {
            Ok(Some(meta)) => self.app(&meta).map(|a| a.probe(ctx, state, req)).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn execute(&self, ctx: &Ctx, txn: &mut Txn<'_>, req: &AppRequest) -> Result<AppResponse, NotRun> {
        if req.method == INSTALL || req.method == REMOVE {
            if !ctx.admin {
                return Ok(error(403, "only the orchestrator deploys apps"));
            }
            if req.method == INSTALL {
                return Self::install(ctx, txn, req);
            }
            txn.delete(META)?;
            return Ok(AppResponse::new(204, Vec::new()));
        }
        let Some(meta) = Self::installed(txn)? else {
            return Ok(error(404, "no app is deployed here"));
        };
        let named = req.path.trim_start_matches('/').split(['/', '?']).next().unwrap_or("");
        if named != meta.name {
            return Ok(error(404, &format!("no app named {named:?} here")));
        }
        match self.app(&meta) {
            Ok(app) => app.execute(ctx, txn, req),
            Err(Load::Unavailable(why)) => Err(NotRun::Unavailable(format!("app {}: {why}", meta.name))),
            Err(Load::Broken(why)) => {
                tracing::error!("app {}: {why}", meta.name);
                Ok(error(503, "component unavailable"))
            }
        }
    }

    fn may_be_unavailable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

    use super::*;
    use crate::app;
    use crate::merkle::Shape;
    use crate::state::State;
    use zz_wire::NonDet;

    /// Components by hash from the examples directory.
    struct Examples;

    impl Components for Examples {
        fn get(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
            ["counter", "kv"].iter().find_map(|name| {
                let path = format!("{}/../examples/{name}/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
                let bytes = std::fs::read(path).ok()?;
                (component_hash(&bytes) == *hash).then_some(bytes)
            })
        }
    }

    fn hash_of(name: &str) -> String {
        let path = format!("{}/../examples/{name}/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
        hex::encode(component_hash(&std::fs::read(path).unwrap()))
    }

    fn call(t: &Tenant, s: &mut State, seq: u64, admin: bool, method: &str, path: &str, body: Vec<u8>) -> AppResponse {
        let ctx = Ctx {
            seq,
            nondet: NonDet {
                timestamp_ms: 1_000 * seq,
                seed: seq,
            },
            op: 0,
            admin,
        };
        app::run(t, s, &ctx, &AppRequest::new(method, path, body)).unwrap()
    }

    fn install(name: &str, component: &str) -> Vec<u8> {
        serde_json::to_vec(&Install {
            name: name.into(),
            hash: hash_of(component),
        })
        .unwrap()
    }

    #[test]
    fn only_the_admin_installs_and_an_upgrade_keeps_the_keys() {
        let t = Tenant::new(Box::new(Examples));
        let mut s = State::new(Shape::default());
        assert_eq!(call(&t, &mut s, 1, false, "GET", "/c/", vec![]).status, 404);
        // A web client cannot install.
        let r = call(&t, &mut s, 2, false, INSTALL, "/", install("c", "counter"));
        assert_eq!(r.status, 403);
        let r = call(&t, &mut s, 3, true, INSTALL, "/", install("c", "counter"));
        assert_eq!(r.status, 200);
        let first: Installed = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((first.version, first.generation), (1, 3));
        // The same install again changes nothing.
        let again = call(&t, &mut s, 4, true, INSTALL, "/", install("c", "counter"));
        assert_eq!(serde_json::from_slice::<Installed>(&again.body).unwrap(), first);
        for seq in 5..8 {
            assert_eq!(call(&t, &mut s, seq, false, "POST", "/c/incr", vec![]).status, 200);
        }
        // Another app's name is not served here.
        assert_eq!(call(&t, &mut s, 8, false, "GET", "/other/", vec![]).status, 404);
        // Upgraded to the kv component: version 2, the counter's key still there.
        let r = call(&t, &mut s, 9, true, INSTALL, "/", install("c", "kv"));
        let second: Installed = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((second.version, second.generation), (2, 3));
        let r = call(&t, &mut s, 10, false, "GET", "/c/count", vec![]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, 3u64.to_le_bytes());
        // Removed, then deployed again under another name: it starts empty.
        assert_eq!(call(&t, &mut s, 11, true, REMOVE, "/", vec![]).status, 204);
        assert_eq!(call(&t, &mut s, 12, false, "GET", "/c/count", vec![]).status, 404);
        call(&t, &mut s, 13, true, INSTALL, "/", install("d", "kv"));
        assert_eq!(call(&t, &mut s, 14, false, "GET", "/d/count", vec![]).status, 404);
    }
}
