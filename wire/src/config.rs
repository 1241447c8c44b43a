//! The deployment description (TOML): every agreement node, app, execution
//! replica, client and the orchestrator, with addresses and public keys.
//! Secret keys live beside it in `keys/NAME.key`, one file per principal.

use crate::crypto::{Identity, Keyring, PublicKey};
use crate::ids::{AppId, ClientId, NodeId, Principal, ReplicaId};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid deployment: {0}")]
    Invalid(String),
    #[error("key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
}

/// Protocol timing and batching knobs; the defaults suit one machine on loopback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Most client batches the primary puts in one proposal.
    pub batch_max: usize,
    /// A proposal takes no further client batch once it holds this many
    /// requests (it always takes one). Smaller proposals keep several in
    /// flight, so ordering, execution and voting of consecutive ones overlap.
    pub batch_max_ops: usize,
    /// Longest the primary waits to fill a batch behind a proposal in
    /// flight (with none in flight it proposes at once), rounded up to whole
    /// milliseconds (the protocol's timers tick in ms).
    pub batch_delay_us: u64,
    /// Most proposals in flight above the last committed one.
    pub pipeline: u64,
    /// A backup that holds an unexecuted request this long starts a view change.
    pub view_change_timeout_ms: u64,
    /// No f+1 matching execution replies this long after ordering: an incident.
    pub reply_timeout_ms: u64,
    /// A client re-sends a request to all nodes when no answer came this long
    /// (at most: the client adapts the wait to its recent answer latency,
    /// and never waits past half of `view_change_timeout_ms`, so that the
    /// backups' throughput monitor sees late requests).
    pub client_retry_ms: u64,
    /// Backups reject a primary timestamp further than this from their clock.
    pub max_clock_skew_ms: u64,
    /// Log window above the low watermark (PBFT's L).
    pub log_window: u64,
    /// Most request bytes (MiB) of committed proposals each app's log keeps
    /// below its stable checkpoint for lagging peers (besides the log window
    /// bound in seqs).
    pub archive_max_mb: u64,
}

impl Timing {
    /// Sets one knob by its field name from `KEY=VALUE` (`zz bench
    /// --timing`): unknown keys and values that are not whole numbers are
    /// refused by name.
    pub fn set(&mut self, assignment: &str) -> Result<(), ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid(format!("timing {assignment:?}: {why}"));
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| invalid("expected KEY=VALUE"))?;
        let value: u64 = value
            .trim()
            .parse()
            .map_err(|_| invalid("the value must be a whole number"))?;
        let mut fields = match serde_json::to_value(&*self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(invalid("cannot represent the timing table")),
        };
        match fields.get_mut(key.trim()) {
            Some(slot) => *slot = value.into(),
            None => {
                let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                return Err(invalid(&format!("unknown key; known: {}", known.join(", "))));
            }
        }
        *self = serde_json::from_value(fields.into()).map_err(|e| invalid(&e.to_string()))?;
        Ok(())
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            batch_max: 256,
            batch_max_ops: 512,
            // What 200 µs, the earlier default, rounded up to.
            batch_delay_us: 1000,
            pipeline: 8,
            view_change_timeout_ms: 300,
            reply_timeout_ms: 400,
            client_retry_ms: 500,
            max_clock_skew_ms: 5_000,
            log_window: 4096,
            archive_max_mb: 32,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: u16,
    pub addr: SocketAddr,
    pub public_key: PublicKey,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    /// URL prefix and name: `kv` serves `/kv/...`.
    pub name: String,
    /// Which built-in app runs (`kv`, `bank`).
    pub kind: String,
    /// Public keys of the execution replicas `e0..e{2f}`, in index order.
    pub replicas: Vec<PublicKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub id: u16,
    pub name: String,
    pub public_key: PublicKey,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorEntry {
    /// Where agents and agreement nodes reach the orchestrator.
    pub addr: SocketAddr,
    pub public_key: PublicKey,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Faults tolerated: 3f+1 agreement nodes, 2f+1 replicas per app (f+1 active).
    pub f: usize,
    /// Replicas sign a checkpoint every this many sequence numbers.
    pub checkpoint_interval: u64,
    #[serde(default)]
    pub timing: Timing,
    pub nodes: Vec<NodeEntry>,
    pub apps: Vec<AppEntry>,
    pub clients: Vec<ClientEntry>,
    pub orchestrator: OrchestratorEntry,
}

