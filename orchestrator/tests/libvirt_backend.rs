//! The libvirt backend against real VMs. Runs wherever `virsh -c
//! qemu:///system list` works; with `ZZ_REQUIRE_LIBVIRT=1` a missing libvirt
//! is a failure instead of a skip. Needs the guest image (`vm-images/out`, or
//! `ZZ_VM_IMAGE_DIR`); it is built here when missing, or rebuilt from the
//! current `zz-agent` with `ZZ_VM_REBUILD=1` (an image with an old agent that
//! never dials the orchestrator fails the lifecycle test).
//!
//! One VM is reused across the lifecycle steps to keep the run short; the
//! `auto` accelerator probe boots one more (transient) domain, the storage
//! pool test one more.
#![cfg(feature = "libvirt")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use zz_orchestrator::backend::libvirt::{Accel, AccelMode, LibvirtBackend, LibvirtConfig};
use zz_orchestrator::backend::{Backend, BackendEvent, BackendState, ReplicaSpec};
use zz_wire::{GenerateOptions, Principal};

const URI: &str = "qemu:///system";
/// VMs compete for 2 shared cores; one at a time keeps timings meaningful.
static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

fn virsh(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("virsh").args(["-q", "-c", URI]).args(args).output()
}

/// `true` if the test should run; panics when libvirt is required but absent.
fn libvirt_available() -> bool {
    let reason = match virsh(&["list"]) {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!("virsh list failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("no virsh: {e}"),
    };
    if std::env::var("ZZ_REQUIRE_LIBVIRT").as_deref() == Ok("1") {
        panic!("ZZ_REQUIRE_LIBVIRT=1 but libvirt is not reachable at {URI}: {reason} (run vm-images/install-deps.sh)");
    }
    eprintln!("skipping: libvirt not reachable at {URI}: {reason}");
    false
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The guest image; built (static agent + `vm-images/build.sh`) if missing.
fn image_dir() -> PathBuf {
    let dir = std::env::var_os("ZZ_VM_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("vm-images/out"));
    let present = dir.join("vmlinuz").is_file() && dir.join("initramfs.cpio.gz").is_file();
    if present && std::env::var("ZZ_VM_REBUILD").as_deref() != Ok("1") {
        return dir;
    }
    eprintln!("building the guest image into {}", dir.display());
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let ok = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "zz-agent"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(workspace())
        .status()
        .expect("cargo")
        .success();
    assert!(ok, "building the static zz-agent failed");
    let agent = target_dir.join("x86_64-unknown-linux-gnu/release/zz-agent");
    let ok = Command::new(workspace().join("vm-images/build.sh"))
        .arg("--agent")
        .arg(&agent)
        .arg("--out")
        .arg(&dir)
        .status()
        .expect("build.sh")
        .success();
    assert!(ok, "vm-images/build.sh failed");
    dir
}

/// Domains whose name starts with `prefix`, defined or running.
fn domains_with(prefix: &str) -> Vec<String> {
    let out = virsh(&["list", "--all", "--name"]).expect("virsh list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn domstate(domain: &str) -> String {
    let out = virsh(&["domstate", "--reason", domain]).expect("virsh domstate");
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        format!("error: {}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

/// Removes every domain of a test tag, even when the test panicked midway.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in domains_with(&self.0) {
            let _ = virsh(&["destroy", &d]);
            let _ = virsh(&["undefine", "--managed-save", &d]);
        }
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    cfg: LibvirtConfig,
    /// Authenticated agent connections to the orchestrator port: (when, who).
    conns: mpsc::Receiver<(Instant, Principal)>,
    _cleanup: Cleanup,
}

/// A deployment with one app (`kv`, 3 replicas), and a listener on the
/// orchestrator's address doing the real handshake as the orchestrator.
async fn fixture(tag: &str, accel: AccelMode) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (d, ids) = zz_wire::config::generate(&GenerateOptions::local(1, &["kv"]).unwrap()).unwrap();
    let deployment = d.write(tmp.path(), &ids).unwrap();
    let keys_dir = tmp.path().join("keys");
    let me = d.load_identity(&keys_dir, Principal::Orchestrator).unwrap();
    let keyring = d.keyring();
    let listener = tokio::net::TcpListener::bind(d.orchestrator.addr).await.unwrap();
    let (tx, conns) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut links = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            let at = Instant::now();
            if let Ok((peer, r, w)) = zz_wire::frame::handshake(stream, &me, &keyring, None).await {
                // Kept open: a dropped link would make the agent redial.
                links.push((r, w));
                let _ = tx.send((at, peer)).await;
            }
        }
    });
    let mut cfg = LibvirtConfig::new(tag, deployment, keys_dir, image_dir(), tmp.path().join("state"));
    cfg.accel = accel;
    Fixture {
        _tmp: tmp,
        cfg,
        conns,
        _cleanup: Cleanup(format!("zz-{tag}-")),
    }
}

