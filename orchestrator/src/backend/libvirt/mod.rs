//! The libvirt backend: each replica is a small VM (the shared guest image of
//! `vm-images/` plus a per-VM initrd holding its identity, both volumes of a
//! storage pool on the VM's host, see `images`) on one of several libvirt
//! hosts. Pause is suspend, resume is resume, hibernate is a managed
//! save, restore starts the domain again (libvirt restores the saved image),
//! destroy removes the domain, its initrd volume and its files.
//!
//! Domains are named `zz-<tag>-<replica>-g<generation>`, so a restarted
//! orchestrator finds its own by name and `shutdown` removes them all.
//! A handle's token is `<domain>@<host uri>`.

mod accel;
mod domain;
mod files;
mod hv;
mod images;
mod initrd;
mod watch;

pub use accel::{Accel, AccelMode};
pub use domain::BOOT_MARKER;

use super::{Backend, BackendError, BackendEvent, BackendState, Handle, ReplicaSpec};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, OnceCell};
use tokio::task::JoinHandle;

/// What the backend needs to know; paths may be relative (made absolute at
/// construction, since libvirt resolves them in another process).
#[derive(Clone, Debug)]
pub struct LibvirtConfig {
    /// Libvirt connection URIs: `qemu:///system`, `qemu+ssh://host/system`, ...
    /// The state dir's path must be valid on every host (serial logs).
    pub hosts: Vec<String>,
    pub accel: AccelMode,
    /// Holds `vmlinuz` and `initramfs.cpio.gz` (`vm-images/out`), read here
    /// and uploaded to each host's storage pool.
    pub image_dir: PathBuf,
    /// The libvirt storage pool holding the images on every host (a `dir`
    /// pool in `/var/lib/libvirt/images/<pool>`, created where missing).
    pub pool: String,
    /// Per-VM directories live in `<state_dir>/vms/<domain>/`.
    pub state_dir: PathBuf,
    pub memory_mib: u32,
    /// Injected into every guest as `/etc/zz/deployment.toml`.
    pub deployment: PathBuf,
    /// `<keys_dir>/<replica>.key` is injected as `/etc/zz/replica.key`.
    pub keys_dir: PathBuf,
    /// Names this deployment's domains (`zz-<tag>-...`); letters, digits,
    /// `_` and `.` only, so no tag's prefix is another tag's prefix.
    pub tag: String,
    /// How often domain states are polled to notice VMs that stopped.
    pub poll_interval: Duration,
    /// How long the `auto` probe waits for a kvm guest's boot marker.
    pub probe_timeout: Duration,
}

impl LibvirtConfig {
    /// One local host (`qemu:///system`), `auto` accelerator, 256 MiB.
    pub fn new(tag: &str, deployment: PathBuf, keys_dir: PathBuf, image_dir: PathBuf, state_dir: PathBuf) -> Self {
        LibvirtConfig {
            hosts: vec!["qemu:///system".into()],
            accel: AccelMode::Auto,
            image_dir,
            pool: "zz-images".into(),
            state_dir,
            memory_mib: 256,
            deployment,
            keys_dir,
            tag: tag.into(),
            poll_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(20),
        }
    }
}

/// An instance the backend believes is up (running or paused); the watcher
/// reports it if it stops. `seq` tells one tracking of a name from the next.
struct Tracked {
    handle: Handle,
    seq: u64,
    uri: String,
    domain: String,
}

pub(crate) struct Inner {
    cfg: LibvirtConfig,
    hosts: hv::Hosts,
    /// Per host URI, resolved once for the backend's lifetime.
    accel: Mutex<HashMap<String, Arc<OnceCell<Accel>>>>,
    vms: Mutex<HashMap<String, Tracked>>,
    /// Domain name -> the host its provision landed on (see `candidates`).
    placed: Mutex<HashMap<String, String>>,
    seq: AtomicU64,
    events: mpsc::Sender<BackendEvent>,
}

impl Inner {
    fn tracked(&self) -> MutexGuard<'_, HashMap<String, Tracked>> {
        // A poisoned lock only means a panic elsewhere; the map is still sound.
        self.vms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn vm_dir(&self, domain: &str) -> PathBuf {
        self.cfg.state_dir.join("vms").join(domain)
    }

