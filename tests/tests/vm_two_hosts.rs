//! Replicas as VMs on two libvirt hosts, and the loss of one host.
//!
//! Host 1 is this machine's `qemu:///system`. Host 2 is a second libvirtd
//! (with its own virtlogd, state, storage pool and qemu processes) in a
//! network namespace, reached by `qemu+tcp://10.213.K.2/system`
//! (`tests/hosts/libvirt-host.sh`). The agreement nodes, the orchestrator
//! and the gateway run in a third namespace (10.213.K.10), so every guest
//! reaches them by their real address: user-mode networking connects from
//! the VM's host, through a /32 route per peer the guest's /init adds.
//!
//! The orchestrator places kv's three replicas on both hosts (anti-affinity:
//! replica i on host i mod 2). The test then kills host 2 (every process in
//! its namespace: libvirtd, virtlogd, qemu), and checks that the replica
//! lost with it is replaced on host 1 through the normal incident path, and
//! that every answer before, during and after is right.
//!
//! Runs where libvirt and network namespaces are available, like
//! `vm_e2e`; `ZZ_REQUIRE_LIBVIRT=1` (CI) makes their absence a failure.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use zz_tests::netns::{self, Host, Lab};
use zz_tests::roles::{count, healed, spawn, summary, Api, Roles};

const LOCAL: &str = "qemu:///system";
/// Three first boots under emulation, on two hosts (below nextest's
/// 300 s limit, so a slow start fails with its reason).
const READY: Duration = Duration::from_secs(200);
/// The lost replica replaced by a VM booted on host 1.
const HEAL: Duration = Duration::from_secs(200);
const ORCH_PORT: u16 = 7090;
const ADMIN_PORT: u16 = 7070;
const GATEWAY_PORT: u16 = 8080;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Why the test cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if let Some(why) = netns::unavailable() {
        return Some(why);
    }
    match Command::new("virsh").args(["-q", "-c", LOCAL, "list"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("virsh list: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!("no virsh: {e}")),
    }
}

fn image_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZZ_VM_IMAGE_DIR") {
        return PathBuf::from(d);
    }
    let ok = Command::new(workspace().join("vm-images/prepare.sh"))
        .status()
        .expect("vm-images/prepare.sh")
        .success();
    assert!(ok, "vm-images/prepare.sh failed");
    workspace().join("vm-images/out")
}

/// Host 2's daemons; `down` on drop, so a failing test leaves none.
struct SecondHost {
    host: Host,
    state: PathBuf,
    uri: String,
}