fn tag(what: &str) -> String {
    format!("{what}{}", std::process::id())
}

async fn wait_marker(log: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains("zz-guest: starting agent")) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The next authenticated connection from `who` after `since`.
async fn wait_conn(
    conns: &mut mpsc::Receiver<(Instant, Principal)>,
    who: Principal,
    since: Instant,
    within: Duration,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conns.recv()).await {
            Ok(Some((at, p))) if p == who && at >= since => return Some(at),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[test]
fn replica_vm_lifecycle() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !libvirt_available() {
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(lifecycle());
}

async fn lifecycle() {
    let tag = tag("lc");
    let mut fx = fixture(&tag, AccelMode::Qemu).await;
    let e0 = Principal::Replica(zz_wire::ReplicaId {
        app: zz_wire::AppId(0),
        index: 0,
    });
    let (ev_tx, mut events) = mpsc::channel(16);
    let backend = LibvirtBackend::new(fx.cfg.clone(), ev_tx).unwrap();
    let spec = ReplicaSpec {
        name: "kv-e0".into(),
        generation: 1,
        key: None,
    };
    let domain = backend.domain_name(&spec);
    assert_eq!(domain, format!("zz-{tag}-kv-e0-g1"));
    assert_eq!(backend.host(&spec), URI);
    assert_eq!(backend.accel(URI).await.unwrap(), Accel::Qemu);

    // provision: files only, nothing defined yet.
    backend.provision(&spec).await.unwrap();
    let dir = backend.vm_dir(&spec);
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&dir), 0o711);
    // The initrd holds the replica's key: a 0600 volume, not a file here.
    assert!(!dir.join("initrd.img").exists());
    let initrd = vol_path(&fx.cfg.pool, &format!("{domain}.initrd"));
    assert_eq!(mode(Path::new(&initrd)), 0o600);
    assert!(domains_with(&domain).is_empty());

    // start = cold boot: the guest's userland comes up and the agent dials
    // 10.0.2.2:<orchestrator port>, authenticated as kv-e0.
    let t = Instant::now();
    let h = backend.start(&spec).await.unwrap();
    let start_call = t.elapsed();
    assert_eq!(backend.state(&h).await, BackendState::Running);
    assert!(domstate(&domain).starts_with("running"), "{}", domstate(&domain));
    assert!(
        wait_marker(&backend.serial_log(&spec), Duration::from_secs(90)).await,
        "no boot marker in {}",
        backend.serial_log(&spec).display()
    );
    let marker = t.elapsed();
    let at = wait_conn(&mut fx.conns, e0, t, Duration::from_secs(60))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the agent never connected to the orchestrator port (is the image's agent \
                 current? ZZ_VM_REBUILD=1 rebuilds it); serial log:\n{}",
                log_tail(&backend.serial_log(&spec))
            )
        });
    let cold = at - t;
    eprintln!(
        "cold boot (qemu): start call {} ms, boot marker {} ms, agent connected {} ms",
        ms(start_call),
        ms(marker),
        ms(cold)
    );

    // pause / resume.
    let t = Instant::now();
    backend.pause(&h).await.unwrap();
    let pause = t.elapsed();
    assert_eq!(backend.state(&h).await, BackendState::Paused);
    assert!(domstate(&domain).starts_with("paused"), "{}", domstate(&domain));
    let t = Instant::now();
    backend.resume(&h).await.unwrap();
    let resume = t.elapsed();
    assert_eq!(backend.state(&h).await, BackendState::Running);
    assert!(domstate(&domain).starts_with("running"));
    eprintln!(
        "paused standby (qemu): pause {} ms, wake (resume) {} ms",
        ms(pause),
        ms(resume)
    );

    // hibernate (managed save) / restore; the agent redials after a restore.
    let t = Instant::now();
    backend.hibernate(&h).await.unwrap();
    let save = t.elapsed();
    assert_eq!(backend.state(&h).await, BackendState::Stopped);
    let st = domstate(&domain);
    assert!(st.starts_with("shut off") && st.contains("saved"), "{st}");
    let t = Instant::now();
    let h2 = backend.restore(&spec).await.unwrap();
    let restore_call = t.elapsed();
    assert_eq!(h2, h);
    assert_eq!(backend.state(&h).await, BackendState::Running);
    let at = wait_conn(&mut fx.conns, e0, t, Duration::from_secs(60))
        .await
        .expect("the agent did not reconnect after the restore");
    eprintln!(
        "hibernated standby (qemu): managed save {} ms, wake (restore) call {} ms, agent reconnected {} ms",
        ms(save),
        ms(restore_call),
        ms(at - t)
    );
    // Hibernation is deliberate: nothing was reported.
    assert!(events.try_recv().is_err());

    // A new backend (a restarted orchestrator) re-attaches to the running VM
    // and notices when it is destroyed behind its back.
    drop(backend);
    let (ev_tx, mut events) = mpsc::channel(16);
    let backend = LibvirtBackend::new(fx.cfg.clone(), ev_tx).unwrap();
    assert_eq!(backend.attach(&h).await, BackendState::Running);
    let t = Instant::now();
    let out = virsh(&["destroy", &domain]).unwrap();
    assert!(out.status.success());
    let virsh_took = t.elapsed();
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("no Exited event within 10 s")
        .expect("event channel closed");
    #[allow(irrefutable_let_patterns)]
    let BackendEvent::Exited { handle, status } = ev
    else {
        panic!("unexpected event {ev:?}");
    };
    assert_eq!(handle, h);
    eprintln!(
        "external destroy: virsh destroy took {} ms, Exited event {} ms after it began: {status}",
        ms(virsh_took),
        ms(t.elapsed())
    );
    assert_eq!(backend.state(&h).await, BackendState::Stopped);

    // destroy: domain undefined, directory gone.
    backend.destroy(&h).await.unwrap();
    assert!(domains_with(&domain).is_empty(), "{:?}", domains_with(&domain));
    assert!(!dir.exists());
    assert!(events.try_recv().is_err());

    // shutdown removes every domain with the prefix, whatever its state.
    let a = ReplicaSpec {
        name: "kv-e1".into(),
        generation: 1,
        key: None,
    };
    let b = ReplicaSpec {
        name: "kv-e2".into(),
        generation: 3,
        key: None,
    };
    for s in [&a, &b] {
        backend.provision(s).await.unwrap();
    }
    let ha = backend.start(&a).await.unwrap();
    backend.start(&b).await.unwrap();
    backend.pause(&ha).await.unwrap();
    assert_eq!(domains_with(&format!("zz-{tag}-")).len(), 2);
    backend.shutdown().await;
    assert!(domains_with(&format!("zz-{tag}-")).is_empty());
    assert!(!backend.vm_dir(&a).exists() && !backend.vm_dir(&b).exists());
    assert!(events.try_recv().is_err());
}