    /// The image files, whose content names their volumes.
    fn read_image(&self) -> Result<(Vec<u8>, Vec<u8>), BackendError> {
        let read = |f: &str| {
            let p = self.cfg.image_dir.join(f);
            std::fs::read(&p).map_err(|e| BackendError::Config(format!("reading {}: {e}", p.display())))
        };
        Ok((read("vmlinuz")?, read("initramfs.cpio.gz")?))
    }

    /// The host's pool, with the current kernel and initramfs in it.
    fn shared_image(
        &self,
        conn: &virt::connect::Connect,
    ) -> Result<(virt::storage_pool::StoragePool, images::Shared), BackendError> {
        let (kernel, initramfs) = self.read_image()?;
        let pool = images::ensure_pool(conn, &self.cfg.pool)?;
        let shared = images::shared(&pool, &kernel, &initramfs)?;
        Ok((pool, shared))
    }
}

pub struct LibvirtBackend {
    inner: Arc<Inner>,
    watcher: JoinHandle<()>,
}

impl LibvirtBackend {
    /// Checks the configuration and starts the state watcher; must be called
    /// inside a tokio runtime. Connects to no host yet.
    pub fn new(mut cfg: LibvirtConfig, events: mpsc::Sender<BackendEvent>) -> Result<Self, BackendError> {
        if cfg.hosts.is_empty() {
            return Err(BackendError::Config("no libvirt hosts".into()));
        }
        let tag_ok = !cfg.tag.is_empty()
            && cfg
                .tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !tag_ok {
            return Err(BackendError::Config(format!(
                "deployment tag {:?}: use letters, digits, '_' and '.'",
                cfg.tag
            )));
        }
        if !domain::valid_word(&cfg.pool) {
            return Err(BackendError::Config(format!(
                "storage pool name {:?}: use letters, digits, '_', '.' and '-'",
                cfg.pool
            )));
        }
        if cfg.memory_mib < 64 {
            return Err(BackendError::Config(format!(
                "{} MiB is too little memory for a replica VM",
                cfg.memory_mib
            )));
        }
        for p in [
            &mut cfg.image_dir,
            &mut cfg.state_dir,
            &mut cfg.deployment,
            &mut cfg.keys_dir,
        ] {
            *p = std::path::absolute(&*p)?;
        }
        if let Some(remote) = cfg.hosts.iter().find(|u| remote_host(u).is_some()) {
            let dep = zz_wire::Deployment::load(&cfg.deployment)
                .map_err(|e| BackendError::Config(format!("{}: {e}", cfg.deployment.display())))?;
            let on_loopback = dep
                .nodes
                .iter()
                .map(|n| n.addr)
                .chain([dep.orchestrator.addr])
                .find(|a| a.ip().is_loopback());
            if let Some(addr) = on_loopback {
                return Err(BackendError::Config(format!(
                    "host {remote} is another machine, but the deployment has {addr} on loopback, \
                     which its guests cannot reach: give the nodes and the orchestrator real \
                     addresses (zz keygen --nodes ... --orchestrator ...)"
                )));
            }
        }
        for f in ["vmlinuz", "initramfs.cpio.gz"] {
            if !cfg.image_dir.join(f).is_file() {
                return Err(BackendError::Config(format!(
                    "no {f} in {} (build it with vm-images/build.sh)",
                    cfg.image_dir.display()
                )));
            }
        }
        // libvirt's default handler prints every error (even the "no such
        // domain" we expect) to stderr; errors reach us as values anyway.
        virt::error::clear_error_callback();
        let every = cfg.poll_interval;
        let inner = Arc::new(Inner {
            cfg,
            hosts: hv::Hosts::default(),
            accel: Mutex::new(HashMap::new()),
            vms: Mutex::new(HashMap::new()),
            placed: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            events,
        });
        let watcher = tokio::spawn(watch::run(Arc::downgrade(&inner), every));
        Ok(LibvirtBackend { inner, watcher })
    }

    pub fn config(&self) -> &LibvirtConfig {
        &self.inner.cfg
    }

    /// The domain type used on `uri`; for `auto`, probes once per host.
    pub async fn accel(&self, uri: &str) -> Result<Accel, BackendError> {
        let cell = {
            let mut map = self.inner.accel.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(uri.to_string()).or_default().clone()
        };
        let inner = &self.inner;
        cell.get_or_try_init(|| async move {
            match inner.cfg.accel {
                AccelMode::Kvm => Ok(Accel::Kvm),
                AccelMode::Qemu => Ok(Accel::Qemu),
                AccelMode::Auto => accel::probe(inner, uri).await,
            }
        })
        .await
        .copied()
    }