/// What `generate` builds.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub f: usize,
    /// (name, kind) of each app.
    pub apps: Vec<(String, String)>,
    pub clients: Vec<String>,
    /// Agreement node `i` listens on `node_addrs[i]`; the orchestrator on `orchestrator_addr`.
    pub node_addrs: Vec<SocketAddr>,
    pub orchestrator_addr: SocketAddr,
    pub checkpoint_interval: u64,
    /// Apps of kind `wasm` named `slot-0`, `slot-1`, ...: room for tenants'
    /// Wasm apps deployed at run time (each slot has its keys and log).
    pub wasm_slots: usize,
}

/// The deployment client that deploys tenants' Wasm apps.
pub const ADMIN_CLIENT: &str = "admin";
/// The app kind of a slot for tenants' Wasm apps.
pub const WASM_KIND: &str = "wasm";

impl GenerateOptions {
    /// Loopback addresses on free ephemeral ports, for tests and `zz up`.
    pub fn local(f: usize, apps: &[&str]) -> std::io::Result<Self> {
        let ports = free_ports(3 * f + 2)?;
        let (orch, nodes) = ports.split_last().ok_or_else(|| std::io::Error::other("no ports"))?;
        Ok(GenerateOptions {
            f,
            apps: apps.iter().map(|a| (a.to_string(), a.to_string())).collect(),
            clients: vec!["gateway".into(), "bench".into(), ADMIN_CLIENT.into()],
            node_addrs: nodes.to_vec(),
            orchestrator_addr: *orch,
            checkpoint_interval: 128,
            wasm_slots: 0,
        })
    }
}

/// Finds `n` free loopback ports, for listeners that are bound later (by
/// this process or by processes it starts).
///
/// The ports come from below the kernel's ephemeral range, never from port
/// 0: an ephemeral port handed out here could be taken by any outgoing
/// connection (a client dialling a node, say) before its listener binds it,
/// and `zz demo` then failed with "address already in use". Each call hands
/// out ports this process has not handed out before, starting at a place
/// drawn from the process id so that concurrent test processes start apart,
/// and skips any port that is bound now. Another process can still bind a
/// port between this check and its use; nothing else takes it by chance.
pub fn free_ports(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    use std::sync::atomic::{AtomicU32, Ordering};
    /// How far into the pool this process has handed out ports; 0 until the first call.
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let (lo, hi) = listen_pool();
    let len = u32::from(hi - lo);
    let start = std::process::id().wrapping_mul(2_654_435_761) % len;
    let _ = CURSOR.compare_exchange(0, start + 1, Ordering::Relaxed, Ordering::Relaxed);
    let mut held = Vec::with_capacity(n);
    for _ in 0..len {
        if held.len() == n {
            break;
        }
        let at = CURSOR.fetch_add(1, Ordering::Relaxed);
        let port = lo + u16::try_from(at % len).unwrap_or(0);
        // Held until every port is found, so one call never returns a port twice.
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    if held.len() < n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no {n} free loopback ports in {lo}..{hi}"),
        ));
    }
    held.iter().map(|l| l.local_addr()).collect()
}

/// Ports `lo..hi` outside the kernel's ephemeral range (Linux's
/// `ip_local_port_range`, 32768–60999 by default): the larger of the gaps
/// below it (from 10000) and above it.
fn listen_pool() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    pool_outside(range)
}