/// `auto` boots a kvm probe domain; on this machine (nested virtualisation)
/// its kernel hangs, so the backend must fall back to qemu. Set
/// `ZZ_EXPECT_ACCEL=kvm` where kvm really works.
#[test]
fn auto_accelerator_probes_once_and_falls_back() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !libvirt_available() {
        return;
    }
    let expect = match std::env::var("ZZ_EXPECT_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        _ => Accel::Qemu,
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let tag = tag("probe");
        let fx = fixture(&tag, AccelMode::Auto).await;
        let (ev_tx, _events) = mpsc::channel(4);
        let backend = LibvirtBackend::new(fx.cfg.clone(), ev_tx).unwrap();
        // Timings are printed, not asserted: how long a kvm guest that
        // fails takes to fail depends on the host (a timeout, or qemu giving
        // up at once), and a loaded machine stretches everything.
        let t = Instant::now();
        let chosen = backend.accel(URI).await.unwrap();
        eprintln!("auto accelerator: {chosen} after {} ms", ms(t.elapsed()));
        assert_eq!(chosen, expect);
        // Cached for the backend's lifetime.
        let t = Instant::now();
        assert_eq!(backend.accel(URI).await.unwrap(), chosen);
        eprintln!("auto accelerator again: {} ms", ms(t.elapsed()));
        // The probe domain is gone.
        assert!(domains_with(&format!("zz-{tag}-")).is_empty());
        // And provisioning uses the chosen type.
        let spec = ReplicaSpec {
            name: "kv-e0".into(),
            generation: 1,
            key: None,
        };
        backend.provision(&spec).await.unwrap();
        let xml = std::fs::read_to_string(backend.vm_dir(&spec).join("domain.xml")).unwrap();
        assert!(xml.contains(&format!("<domain type='{chosen}'>")), "{xml}");
        backend.shutdown().await;
        assert!(!backend.vm_dir(&spec).exists());
    });
}