    /// `zz-<tag>-<replica>-g<generation>`.
    pub fn domain_name(&self, spec: &ReplicaSpec) -> String {
        domain::domain_name(&self.inner.cfg.tag, &spec.name, spec.generation)
    }

    /// The replica VM's directory: domain XML, serial console log.
    pub fn vm_dir(&self, spec: &ReplicaSpec) -> PathBuf {
        self.inner.vm_dir(&self.domain_name(spec))
    }

    /// Everything the guest printed on its console (kernel, `/init`, agent),
    /// as a path on the VM's host (see `console_path`).
    pub fn serial_log(&self, spec: &ReplicaSpec) -> PathBuf {
        console_path(&self.placement(spec), &self.vm_dir(spec), &self.domain_name(spec))
    }

    /// Every domain on the configured hosts carrying this deployment's
    /// prefix, as (host uri, domain name): what a restarted orchestrator
    /// adopts or removes.
    pub async fn owned_domains(&self) -> Result<Vec<(String, String)>, BackendError> {
        let inner = self.inner.clone();
        blocking(move || {
            let prefix = domain::prefix(&inner.cfg.tag);
            let mut out = Vec::new();
            for uri in &inner.cfg.hosts {
                let conn = match inner.hosts.conn(uri) {
                    Err(e) if e.is_unreachable() => {
                        // Its domains are lost with it; the certificate path
                        // replaces them like any silent replica.
                        tracing::warn!(host = %uri, "host unreachable, its domains not adopted: {e}");
                        continue;
                    }
                    c => c?,
                };
                for name in hv::list_prefixed(&conn, &prefix)? {
                    out.push((uri.clone(), name));
                }
            }
            Ok(out)
        })
        .await
    }

    fn locate(&self, h: &Handle) -> Result<(String, String), BackendError> {
        let (domain, uri) = h
            .token
            .split_once('@')
            .ok_or_else(|| BackendError::BadHandle(h.token.clone()))?;
        let ours = domain::parse_domain_name(&self.inner.cfg.tag, domain)
            .is_some_and(|(name, generation)| name == h.name && generation == h.generation);
        if !ours {
            return Err(BackendError::BadHandle(h.token.clone()));
        }
        Ok((uri.to_string(), domain.to_string()))
    }

    fn track(&self, handle: &Handle, uri: &str, domain: &str) {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        self.inner.tracked().insert(
            handle.name.clone(),
            Tracked {
                handle: handle.clone(),
                seq,
                uri: uri.to_string(),
                domain: domain.to_string(),
            },
        );
    }

    /// Stops watching `name` before a deliberate stop, so it is not reported.
    fn untrack(&self, name: &str) {
        self.inner.tracked().remove(name);
    }

    fn handle(&self, spec: &ReplicaSpec, uri: &str, domain: &str) -> Handle {
        Handle {
            name: spec.name.clone(),
            generation: spec.generation,
            token: format!("{domain}@{uri}"),
        }
    }

    fn checked(&self, spec: &ReplicaSpec) -> Result<(), BackendError> {
        if domain::valid_word(&spec.name) {
            Ok(())
        } else {
            Err(BackendError::Config(format!("bad replica name {:?}", spec.name)))
        }
    }

    /// Anti-affinity: replica `i` of an app prefers host `i mod hosts`, so
    /// one app's replicas share a host only when there are fewer hosts (or
    /// some are down); the other hosts follow in order, as fallbacks.
    fn candidates(&self, spec: &ReplicaSpec) -> Vec<String> {
        let hosts = &self.inner.cfg.hosts;
        let i = replica_index(&spec.name).unwrap_or_else(|| spec.name.bytes().map(usize::from).sum::<usize>());
        (0..hosts.len()).map(|k| hosts[(i + k) % hosts.len()].clone()).collect()
    }