fn pool_outside((eph_lo, eph_hi): (u16, u16)) -> (u16, u16) {
    const FLOOR: u16 = 10000;
    let below = eph_lo.saturating_sub(FLOOR);
    let above = u16::MAX - eph_hi;
    if below >= above && below >= 256 {
        (FLOOR, eph_lo)
    } else if above >= 256 {
        (eph_hi + 1, u16::MAX)
    } else {
        // The ephemeral range covers almost everything: share it.
        (FLOOR, u16::MAX)
    }
}

/// A fresh deployment with new keys for everyone.
pub fn generate(opts: &GenerateOptions) -> Result<(Deployment, Vec<Identity>), ConfigError> {
    if opts.node_addrs.len() != 3 * opts.f + 1 {
        return Err(ConfigError::Invalid(format!(
            "f={} needs {} agreement node addresses, got {}",
            opts.f,
            3 * opts.f + 1,
            opts.node_addrs.len()
        )));
    }
    let mut ids = Vec::new();
    let mut nodes = Vec::new();
    for (i, addr) in opts.node_addrs.iter().enumerate() {
        let id = Identity::generate(Principal::Node(NodeId(idx16(i)?)));
        nodes.push(NodeEntry {
            id: idx16(i)?,
            addr: *addr,
            public_key: id.public(),
        });
        ids.push(id);
    }
    let mut apps = Vec::new();
    let slots = (0..opts.wasm_slots).map(|i| (format!("slot-{i}"), WASM_KIND.to_string()));
    let all: Vec<(String, String)> = opts.apps.iter().cloned().chain(slots).collect();
    for (a, (name, kind)) in all.iter().enumerate() {
        let mut replicas = Vec::new();
        for r in 0..2 * opts.f + 1 {
            let id = Identity::generate(Principal::Replica(ReplicaId {
                app: AppId(idx16(a)?),
                index: idx16(r)?,
            }));
            replicas.push(id.public());
            ids.push(id);
        }
        apps.push(AppEntry {
            name: name.clone(),
            kind: kind.clone(),
            replicas,
        });
    }
    let mut clients = Vec::new();
    for (c, name) in opts.clients.iter().enumerate() {
        let id = Identity::generate(Principal::Client(ClientId(idx16(c)?)));
        clients.push(ClientEntry {
            id: idx16(c)?,
            name: name.clone(),
            public_key: id.public(),
        });
        ids.push(id);
    }
    let orch = Identity::generate(Principal::Orchestrator);
    let orchestrator = OrchestratorEntry {
        addr: opts.orchestrator_addr,
        public_key: orch.public(),
    };
    ids.push(orch);
    let d = Deployment {
        f: opts.f,
        checkpoint_interval: opts.checkpoint_interval,
        timing: Timing::default(),
        nodes,
        apps,
        clients,
        orchestrator,
    };
    d.validate()?;
    Ok((d, ids))
}

/// Indices of validated deployments fit in u16 (`validate` bounds the lists).
fn small(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX)
}

fn idx16(i: usize) -> Result<u16, ConfigError> {
    u16::try_from(i).map_err(|_| ConfigError::Invalid(format!("index {i} out of range")))
}

impl Deployment {
    pub fn n(&self) -> usize {
        3 * self.f + 1
    }

    /// 2f+1: prepare/commit/view-change quorums.
    pub fn quorum(&self) -> usize {
        2 * self.f + 1
    }

    /// f+1: enough that one is correct (replies, wakes, faults, orders).
    pub fn weak_quorum(&self) -> usize {
        self.f + 1
    }