impl SecondHost {
    fn up(host: Host, state: PathBuf) -> SecondHost {
        let out = Command::new(workspace().join("tests/hosts/libvirt-host.sh"))
            .args(["up", &host.ns, &host.addr.to_string()])
            .arg(&state)
            .output()
            .expect("libvirt-host.sh up");
        assert!(
            out.status.success(),
            "libvirt-host.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let uri = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("host 2: {uri} in namespace {}", host.ns);
        SecondHost { host, state, uri }
    }

    /// The host dies: every process in its namespace is killed at once.
    fn down(&self) {
        let out = Command::new(workspace().join("tests/hosts/libvirt-host.sh"))
            .args(["down", &self.host.ns])
            .arg(&self.state)
            .output()
            .expect("libvirt-host.sh down");
        assert!(
            out.status.success(),
            "libvirt-host.sh down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SecondHost {
    fn drop(&mut self) {
        self.down();
    }
}

/// Names of the domains on `uri` whose name starts with `prefix`.
fn domains(uri: &str, prefix: &str) -> Vec<String> {
    let out = Command::new("virsh")
        .args(["-q", "-c", uri, "list", "--all", "--name"])
        .output()
        .expect("virsh list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn host_of<'a>(rs: &'a [Value], id: &str) -> &'a str {
    rs.iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["host"].as_str())
        .unwrap_or("?")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_two_hypervisors_survive_the_loss_of_one() {
    if let Some(why) = unavailable() {
        if std::env::var("ZZ_REQUIRE_LIBVIRT").as_deref() == Ok("1") {
            panic!("ZZ_REQUIRE_LIBVIRT=1 but: {why}");
        }
        eprintln!("skipping: {why}");
        return;
    }
    let images = image_dir();
    let tmp = tempfile::Builder::new()
        .prefix("zz-2hosts-")
        .tempdir()
        .expect("temp dir");
    let mut lab = Lab::new().expect("bridge");
    let ctl = lab.host("ctl", 10).expect("control host");
    let h2 = SecondHost::up(lab.host("h2", 2).expect("host 2"), tmp.path().join("host2"));

    let dep = tmp.path().join("dep");
    let nodes: Vec<String> = (0..4).map(|i| format!("{}:{}", ctl.addr, 7100 + i)).collect();
    let out = Command::new(zz_tests::bin("zz"))
        .arg("keygen")
        .arg("--out")
        .arg(&dep)
        .args(["--f", "1", "--apps", "kv"])
        .args(["--orchestrator", &format!("{}:{ORCH_PORT}", ctl.addr)])
        .args(["--nodes", &nodes.join(",")])
        .output()
        .expect("zz keygen");
    assert!(
        out.status.success(),
        "zz keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dep.join("deployment.toml").display().to_string();
    let zz = zz_tests::bin("zz").display().to_string();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");

    let mut roles = Roles(Vec::new());
    for i in 0..4 {
        let data = tmp.path().join(format!("a{i}")).display().to_string();
        let words: Vec<String> = [
            &zz,
            "agreement",
            "--config",
            &config,
            "--id",
            &i.to_string(),
            "--data-dir",
            &data,
        ]
        .map(str::to_string)
        .to_vec();
        roles.0.push(spawn(&ctl, &format!("a{i}"), &words, &logs));
    }
    let orch_data = tmp.path().join("orchestrator");
    let admin = format!("{}:{ADMIN_PORT}", ctl.addr);
    let words: Vec<String> = [
        zz.as_str(),
        "orchestrator",
        "--config",
        &config,
        "--data-dir",
        &orch_data.display().to_string(),
        "--admin",
        &admin,
        "--backend",
        "libvirt",
        "--accel",
        "qemu",
        "--image-dir",
        &images.display().to_string(),
        "--libvirt-host",
        LOCAL,
        "--libvirt-host",
        &h2.uri,
    ]
    .map(str::to_string)
    .to_vec();
    roles.0.push(spawn(&ctl, "orchestrator", &words, &logs));
    let words: Vec<String> = [
        zz.as_str(),
        "gateway",
        "--config",
        &config,
        "--listen",
        &format!("{}:{GATEWAY_PORT}", ctl.addr),
    ]
    .map(str::to_string)
    .to_vec();
    roles.0.push(spawn(&ctl, "gateway", &words, &logs));

    let token_file = orch_data.join("admin.token");
    let started = Instant::now();
    roles.wait_for_file(&token_file, started, READY).await;
    let api = Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        admin: format!("http://{admin}"),
        gateway: format!("http://{}:{GATEWAY_PORT}", ctl.addr),
        token: std::fs::read_to_string(&token_file).expect("token").trim().to_string(),
    };

    // Ready: kv's 2 active + 1 paused VMs, spread over both hosts.
    let before = loop {
        roles.check_alive();
        let last = match api.replicas().await {
            Ok(rs) if count(&rs, "kv", "active") == 2 && count(&rs, "kv", "paused") == 1 => {
                match api.send(api.http.put(api.gw("/kv/__ready")).body("1")).await {
                    Ok((200, _)) => break rs,
                    Ok((s, b)) => format!("probe PUT: {s} {b}"),
                    Err(e) => format!("probe PUT: {e}"),
                }
            }
            Ok(rs) if count(&rs, "kv", "faulty") > 0 => {
                let events = api.get_json("/v1/events").await.unwrap_or_default();
                panic!("a replica failed during start-up: {}\nevents: {events}", summary(&rs));
            }
            Ok(rs) => summary(&rs),
            Err(e) => e,
        };
        assert!(started.elapsed() < READY, "not ready within {READY:?}; last: {last}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "ready after {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        summary(&before)
    );
    let on_h2: Vec<&str> = before
        .iter()
        .filter(|r| r["host"] == h2.uri.as_str())
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(
        on_h2,
        ["kv-e1"],
        "anti-affinity: replica 1 of 3 on host 2; placement {:?}",
        before
            .iter()
            .map(|r| (r["id"].clone(), r["host"].clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(host_of(&before, "kv-e0"), LOCAL);
    assert_eq!(host_of(&before, "kv-e2"), LOCAL);
    let lost_gen = before
        .iter()
        .find(|r| r["id"] == "kv-e1")
        .and_then(|r| r["generation"].as_u64())
        .expect("kv-e1 generation");

    for i in 0..5 {
        let url = api.gw(&format!("/kv/k{i}"));
        api.expect(api.http.put(&url).body(format!("v{i}")), "kv PUT", 200)
            .await;
    }

    // Host 2 dies with kv-e1 on it.
    let killed = Instant::now();
    h2.down();
    println!("host 2 killed");

    let mut i = 0u64;
    let back = loop {
        roles.check_alive();
        i += 1;
        let url = api.gw(&format!("/kv/after{i}"));
        if let Ok((200, _)) = api.send(api.http.put(&url).body(format!("w{i}"))).await {
            match api.send(api.http.get(&url)).await {
                Ok((200, body)) => assert_eq!(body, format!("w{i}"), "kv GET after{i}"),
                Ok((503, _)) | Err(_) => {}
                Ok((s, body)) => panic!("kv GET after{i}: {s} {body:?}"),
            }
        }
        let rs = api.replicas().await.unwrap_or_default();
        if healed(&rs, "kv", "kv-e1", lost_gen) {
            break rs;
        }
        assert!(
            killed.elapsed() < HEAL,
            "kv not healed within {HEAL:?} of host 2's loss: {}",
            summary(&rs)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!(
        "healed {:.1} s after host 2 died: {}",
        killed.elapsed().as_secs_f64(),
        summary(&back)
    );
    for r in &back {
        assert_eq!(r["host"], LOCAL, "after host 2's loss every replica is on host 1: {r}");
    }
    for i in 0..5 {
        let got = api
            .expect(api.http.get(api.gw(&format!("/kv/k{i}"))), "kv GET", 200)
            .await;
        assert_eq!(got, format!("v{i}"), "k{i} written before host 2 died");
    }
    let events = api.get_json("/v1/events").await.expect("events");
    let incident = events
        .as_array()
        .is_some_and(|es| es.iter().any(|e| e["replica"] == "kv-e1" && e["kind"] == "fenced"));
    assert!(incident, "kv-e1 was not fenced through the incident path: {events}");
    let story: Vec<String> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["replica"] == "kv-e1" || e["replica"] == "kv-e2")
        .filter(|e| e["at_ms"].as_u64().is_some_and(|t| t > 0))
        .map(|e| {
            format!(
                "{} {}: {}",
                e["replica"].as_str().unwrap_or("?"),
                e["kind"].as_str().unwrap_or("?"),
                e["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    println!("what happened to kv-e1 and kv-e2:\n  {}", story.join("\n  "));

    // Stop: the orchestrator removes its domains on the hosts it reaches.
    let orch = roles
        .0
        .iter_mut()
        .find(|r| r.name == "orchestrator")
        .expect("orchestrator role");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(orch.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let stopping = Instant::now();
    while orch.child.try_wait().expect("wait").is_none() {
        assert!(
            stopping.elapsed() < Duration::from_secs(60),
            "orchestrator still running 60 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = zz_wire::Deployment::load(&dep.join("deployment.toml")).expect("deployment");
    let tag: String = d.orchestrator.public_key.0.as_bytes()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let left = domains(LOCAL, &format!("zz-{tag}-"));
    assert!(
        left.is_empty(),
        "domains left on host 1 after the orchestrator stopped: {left:?}"
    );
    drop(roles);
    drop(h2);
    let lab_pid = lab.pid();
    drop(lab);
    let left = Lab::leftovers(lab_pid);
    assert!(left.is_empty(), "namespaces or bridge left: {left:?}");
}