fn virsh_out(args: &[&str]) -> Option<String> {
    let out = virsh(args).expect("virsh");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn vol_path(pool: &str, vol: &str) -> String {
    virsh_out(&["vol-path", "--pool", pool, vol]).unwrap_or_else(|| panic!("no volume {vol} in pool {pool}"))
}

/// The names of a pool's volumes, sorted.
fn volumes(pool: &str) -> Vec<String> {
    let _ = virsh(&["pool-refresh", pool]);
    let list = virsh_out(&["vol-list", "--pool", pool]).expect("virsh vol-list");
    let mut names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// Removes a test's storage pool with its volumes and directory.
struct PoolCleanup(String);

impl Drop for PoolCleanup {
    fn drop(&mut self) {
        if virsh_out(&["pool-info", &self.0]).is_none() {
            return;
        }
        let _ = virsh(&["pool-refresh", &self.0]);
        if let Some(list) = virsh_out(&["vol-list", "--pool", &self.0]) {
            for vol in list.lines().filter_map(|l| l.split_whitespace().next()) {
                let _ = virsh(&["vol-delete", "--pool", &self.0, vol]);
            }
        }
        let _ = virsh(&["pool-destroy", &self.0]);
        let _ = virsh(&["pool-delete", &self.0]);
        let _ = virsh(&["pool-undefine", &self.0]);
    }
}

/// (inode, mtime): changes if a volume is written again or replaced.
fn stamp(path: &str) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

fn content_name(what: &str, file: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(file).unwrap());
    format!("zz-{what}-{}", hex::encode(&digest[..8]))
}

/// qemu runs as another user and cannot enter a 0700 directory (a clean
/// clone in `mktemp -d` or a home directory): the backend must hand it the
/// image through a libvirt storage pool, each image sent once per host.
#[test]
fn images_go_through_a_storage_pool() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !libvirt_available() {
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(storage_pool());
}

async fn storage_pool() {
    use std::os::unix::fs::PermissionsExt;
    let tag = tag("pool");
    let mut fx = fixture(&tag, AccelMode::Qemu).await;
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let image = private.path().join("vm-images/out");
    std::fs::create_dir_all(&image).unwrap();
    for f in ["vmlinuz", "initramfs.cpio.gz"] {
        std::fs::copy(fx.cfg.image_dir.join(f), image.join(f)).unwrap();
    }
    fx.cfg.image_dir = image.clone();
    fx.cfg.state_dir = private.path().join("state");
    fx.cfg.pool = format!("zz-test-{tag}");
    let pool = fx.cfg.pool.clone();
    let _pool_cleanup = PoolCleanup(pool.clone());
    assert!(
        virsh_out(&["pool-info", &pool]).is_none(),
        "pool {pool} exists before the test"
    );

    // (a) The first provisioning creates the pool and sends kernel and
    // initramfs, named by content, and the replica's initrd.
    let (ev_tx, _events) = mpsc::channel(16);
    let backend = LibvirtBackend::new(fx.cfg.clone(), ev_tx).unwrap();
    let e0 = ReplicaSpec {
        name: "kv-e0".into(),
        generation: 1,
        key: None,
    };
    let domain = backend.domain_name(&e0);
    backend.provision(&e0).await.unwrap();
    let info = virsh_out(&["pool-info", &pool]).expect("the pool was not created");
    assert!(
        info.lines().any(|l| l.starts_with("State:") && l.ends_with("running")),
        "{info}"
    );
    assert!(
        info.lines().any(|l| l.starts_with("Autostart:") && l.ends_with("yes")),
        "{info}"
    );
    let kernel = content_name("vmlinuz", &image.join("vmlinuz"));
    let initramfs = content_name("initramfs", &image.join("initramfs.cpio.gz"));
    let e0_initrd = format!("{domain}.initrd");
    let mut want = vec![initramfs.clone(), kernel.clone(), e0_initrd.clone()];
    want.sort();
    assert_eq!(volumes(&pool), want);
    let kernel_path = vol_path(&pool, &kernel);
    let initramfs_path = vol_path(&pool, &initramfs);
    assert_eq!(
        std::fs::read(&kernel_path).unwrap(),
        std::fs::read(image.join("vmlinuz")).unwrap()
    );
    let before = (stamp(&kernel_path), stamp(&initramfs_path));

    // (b) A restarted orchestrator provisioning again sends no image again.
    drop(backend);
    let (ev_tx, _events) = mpsc::channel(16);
    let backend = LibvirtBackend::new(fx.cfg.clone(), ev_tx).unwrap();
    let e1 = ReplicaSpec {
        name: "kv-e1".into(),
        generation: 1,
        key: None,
    };
    backend.provision(&e0).await.unwrap();
    backend.provision(&e1).await.unwrap();
    assert_eq!(
        (stamp(&kernel_path), stamp(&initramfs_path)),
        before,
        "an image was sent again"
    );
    let e1_initrd = format!("{}.initrd", backend.domain_name(&e1));
    let mut want = vec![initramfs, kernel, e0_initrd.clone(), e1_initrd];
    want.sort();
    assert_eq!(volumes(&pool), want);

    // (c) The domain boots from the volumes, and the identity appended on
    // the host reaches the guest: its agent authenticates as kv-e0.
    let t = Instant::now();
    let h = backend.start(&e0).await.unwrap();
    let xml = virsh_out(&["dumpxml", &domain]).unwrap();
    assert!(xml.contains(&format!("<kernel>{kernel_path}</kernel>")), "{xml}");
    let initrd_path = vol_path(&pool, &e0_initrd);
    assert!(xml.contains(&format!("<initrd>{initrd_path}</initrd>")), "{xml}");
    let who = Principal::Replica(zz_wire::ReplicaId {
        app: zz_wire::AppId(0),
        index: 0,
    });
    wait_conn(&mut fx.conns, who, t, Duration::from_secs(120))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the agent never connected; serial log:\n{}",
                log_tail(&backend.serial_log(&e0))
            )
        });

    // Destroy removes the replica's initrd; shutdown the never-started one's.
    backend.destroy(&h).await.unwrap();
    assert!(!volumes(&pool).contains(&e0_initrd));
    backend.shutdown().await;
    assert_eq!(volumes(&pool).len(), 2, "{:?}", volumes(&pool));
    assert!(domains_with(&format!("zz-{tag}-")).is_empty());
}