    pub fn replicas_per_app(&self) -> usize {
        2 * self.f + 1
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.f == 0 {
            return bad("f must be at least 1".into());
        }
        if self.nodes.len() != self.n() {
            return bad(format!(
                "f={} needs {} nodes, found {}",
                self.f,
                self.n(),
                self.nodes.len()
            ));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if usize::from(n.id) != i {
                return bad(format!("nodes must be listed in id order: entry {i} has id {}", n.id));
            }
        }
        if self.apps.is_empty() {
            return bad("at least one app is needed".into());
        }
        if self.apps.len() > 1024 || self.clients.len() > 1024 || self.f > 64 {
            return bad("at most 1024 apps, 1024 clients and f <= 64".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for a in &self.apps {
            if a.name.is_empty()
                || a.name.len() > 32
                || !a
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return bad(format!("app name {:?} must be 1-32 of [a-z0-9-]", a.name));
            }
            if !names.insert(a.name.clone()) {
                return bad(format!("app {:?} listed twice", a.name));
            }
            if a.replicas.len() != self.replicas_per_app() {
                return bad(format!(
                    "app {} needs {} replicas, found {}",
                    a.name,
                    self.replicas_per_app(),
                    a.replicas.len()
                ));
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            if usize::from(c.id) != i {
                return bad(format!("clients must be listed in id order: entry {i} has id {}", c.id));
            }
        }
        if self.checkpoint_interval == 0 {
            return bad("checkpoint_interval must be positive".into());
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let d: Deployment = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        d.validate()?;
        Ok(d)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes `dir/deployment.toml` and `dir/keys/NAME.key` (mode 0600).
    pub fn write(&self, dir: &Path, ids: &[Identity]) -> Result<PathBuf, ConfigError> {
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).map_err(|source| ConfigError::Write {
            path: keys.clone(),
            source,
        })?;
        for id in ids {
            let path = keys.join(format!("{}.key", self.name(id.who)));
            write_secret(&path, &id.secret_hex())?;
        }
        let path = dir.join("deployment.toml");
        std::fs::write(&path, self.to_toml()).map_err(|source| ConfigError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Reads the secret key of `who` from `keys_dir/NAME.key` and checks it
    /// matches the public key in the deployment. A key file that group or
    /// others may access is refused, as ssh does.
    pub fn load_identity(&self, keys_dir: &Path, who: Principal) -> Result<Identity, ConfigError> {
        let path = keys_dir.join(format!("{}.key", self.name(who)));
        check_private(&path)?;
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let id = Identity::from_secret_hex(who, &text).map_err(|reason| ConfigError::Key {
            path: path.clone(),
            reason,
        })?;
        match self.public_key(who) {
            Some(pk) if pk == id.public() => Ok(id),
            Some(_) => Err(ConfigError::Key {
                path,
                reason: format!("does not match the public key of {} in the deployment", self.name(who)),
            }),
            None => Err(ConfigError::Key {
                path,
                reason: format!("{} is not in the deployment", self.name(who)),
            }),
        }
    }

    pub fn public_key(&self, who: Principal) -> Option<PublicKey> {
        match who {
            Principal::Node(n) => self.nodes.get(usize::from(n.0)).map(|e| e.public_key),
            Principal::Replica(r) => self
                .apps
                .get(usize::from(r.app.0))
                .and_then(|a| a.replicas.get(usize::from(r.index)).copied()),
            Principal::Client(c) => self.clients.get(usize::from(c.0)).map(|e| e.public_key),
            Principal::Orchestrator => Some(self.orchestrator.public_key),
        }
    }

    pub fn keyring(&self) -> Keyring {
        let mut k = Keyring::new();
        for p in self.principals() {
            if let Some(pk) = self.public_key(p) {
                k.insert(p, pk);
            }
        }
        k
    }

    pub fn principals(&self) -> Vec<Principal> {
        let mut v: Vec<Principal> = self.node_ids().map(Principal::Node).collect();
        for r in self.all_replicas() {
            v.push(Principal::Replica(r));
        }
        v.extend((0..self.clients.len()).map(|c| Principal::Client(ClientId(small(c)))));
        v.push(Principal::Orchestrator);
        v
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().map(|n| NodeId(n.id))
    }

    pub fn app_ids(&self) -> impl Iterator<Item = AppId> + '_ {
        (0..self.apps.len()).map(|a| AppId(small(a)))
    }

    pub fn replicas(&self, app: AppId) -> impl Iterator<Item = ReplicaId> + '_ {
        let n = self.apps.get(usize::from(app.0)).map_or(0, |a| a.replicas.len());
        (0..n).map(move |i| ReplicaId { app, index: small(i) })
    }

    pub fn all_replicas(&self) -> Vec<ReplicaId> {
        self.app_ids()
            .flat_map(|a| self.replicas(a).collect::<Vec<_>>())
            .collect()
    }

    pub fn app(&self, id: AppId) -> Option<&AppEntry> {
        self.apps.get(usize::from(id.0))
    }

    pub fn app_by_name(&self, name: &str) -> Option<AppId> {
        self.apps.iter().position(|a| a.name == name).map(|i| AppId(small(i)))
    }

    pub fn node_addr(&self, n: NodeId) -> Option<SocketAddr> {
        self.nodes.get(usize::from(n.0)).map(|e| e.addr)
    }

    /// `a0`, `kv-e1`, `gateway`, `orchestrator`.
    pub fn name(&self, who: Principal) -> String {
        match who {
            Principal::Node(n) => n.to_string(),
            Principal::Replica(r) => self.replica_name(r),
            Principal::Client(c) => self
                .clients
                .get(usize::from(c.0))
                .map_or_else(|| c.to_string(), |e| e.name.clone()),
            Principal::Orchestrator => "orchestrator".into(),
        }
    }

    pub fn replica_name(&self, r: ReplicaId) -> String {
        match self.app(r.app) {
            Some(a) => format!("{}-e{}", a.name, r.index),
            None => r.to_string(),
        }
    }

    /// Parses `a0`, `kv-e1`, a client name or `orchestrator`.
    pub fn parse_principal(&self, s: &str) -> Option<Principal> {
        if s == "orchestrator" {
            return Some(Principal::Orchestrator);
        }
        if let Some(n) = s.strip_prefix('a').and_then(|n| n.parse::<u16>().ok()) {
            if usize::from(n) < self.nodes.len() {
                return Some(Principal::Node(NodeId(n)));
            }
        }
        if let Some((app, idx)) = s.rsplit_once("-e") {
            if let (Some(app), Ok(index)) = (self.app_by_name(app), idx.parse::<u16>()) {
                if usize::from(index) < self.replicas_per_app() {
                    return Some(Principal::Replica(ReplicaId { app, index }));
                }
            }
        }
        self.clients
            .iter()
            .find(|c| c.name == s)
            .map(|c| Principal::Client(ClientId(c.id)))
    }
}

/// Refuses a secret file (a key, a token) whose mode lets group or others
/// at it: the mode given at creation does not stop a later `chmod` or a
/// copy from widening it.
/// Where the orchestrator's announcement of a replacement replica's key
/// lies beside its key file: `<key file>.cert`.
pub fn key_cert_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".cert");
    p.into()
}

/// A key announcement as written beside a key file: hex of its postcard
/// encoding.
pub fn key_cert_text(cert: &crate::Signed<crate::ReplicaKey>) -> String {
    hex::encode(postcard::to_stdvec(cert).unwrap_or_default()) + "\n"
}

/// Reads back what `key_cert_text` wrote.
pub fn parse_key_cert(text: &str) -> Result<crate::Signed<crate::ReplicaKey>, String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
    postcard::from_bytes(&bytes).map_err(|e| format!("not a key announcement: {e}"))
}