    fn placed(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.inner.placed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host a provisioned instance landed on, else its first choice.
    fn placement(&self, spec: &ReplicaSpec) -> String {
        let domain = self.domain_name(spec);
        match self.placed().get(&domain) {
            Some(uri) => uri.clone(),
            None => self.candidates(spec).swap_remove(0),
        }
    }

    /// Provisions on the first candidate host that answers: a host that
    /// cannot be reached (its daemon or the machine down) is skipped, so
    /// the replacement of a replica lost with its host lands on another.
    async fn provision_vm(&self, spec: &ReplicaSpec) -> Result<(), BackendError> {
        self.checked(spec)?;
        let domain = self.domain_name(spec);
        self.placed().remove(&domain);
        let mut last = None;
        for uri in self.candidates(spec) {
            match self.provision_on(spec, &uri).await {
                Err(e) if e.is_unreachable() => {
                    tracing::warn!(%domain, host = %uri, "host unreachable, trying the next: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    self.placed().insert(domain, uri);
                    return Ok(());
                }
            }
        }
        Err(last.unwrap_or_else(|| BackendError::Config("no libvirt hosts".into())))
    }

    async fn provision_on(&self, spec: &ReplicaSpec, uri: &str) -> Result<(), BackendError> {
        let uri = uri.to_string();
        let accel = self.accel(&uri).await?;
        let domain = self.domain_name(spec);
        self.untrack(&spec.name);
        let inner = self.inner.clone();
        let (name, d, u) = (spec.name.clone(), domain.clone(), uri.clone());
        let generation_key = spec.key.clone();
        let provisioned = blocking(move || {
            // A leftover of the same generation (a provision retried after a
            // crash) would boot with stale state: clean image means clean.
            let conn = inner.hosts.conn(&uri)?;
            hv::remove(&conn, &domain)?;
            let cfg = &inner.cfg;
            let vms = cfg.state_dir.join("vms");
            std::fs::create_dir_all(&vms)?;
            // qemu runs as another user and must traverse down to the files.
            for d in [&cfg.state_dir, &vms] {
                files::ensure_traversable(d)?;
            }
            let dir = inner.vm_dir(&domain);
            files::fresh_dir(&dir)?;
            let read =
                |p: &Path| std::fs::read(p).map_err(|e| BackendError::Config(format!("reading {}: {e}", p.display())));
            let deployment = read(&cfg.deployment)?;
            let (key, cert) = match &generation_key {
                Some(k) => (
                    format!("{}\n", k.identity.secret_hex()).into_bytes(),
                    Some(zz_wire::config::key_cert_text(&k.cert).into_bytes()),
                ),
                None => (read(&cfg.keys_dir.join(format!("{name}.key")))?, None),
            };
            let (pool, shared) = inner.shared_image(&conn)?;
            let identity = initrd::identity_archive(&deployment, &key, cert.as_deref())?;
            let initrd = images::replica_initrd(&pool, &images::replica_volume(&domain), &shared, &identity)?;
            let dep = zz_wire::Deployment::load(&cfg.deployment)
                .map_err(|e| BackendError::Config(format!("{}: {e}", cfg.deployment.display())))?;
            let cmdline = domain::cmdline(&name, &domain::routes(&dep));
            std::fs::write(dir.join("cmdline"), format!("{cmdline}\n"))?;
            let xml = domain::render(&domain::DomainSpec {
                name: &domain,
                memory_mib: cfg.memory_mib,
                vcpus: 1,
                accel,
                kernel: Path::new(&shared.kernel),
                initrd: Path::new(&initrd),
                cmdline: &cmdline,
                serial_log: &console_path(&uri, &dir, &domain),
            })?;
            std::fs::write(dir.join("domain.xml"), xml)?;
            Ok(())
        })
        .await;
        said_if_failed(provisioned, &d, &u)
    }

    async fn boot(&self, spec: &ReplicaSpec) -> Result<Handle, BackendError> {
        self.checked(spec)?;
        let uri = self.placement(spec);
        let domain = self.domain_name(spec);
        let xml_path = self.inner.vm_dir(&domain).join("domain.xml");
        let xml = tokio::fs::read_to_string(&xml_path).await.map_err(|e| {
            BackendError::Config(format!(
                "{} is not provisioned ({}: {e})",
                spec.name,
                xml_path.display()
            ))
        })?;
        self.untrack(&spec.name);
        let (inner, u, d) = (self.inner.clone(), uri.clone(), domain.clone());
        let booted = blocking(move || hv::define_and_boot(&*inner.hosts.conn(&u)?, &d, &xml)).await;
        said_if_failed(booted, &domain, &uri)?;
        let handle = self.handle(spec, &uri, &domain);
        self.track(&handle, &uri, &domain);
        Ok(handle)
    }

    async fn wake_saved(&self, spec: &ReplicaSpec) -> Result<Handle, BackendError> {
        self.checked(spec)?;
        let uri = self.placement(spec);
        let domain = self.domain_name(spec);
        let (inner, u, d) = (self.inner.clone(), uri.clone(), domain.clone());
        let defined = blocking(move || {
            let conn = inner.hosts.conn(&u)?;
            match hv::lookup(&conn, &d)? {
                Some(dom) => hv::start_defined(&dom, &d).map(|()| true),
                None => Ok(false),
            }
        })
        .await;
        if !said_if_failed(defined, &domain, &uri)? {
            // Nothing saved to restore (removed behind our back): a cold
            // boot from the provisioned files is the next best thing.
            tracing::warn!(%domain, "no saved domain to restore; booting it cold");
            return self.boot(spec).await;
        }
        let handle = self.handle(spec, &uri, &domain);
        self.track(&handle, &uri, &domain);
        Ok(handle)
    }

    async fn on_domain<T: Send + 'static>(
        &self,
        h: &Handle,
        op: fn(&virt::connect::Connect, &str) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let (uri, domain) = self.locate(h)?;
        let inner = self.inner.clone();
        blocking(move || op(&*inner.hosts.conn(&uri)?, &domain)).await
    }

    async fn remove_vm(&self, h: &Handle) -> Result<(), BackendError> {
        let (uri, domain) = self.locate(h)?;
        self.placed().remove(&domain);
        if self.inner.tracked().get(&h.name).is_some_and(|t| t.handle == *h) {
            self.untrack(&h.name);
        }
        let inner = self.inner.clone();
        blocking(move || remove_everything(&inner, &uri, &domain)).await
    }

    async fn shutdown_all(&self) {
        let uris: Vec<String> = {
            let mut tracked = self.inner.tracked();
            let mut uris: Vec<String> = tracked.drain().map(|(_, t)| t.uri).collect();
            uris.extend(self.inner.cfg.hosts.iter().cloned());
            uris.sort();
            uris.dedup();
            uris
        };
        let inner = self.inner.clone();
        let done = blocking(move || {
            let prefix = domain::prefix(&inner.cfg.tag);
            for uri in &uris {
                let names = match inner.hosts.conn(uri).and_then(|c| hv::list_prefixed(&c, &prefix)) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(host = %uri, "shutdown: {e}");
                        continue;
                    }
                };
                for name in names {
                    if let Err(e) = remove_everything(&inner, uri, &name) {
                        tracing::error!(domain = %name, "shutdown: {e}");
                    }
                }
                // Provisioned but never started: an initrd volume, no domain.
                if let Err(e) = remove_initrds(&inner, uri, &prefix) {
                    tracing::error!(host = %uri, "shutdown: {e}");
                }
            }
            // Provisioned but never started: no domain, only files.
            if let Ok(dirs) = std::fs::read_dir(inner.cfg.state_dir.join("vms")) {
                for d in dirs.flatten() {
                    if d.file_name().to_string_lossy().starts_with(&prefix) {
                        let _ = std::fs::remove_dir_all(d.path());
                    }
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = done {
            tracing::error!("shutdown: {e}");
        }
    }
}

impl Drop for LibvirtBackend {
    fn drop(&mut self) {
        // VMs outlive the backend on purpose: a new orchestrator re-attaches.
        self.watcher.abort();
    }
}

/// A start that failed is logged at once with libvirt's words (the caller
/// records it too, but an operator watching `zz up` should see why nothing
/// runs without reading the event log).
fn said_if_failed<T>(started: Result<T, BackendError>, domain: &str, uri: &str) -> Result<T, BackendError> {
    if let Err(e) = &started {
        tracing::error!(%domain, host = %uri, "VM did not start: {e}");
    }
    started
}

/// Destroys and undefines a domain (with its managed save) and deletes its
/// initrd volume and its directory.
fn remove_everything(inner: &Inner, uri: &str, domain: &str) -> Result<(), BackendError> {
    let conn = inner.hosts.conn(uri)?;
    hv::remove(&conn, domain)?;
    if let Some(pool) = images::lookup_pool(&conn, &inner.cfg.pool)? {
        images::delete_volume(&pool, &images::replica_volume(domain))?;
    }
    match std::fs::remove_dir_all(inner.vm_dir(domain)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    // libvirt keeps qemu's stderr per domain name; generations would pile up.
    if uri == "qemu:///system" {
        let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{domain}.log"));
    }
    Ok(())
}

/// Deletes the initrd volumes of every domain named `<prefix>...` on a host.
fn remove_initrds(inner: &Inner, uri: &str, prefix: &str) -> Result<(), BackendError> {
    let conn = inner.hosts.conn(uri)?;
    let Some(pool) = images::lookup_pool(&conn, &inner.cfg.pool)? else {
        return Ok(());
    };
    for name in images::initrds_with(&pool, prefix)? {
        images::delete_volume(&pool, &name)?;
    }
    Ok(())
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Io(std::io::Error::other(e.to_string())))?
}

/// Where qemu writes a VM's console: in the VM's directory here, or on
/// another machine in libvirt's own qemu log directory, which exists on
/// every host running the qemu driver (our paths may not).
fn console_path(uri: &str, vm_dir: &Path, domain: &str) -> PathBuf {
    match remote_host(uri) {
        None => vm_dir.join("serial.log"),
        Some(_) => PathBuf::from(format!("/var/log/libvirt/qemu/{domain}.serial.log")),
    }
}

/// The machine a libvirt URI names, if it is not this one:
/// `qemu+ssh://root@host2:22/system` -> `host2`; `qemu:///system`, and
/// a daemon on this machine's loopback, -> `None`.
fn remote_host(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let local =
        host.is_empty() || host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!local).then_some(host)
}

/// The replica index in `kv-e2`, if the name has one.
fn replica_index(name: &str) -> Option<usize> {
    name.rsplit_once("-e").and_then(|(_, i)| i.parse().ok())
}

impl Backend for LibvirtBackend {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    /// See `candidates` and `placement`.
    fn host(&self, spec: &ReplicaSpec) -> String {
        self.placement(spec)
    }

    fn provision<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<(), BackendError>> {
        self.provision_vm(spec).boxed()
    }

    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<Handle, BackendError>> {
        self.boot(spec).boxed()
    }

    fn pause<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        self.on_domain(h, hv::suspend).boxed()
    }

    fn resume<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        self.on_domain(h, hv::resume).boxed()
    }