/// A host that cannot be reached is passed over: the replica lands on the
/// next host, and the backend says where it landed.
#[test]
fn provisioning_skips_an_unreachable_host() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !libvirt_available() {
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(skips_unreachable());
}

async fn skips_unreachable() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    const DOWN: &str = "qemu+tcp://127.0.0.1:1/system";
    const UP: &str = "qemu:///system";
    let tag = tag("skip");
    let mut fx = fixture(&tag, AccelMode::Qemu).await;
    fx.cfg.hosts = vec![DOWN.into(), UP.into()];
    let (ev_tx, _events) = mpsc::channel(16);
    let backend = LibvirtBackend::new(fx.cfg.clone(), ev_tx).unwrap();
    let e0 = ReplicaSpec {
        name: "kv-e0".into(),
        generation: 1,
        key: None,
    };
    assert_eq!(backend.host(&e0), DOWN, "replica 0's first choice is host 0");
    backend
        .provision(&e0)
        .await
        .expect("provisioning falls over to the host that answers");
    assert_eq!(backend.host(&e0), UP);
    let h = backend.start(&e0).await.unwrap();
    assert!(h.token.ends_with(&format!("@{UP}")), "{}", h.token);
    assert_eq!(
        virsh_out(&["domstate", &backend.domain_name(&e0)]).as_deref(),
        Some("running")
    );
    backend.destroy(&h).await.unwrap();

    // With every host down the error says why.
    fx.cfg.hosts = vec![DOWN.into()];
    let (ev_tx, _events) = mpsc::channel(16);
    let backend = LibvirtBackend::new(fx.cfg.clone(), ev_tx).unwrap();
    let err = backend.provision(&e0).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");

    // Another machine's guests cannot reach this deployment's loopback
    // addresses: refused at start, not discovered as silent replicas.
    fx.cfg.hosts = vec![UP.into(), "qemu+tcp://10.213.0.9/system".into()];
    let (ev_tx, _events) = mpsc::channel(16);
    match LibvirtBackend::new(fx.cfg.clone(), ev_tx) {
        Ok(_) => panic!("a remote host with a loopback deployment was accepted"),
        Err(e) => assert!(e.to_string().contains("on loopback"), "{e}"),
    }
}
