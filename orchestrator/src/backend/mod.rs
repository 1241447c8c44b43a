//! Where replicas run. The pool drives a backend through this trait: the
//! embedded `process` backend runs each replica as a child process, the
//! `libvirt` backend (feature `libvirt`) as a VM on one or more hypervisor
//! hosts. A backend carries out lifecycle operations and reports instances
//! that stopped; it decides nothing (which replica wakes, which is fenced
//! is the pool's and the certificates' business).

#[cfg(feature = "libvirt")]
pub mod libvirt;
pub mod process;
mod procfs;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use process::{Launch, ProcessBackend};

/// A backend's name for one running (or stopped) replica instance; opaque to
/// the pool, persisted so a restarted orchestrator can re-attach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub name: String,
    pub generation: u64,
    /// Backend-specific locator (process: `pid:start_ticks`).
    pub token: String,
}

/// What the pool asks a backend to create.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    /// `kv-e1`
    pub name: String,
    pub generation: u64,
    /// The instance's own key, for every generation after the first (whose
    /// key is the deployment's `<name>.key`).
    pub key: Option<GenerationKey>,
}

/// A replacement's key and the orchestrator's announcement of it, which
/// the agent checks its key against (`<key file>.cert`).
#[derive(Clone, Debug)]
pub struct GenerationKey {
    pub identity: zz_wire::Identity,
    pub cert: zz_wire::Signed<zz_wire::ReplicaKey>,
}

impl GenerationKey {
    /// Writes `<dir>/<name>-g<generation>.key` (0600) and its `.cert`;
    /// returns the key file's path.
    pub fn write(&self, dir: &std::path::Path, name: &str, generation: u64) -> std::io::Result<std::path::PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let key = dir.join(format!("{name}-g{generation}.key"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)?;
        f.write_all(format!("{}\n", self.identity.secret_hex()).as_bytes())?;
        f.sync_all()?;
        std::fs::write(
            zz_wire::config::key_cert_path(&key),
            zz_wire::config::key_cert_text(&self.cert),
        )?;
        Ok(key)
    }
}

/// The backend's own view of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    Running,
    Paused,
    /// Gone: exited, destroyed, or never existed.
    Stopped,
}

/// Reported without being asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendEvent {
    /// The instance stopped on its own (not through `hibernate`/`destroy`).
    Exited { handle: Handle, status: String },
    /// Something the host runs beside the replicas changed on its own (`zz
    /// up`'s supervisor restarted an agreement node): recorded in the event
    /// log as `kind` (see the `EVENT_*` kinds in `model`), nothing else.
    Host { kind: &'static str, detail: String },
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("spawning {name}: {source}")]
    Spawn { name: String, source: std::io::Error },
    #[error("{0} is not running")]
    NotRunning(String),
    #[error("signal to {name}: {errno}")]
    Signal { name: String, errno: nix::Error },
    #[error("handle {0:?} is not one of this backend's")]
    BadHandle(String),
    #[error("{name} did not exit within {secs}s of SIGKILL")]
    NoExit { name: String, secs: u64 },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("libvirt {op} {target}: {message}")]
    Hypervisor {
        op: &'static str,
        target: String,
        message: String,
    },
    #[error("backend configuration: {0}")]
    Config(String),
}

impl BackendError {
    /// The hypervisor host could not be reached at all (its daemon or the
    /// machine is down): nothing was done there, another host may serve.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, BackendError::Hypervisor { op: "connect", .. })
    }
}

/// The operations the replica pool needs. Every call is async; blocking
/// work happens off the runtime.
pub trait Backend: Send + Sync + 'static {
    /// `process`, `libvirt`.
    fn kind(&self) -> &'static str;
    /// Where the replica lives (process: `localhost`).
    fn host(&self, spec: &ReplicaSpec) -> String;
    /// Prepares a fresh instance (clean image, empty state) without starting it.
    fn provision<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<(), BackendError>>;
    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<Handle, BackendError>>;
    fn pause<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>>;
    fn resume<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Cold standby: nothing runs until `restore`.
    fn hibernate<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>>;
    fn restore<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<Handle, BackendError>>;
    /// Fences the instance: it is gone when this returns.
    fn destroy<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>>;
    fn state<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, BackendState>;
    /// Takes ownership again of an instance a previous orchestrator started.
    /// `Stopped` means it is gone and nothing was attached.
    fn attach<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, BackendState>;
    /// Destroys every instance this backend owns.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
    /// The fraction (0.0–1.0) of the machine's CPU time spent since the last
    /// call, when the backend runs every replica on one machine; `None`
    /// when unknown (the first call, or replicas on many hosts).
    fn cpu_busy(&self) -> Option<f64> {
        None
    }
}