    fn hibernate<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            self.locate(h)?;
            self.untrack(&h.name);
            let saved = self.on_domain(h, hv::managed_save).await;
            if saved.is_err() {
                // Still up after a failed save: keep watching it.
                self.attach(h).await;
            }
            saved
        }
        .boxed()
    }

    fn restore<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<Handle, BackendError>> {
        self.wake_saved(spec).boxed()
    }

    fn destroy<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        self.remove_vm(h).boxed()
    }

    fn state<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, BackendState> {
        async move {
            match self.on_domain(h, hv::seen).await {
                Ok(seen) => seen.backend_state(),
                Err(e) => {
                    tracing::debug!(replica = %h.name, "state: {e}");
                    BackendState::Stopped
                }
            }
        }
        .boxed()
    }

    fn attach<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, BackendState> {
        async move {
            let state = self.state(h).await;
            if state != BackendState::Stopped {
                if let Ok((uri, domain)) = self.locate(h) {
                    self.track(h, &uri, &domain);
                }
            }
            state
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.shutdown_all().boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::remote_host;

    #[test]
    fn a_uri_names_another_machine_only_with_a_non_loopback_host() {
        assert_eq!(remote_host("qemu:///system"), None);
        assert_eq!(remote_host("qemu+tcp://127.0.0.1:1/system"), None);
        assert_eq!(remote_host("qemu+ssh://localhost/system"), None);
        assert_eq!(remote_host("qemu+ssh://root@host2:2222/system"), Some("host2"));
        assert_eq!(remote_host("qemu+tcp://10.0.0.21/system"), Some("10.0.0.21"));
        assert_eq!(remote_host("qemu+tcp://[::1]/system"), None);
        assert_eq!(remote_host("xen+ssh://[fd00::2]:22/system"), Some("fd00::2"));
    }
}