pub fn check_private(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::Key {
                path: path.into(),
                reason: format!(
                    "mode {mode:o} lets group or others at it; run `chmod 600 {}`",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

/// Writes a secret (a key file): mode 0600, tightened if the file was there.
pub fn write_secret(path: &Path, text: &str) -> Result<(), ConfigError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path).map_err(|source| ConfigError::Write {
        path: path.into(),
        source,
    })?;
    // `mode` applies only when the file is created: tighten one that was there.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|source| ConfigError::Write {
                path: path.into(),
                source,
            })?;
    }
    f.write_all(text.as_bytes()).map_err(|source| ConfigError::Write {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn timing_set_changes_one_knob_and_names_bad_ones() {
        let mut t = Timing::default();
        t.set("pipeline=2").unwrap();
        t.set(" batch_delay_us = 3000").unwrap();
        assert_eq!((t.pipeline, t.batch_delay_us), (2, 3000));
        assert_eq!(t.batch_max_ops, Timing::default().batch_max_ops);
        for bad in ["pipeline", "pipeline=two", "pipeline=-1", "no_such_knob=1"] {
            let e = t.set(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{e}");
        }
        let e = t.set("no_such_knob=1").unwrap_err().to_string();
        assert!(
            e.contains("known: ") && e.contains("batch_max_ops") && e.contains("pipeline"),
            "{e}"
        );
        assert_eq!(t.pipeline, 2, "a refused assignment changes nothing");
    }

    #[test]
    fn free_ports_come_from_outside_the_ephemeral_range_and_never_twice() {
        assert_eq!(pool_outside((32768, 60999)), (10000, 32768));
        assert_eq!(pool_outside((1024, 40000)), (40001, u16::MAX));
        assert_eq!(pool_outside((1024, 65535)), (10000, u16::MAX));
        let (lo, hi) = listen_pool();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            for a in free_ports(7).unwrap() {
                assert!((lo..hi).contains(&a.port()), "{a} outside {lo}..{hi}");
                assert!(seen.insert(a.port()), "{a} handed out twice");
            }
        }
    }

    #[test]
    fn generate_write_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let opts = GenerateOptions::local(1, &["kv", "bank"]).unwrap();
        let (d, ids) = generate(&opts).unwrap();
        let path = d.write(dir.path(), &ids).unwrap();
        let loaded = Deployment::load(&path).unwrap();
        assert_eq!(loaded, d);
        assert_eq!(loaded.nodes.len(), 4);
        assert_eq!(loaded.apps[1].replicas.len(), 3);
        let r = Principal::Replica(ReplicaId {
            app: AppId(1),
            index: 2,
        });
        assert_eq!(loaded.name(r), "bank-e2");
        assert_eq!(loaded.parse_principal("bank-e2"), Some(r));
        assert_eq!(loaded.parse_principal("a3"), Some(Principal::Node(NodeId(3))));
        assert_eq!(loaded.parse_principal("a4"), None);
        assert_eq!(loaded.parse_principal("kv-e3"), None);
        let id = loaded.load_identity(&dir.path().join("keys"), r).unwrap();
        assert_eq!(id.public(), loaded.apps[1].replicas[2]);
        // A key file holding someone else's key is refused.
        std::fs::copy(dir.path().join("keys/a0.key"), dir.path().join("keys/a1.key")).unwrap();
        assert!(loaded
            .load_identity(&dir.path().join("keys"), Principal::Node(NodeId(1)))
            .is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused_and_a_rewrite_tightens_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (d, ids) = generate(&GenerateOptions::local(1, &["kv"]).unwrap()).unwrap();
        d.write(dir.path(), &ids).unwrap();
        let keys = dir.path().join("keys");
        let a1 = keys.join("a1.key");
        let me = Principal::Node(NodeId(1));
        std::fs::set_permissions(&a1, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = d.load_identity(&keys, me).unwrap_err().to_string();
        assert!(err.contains("a1.key") && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&a1, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(d.load_identity(&keys, me).is_err(), "group-readable key accepted");
        // Writing the deployment again fixes the mode of existing key files.
        d.write(dir.path(), &ids).unwrap();
        let mode = std::fs::metadata(&a1).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(d.load_identity(&keys, me).is_ok());
    }

    #[test]
    fn unknown_fields_and_wrong_counts_are_rejected() {
        let opts = GenerateOptions::local(1, &["kv"]).unwrap();
        let (d, _) = generate(&opts).unwrap();
        let text = d.to_toml().replace("checkpoint_interval", "checkpoint_intervall");
        assert!(toml::from_str::<Deployment>(&text).is_err());
        let mut short = d.clone();
        short.nodes.pop();
        assert!(short.validate().is_err());
    }
}
