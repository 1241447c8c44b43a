//! `zz up --backend libvirt` end to end, with replicas as real VMs (f=1, app
//! kv: two running VMs and one paused standby). Drives the `zz` binary, which
//! must be built with the libvirt feature:
//! `cargo build --bins --workspace --features zz/libvirt`.
//!
//! Runs wherever `virsh -c qemu:///system list` works; with
//! `ZZ_REQUIRE_LIBVIRT=1` a missing libvirt is a failure instead of a skip.
//! The guest image comes from `ZZ_VM_IMAGE_DIR` if set, else
//! `vm-images/prepare.sh` (re)builds `vm-images/out` with the current agent
//! (quick when nothing changed). `ZZ_VM_ACCEL` picks `--accel` (default auto).
//!
//! Each test ends with SIGINT to `zz up` and checks that no domain with the
//! deployment's prefix is left defined or running.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const URI: &str = "qemu:///system";
/// First boot of three VMs (plus the accelerator probe) under emulation.
const READY: Duration = Duration::from_secs(300);
/// A replacement VM boots and becomes the paused standby.
const HEAL: Duration = Duration::from_secs(180);
/// `zz up` destroys its VMs and stops its nodes after SIGINT.
const STOP: Duration = Duration::from_secs(60);
/// The VMs of two deployments would compete for the machine's few cores.
static ONE_DEPLOYMENT_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn virsh(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("virsh").args(["-q", "-c", URI]).args(args).output()
}

/// `true` if the test should run; panics when libvirt is required but absent.
fn libvirt_available() -> bool {
    let reason = match virsh(&["list"]) {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!("virsh list failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
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

/// The guest image, prepared once per test run.
fn image_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("ZZ_VM_IMAGE_DIR") {
            return PathBuf::from(d);
        }
        let started = Instant::now();
        let ok = Command::new(workspace().join("vm-images/prepare.sh"))
            .status()
            .expect("running vm-images/prepare.sh")
            .success();
        assert!(ok, "vm-images/prepare.sh failed");
        println!("guest image ready in {:.1} s", started.elapsed().as_secs_f64());
        workspace().join("vm-images/out")
    })
    .clone()
}

/// Names of the defined domains (running, paused or shut off) with `prefix`.
fn domains(prefix: &str) -> Vec<String> {
    let out = virsh(&["list", "--all", "--name"]).expect("virsh list");
    assert!(
        out.status.success(),
        "virsh list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn domstate(domain: &str) -> String {
    virsh(&["domstate", domain])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A running `zz up --backend libvirt` in its own process group and temp dir.
struct VmUp {
    dir: tempfile::TempDir,
    admin: SocketAddr,
    gateway: SocketAddr,
    /// `zz-<tag>-`: every domain of this deployment starts with it.
    prefix: String,
    token: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
    http: reqwest::Client,
}

impl VmUp {
    /// `zz up --backend libvirt --f 1 --apps kv` with `extra` arguments.
    fn start(extra: &[&str]) -> VmUp {
        let dir = tempfile::Builder::new()
            .prefix("zz-vm-e2e-")
            .tempdir()
            .expect("temp dir");
        let stderr = PathBuf::from(format!("{}.stderr", dir.path().display()));
        let accel = std::env::var("ZZ_VM_ACCEL").unwrap_or_else(|_| "auto".into());
        let mut child = Command::new(zz_tests::bin("zz"))
            .args([
                "up",
                "--backend",
                "libvirt",
                "--f",
                "1",
                "--apps",
                "kv",
                "--accel",
                &accel,
            ])
            .args(extra)
            .arg("--image-dir")
            .arg(image_dir())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--admin", "127.0.0.1:0", "--gateway", "127.0.0.1:0"])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env_remove("ZZ_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr).expect("stderr file")))
            .process_group(0)
            .spawn()
            .expect("spawning zz up");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (out, lines) = (child.stdout.take().expect("piped stdout"), stdout.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let started = Instant::now();
        let (admin, gateway) = loop {
            let printed = stdout.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let admin = printed.iter().find_map(|l| url_after(l, "admin API"));
            let gateway = printed.iter().find_map(|l| url_after(l, "gateway"));
            if let (Some(a), Some(g)) = (admin, gateway) {
                break (a, g);
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                panic!(
                    "zz up exited with {status} before printing its URLs:\n{}\n{log}",
                    printed.join("\n")
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "zz up printed no URLs within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let dep = zz_wire::Deployment::load(&dir.path().join("deployment.toml")).expect("deployment");
        let tag: String = dep.orchestrator.public_key.0.as_bytes()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let token = std::fs::read_to_string(dir.path().join("admin.token"))
            .expect("admin token")
            .trim()
            .to_string();
        println!(
            "zz up in {}: admin {admin}, gateway {gateway}, domains zz-{tag}-*",
            dir.path().display()
        );
        VmUp {
            dir,
            admin,
            gateway,
            prefix: format!("zz-{tag}-"),
            token,
            child,
            stdout,
            stderr,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http"),
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.admin))
            .bearer_auth(&self.token)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
        Ok(r.json().await?)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("http://{}{path}", self.admin))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {v}");
        Ok(v)
    }

    async fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let url = format!("http://{}/kv/{key}", self.gateway);
        let r = self.http.put(url).body(value.to_string()).send().await?;
        anyhow::ensure!(r.status() == 200, "PUT {key}: {}", r.status());
        Ok(())
    }

    /// GET must answer exactly `want`: anything else is a wrong answer.
    async fn expect(&self, key: &str, want: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .get(format!("http://{}/kv/{key}", self.gateway))
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        anyhow::ensure!(
            status == 200 && body == want,
            "GET {key}: {status} {body:?}, expected 200 {want:?}"
        );
        Ok(())
    }

    /// `GET /v1/replicas` as id → (state, generation), for replicas whose
    /// agent has been heard from (a VM whose kernel never came up is not
    /// counted until the orchestrator replaces it).
    async fn replicas(&self) -> anyhow::Result<Vec<(String, String, u64)>> {
        let v = self.get("/v1/replicas").await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["last_heartbeat_ms"].is_u64() || r["state"] == "hibernated")
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (s("id"), s("state"), r["generation"].as_u64().unwrap_or(0))
            })
            .collect())
    }

    fn with_state(reps: &[(String, String, u64)], state: &str) -> Vec<String> {
        reps.iter().filter(|r| r.1 == state).map(|r| r.0.clone()).collect()
    }

    fn domain(&self, replica: &str, generation: u64) -> String {
        format!("{}{replica}-g{generation}", self.prefix)
    }

    /// Polls `check` until it yields a value; `what` names the wait on timeout.
    async fn wait<T, F>(&self, what: &str, limit: Duration, mut check: impl FnMut() -> F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = anyhow::Result<Option<T>>>,
    {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            match check().await {
                Ok(Some(v)) => {
                    println!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
                    return Ok(v);
                }
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what} {last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Two active replicas and one paused, the paused one's domain paused
    /// in libvirt: returns (active, standby).
    async fn steady(&self, limit: Duration) -> anyhow::Result<(Vec<(String, u64)>, (String, u64))> {
        self.wait("2 active VMs + 1 paused standby", limit, || async move {
            let reps = self.replicas().await?;
            let active: Vec<(String, u64)> = reps
                .iter()
                .filter(|r| r.1 == "active")
                .map(|r| (r.0.clone(), r.2))
                .collect();
            let paused: Vec<(String, u64)> = reps
                .iter()
                .filter(|r| r.1 == "paused")
                .map(|r| (r.0.clone(), r.2))
                .collect();
            if active.len() != 2 || paused.len() != 1 || domstate(&self.domain(&paused[0].0, paused[0].1)) != "paused" {
                return Ok(None);
            }
            Ok(Some((active, paused[0].clone())))
        })
        .await
    }

    /// Steady, serving (the first requests may find the active VMs not yet
    /// connected and wake the standby), and steady again once the extra
    /// active replica is paused.
    async fn ready(&self) -> anyhow::Result<(Vec<(String, u64)>, (String, u64))> {
        self.steady(READY).await?;
        self.traffic("before", 5).await?;
        self.steady(HEAL).await
    }

    /// Puts and reads back `n` fresh keys; every answer must be right.
    async fn traffic(&self, tag: &str, n: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        for i in 0..n {
            let (key, value) = (format!("{tag}-{i}"), format!("value {tag} {i}"));
            self.put(&key, &value).await?;
            self.expect(&key, &value).await?;
        }
        Ok(started.elapsed())
    }

    /// Event log, replicas, domains, serial log tails and `zz up`'s stderr.
    async fn dump_context(&self) {
        println!("---- context for {} ----", self.dir.path().display());
        if let Ok(ev) = self.get("/v1/events?since=0").await {
            for e in ev.as_array().into_iter().flatten() {
                println!("event {} {} {} {}", e["at_ms"], e["replica"], e["kind"], e["detail"]);
            }
        }
        println!("replicas {:?}", self.replicas().await);
        println!("incidents {:?}", self.get("/v1/incidents").await);
        for d in domains(&self.prefix) {
            println!("domain {d}: {}", domstate(&d));
        }
        let vms = self.dir.path().join("libvirt").join("vms");
        for entry in std::fs::read_dir(&vms).into_iter().flatten().flatten() {
            let log = String::from_utf8_lossy(&std::fs::read(entry.path().join("serial.log")).unwrap_or_default())
                .into_owned();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            println!("-- serial {} (tail):", entry.file_name().to_string_lossy());
            tail.iter().rev().for_each(|l| println!("   {l}"));
        }
        let log = String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        println!("-- zz up stderr (tail):");
        tail.iter().rev().for_each(|l| println!("   {l}"));
    }

    /// SIGINT, a clean exit, then no domain of this deployment left.
    fn interrupt_and_check(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            domains(&self.prefix).len() >= 3,
            "expected this deployment's VMs before SIGINT"
        );
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, Signal::SIGINT)?;
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            anyhow::ensure!(started.elapsed() < STOP, "zz up still running {STOP:?} after SIGINT");
            std::thread::sleep(Duration::from_millis(100));
        };
        println!(
            "zz up exited ({status}) {:.1} s after SIGINT",
            started.elapsed().as_secs_f64()
        );
        anyhow::ensure!(status.success(), "zz up exited with {status} after SIGINT");
        let printed = self.stdout.lock().unwrap_or_else(|e| e.into_inner()).clone();
        anyhow::ensure!(
            printed.iter().any(|l| l.trim() == "stopped"),
            "zz up did not print `stopped`"
        );
        let left = domains(&self.prefix);
        anyhow::ensure!(left.is_empty(), "domains left behind after SIGINT: {left:?}");
        Ok(())
    }
}

impl Drop for VmUp {
    /// A failed test still leaves nothing behind: the process group, then
    /// any domain of this deployment.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
            let _ = killpg(pid, Signal::SIGINT);
            let started = Instant::now();
            while started.elapsed() < STOP && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = self.child.wait();
        }
        for d in domains(&self.prefix) {
            eprintln!("cleaning up leftover domain {d}");
            let _ = virsh(&["destroy", &d]);
            let _ = virsh(&["undefine", "--managed-save", &d]);
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn url_after(line: &str, label: &str) -> Option<SocketAddr> {
    let rest = line.trim_start().strip_prefix(label)?.trim_start();
    let url = rest.split_whitespace().next()?.strip_prefix("http://")?;
    url.split('/').next()?.parse().ok()
}

/// Runs `body` against a fresh deployment; on failure prints the context
/// first, then panics (the drop cleans up).
async fn with_deployment<F>(body: impl FnOnce(Arc<VmUp>) -> F)
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    with_deployment_of(&[], body).await
}

/// `with_deployment`, with more arguments to `zz up`.
async fn with_deployment_of<F>(extra: &[&str], body: impl FnOnce(Arc<VmUp>) -> F)
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let up = Arc::new(VmUp::start(extra));
    let result = body(up.clone()).await;
    if let Err(e) = &result {
        up.dump_context().await;
        panic!("{e:#}");
    }
    let mut up = Arc::into_inner(up).expect("the test body keeps no handle");
    if let Err(e) = up.interrupt_and_check() {
        panic!("{e:#}");
    }
}

/// `corrupt-reply` on `victim`: the standby is woken (resumed or restored),
/// catches up, and clients only ever see correct answers; then the victim's
/// domain is destroyed and a fresh VM becomes the paused standby.
async fn lying_vm_is_outvoted_and_replaced(
    up: &VmUp,
    victim: &str,
    victim_gen: u64,
    standby: &str,
) -> anyhow::Result<()> {
    let before = up.get("/v1/incidents").await?.as_array().map_or(0, Vec::len);
    let t0 = Instant::now();
    up.post("/v1/faults", json!({"target": victim, "kind": "corrupt-reply"}))
        .await?;
    up.put("after-fault", "first answer after the fault").await?;
    up.expect("after-fault", "first answer after the fault").await?;
    println!(
        "fault → first correct certified answer: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let took = up.traffic("during-recovery", 10).await?;
    println!("10 PUT+GET pairs during recovery: {:.1} ms", took.as_secs_f64() * 1e3);

    let incident = up
        .wait("an incident naming the liar, with a replacement", HEAL, || async move {
            let inc = up.get("/v1/incidents").await?;
            let fresh = inc
                .as_array()
                .map(|v| v[before.min(v.len())..].to_vec())
                .unwrap_or_default();
            Ok(fresh.into_iter().find(|i| {
                i["faulty"].as_array().is_some_and(|f| f.iter().any(|x| x == victim))
                    && i["replaced"].as_array().is_some_and(|f| f.iter().any(|x| x == victim))
            }))
        })
        .await?;
    println!("incident: {incident}");
    anyhow::ensure!(incident["woken"].is_u64(), "the incident woke no standby: {incident}");
    anyhow::ensure!(incident["recovery_ms"].is_u64(), "no recovery time: {incident}");

    let (active, new_standby) = up.steady(HEAL).await?;
    anyhow::ensure!(
        active.iter().any(|(id, _)| id == standby),
        "the old standby {standby} is not active: {active:?}"
    );
    anyhow::ensure!(
        new_standby.0 == victim && new_standby.1 > victim_gen,
        "expected a fresh {victim} (generation > {victim_gen}) as the standby, got {new_standby:?}"
    );
    let old = up.domain(victim, victim_gen);
    anyhow::ensure!(
        !domains(&up.prefix).contains(&old),
        "the liar's domain {old} is still defined"
    );
    anyhow::ensure!(
        domains(&up.prefix).len() == 3,
        "expected 3 domains: {:?}",
        domains(&up.prefix)
    );
    // The state written before and during the incident survived it.
    up.expect("before-0", "value before 0").await?;
    up.expect("during-recovery-9", "value during-recovery 9").await?;
    up.traffic("healed", 5).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_standby_replaces_lying_vm_then_destroyed_vm_is_replaced_and_sigint_leaves_no_domain() {
    if !libvirt_available() {
        return;
    }
    let _one = ONE_DEPLOYMENT_AT_A_TIME.lock().await;
    with_deployment(|up| async move {
        let (active, standby) = up.ready().await?;
        let (victim, generation) = active[0].clone();
        lying_vm_is_outvoted_and_replaced(&up, &victim, generation, &standby.0).await?;

        // A VM killed behind the orchestrator's back.
        let (active, _) = up.steady(HEAL).await?;
        let (gone, generation) = active[0].clone();
        let domain = up.domain(&gone, generation);
        let out = virsh(&["destroy", &domain])?;
        anyhow::ensure!(
            out.status.success(),
            "virsh destroy {domain}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t0 = Instant::now();
        let (upr, goner) = (&*up, &gone);
        up.wait(&format!("{gone} replaced after virsh destroy"), HEAL, || async move {
            let reps = upr.replicas().await?;
            Ok(reps.iter().any(|r| r.0 == *goner && r.2 > generation).then_some(()))
        })
        .await?;
        println!(
            "virsh destroy → replacement provisioned in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        up.steady(HEAL).await?;
        anyhow::ensure!(!domains(&up.prefix).contains(&domain), "{domain} is still defined");
        up.expect("before-4", "value before 4").await?;
        up.traffic("after-destroy", 5).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernated_standby_replaces_lying_vm_and_sigint_leaves_no_domain() {
    if !libvirt_available() {
        return;
    }
    let _one = ONE_DEPLOYMENT_AT_A_TIME.lock().await;
    with_deployment(|up| async move {
        let (active, (standby, standby_gen)) = up.ready().await?;
        up.post(&format!("/v1/replicas/{standby}/hibernate"), json!({})).await?;
        let domain = up.domain(&standby, standby_gen);
        let (upr, standby_ref, domain_ref) = (&*up, &standby, &domain);
        up.wait(
            "the standby hibernated (managed save, domain shut off)",
            HEAL,
            || async move {
                let reps = upr.replicas().await?;
                let hibernated = VmUp::with_state(&reps, "hibernated") == [standby_ref.clone()];
                let info = virsh(&["dominfo", domain_ref])?;
                let saved = String::from_utf8_lossy(&info.stdout)
                    .lines()
                    .any(|l| l.starts_with("Managed save:") && l.ends_with("yes"));
                Ok((hibernated && saved && domstate(domain_ref) == "shut off").then_some(()))
            },
        )
        .await?;
        let (victim, generation) = active[0].clone();
        lying_vm_is_outvoted_and_replaced(&up, &victim, generation, &standby).await
    })
    .await;
}

/// What a deploy or an upgrade may take: its replicas' VMs boot under
/// emulation before f+1 of them certify the ordered install.
const DEPLOY: Duration = Duration::from_secs(240);

impl VmUp {
    /// `POST /v1/apps` or `PUT /v1/apps/{name}` with `file`'s bytes.
    async fn deploy(&self, method: reqwest::Method, path: &str, name: &str, file: &str) -> anyhow::Result<Value> {
        use base64::Engine as _;
        let bytes = std::fs::read(workspace().join(file))?;
        let body = json!({ "name": name, "component": base64::engine::general_purpose::STANDARD.encode(bytes) });
        let r = reqwest::Client::builder()
            .no_proxy()
            .timeout(DEPLOY)
            .build()?
            .request(method.clone(), format!("http://{}{path}", self.admin))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {v}");
        Ok(v)
    }

    /// `POST /counter/incr`: the count, or None for an unanswered request
    /// (503: maybe counted).
    async fn incr(&self) -> anyhow::Result<Option<u64>> {
        let r = self
            .http
            .post(format!("http://{}/counter/incr", self.gateway))
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        match status.as_u16() {
            200 => Ok(serde_json::from_str::<Value>(&body)?["count"].as_u64()),
            503 => Ok(None),
            _ => anyhow::bail!("POST /counter/incr: {status} {body}"),
        }
    }

    /// The replicas of `app` with `state`, among those heard from.
    async fn of_app(&self, app: &str, state: &str) -> anyhow::Result<Vec<String>> {
        let v = self.get("/v1/replicas").await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["app"] == app && r["state"] == state && r["last_heartbeat_ms"].is_u64())
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect())
    }
}

/// A tenant's Wasm app on VMs: the guest has no copy of the orchestrator's
/// disk, so each replica fetches the component over its link (checked
/// against the hash the ordered install named); it answers, outvotes a
/// lying VM with the standby woken, and is upgraded to another component
/// (fetched the same way) with its state kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_app_on_vms_fetches_its_component_survives_a_lying_vm_and_is_upgraded() {
    if !libvirt_available() {
        return;
    }
    let _one = ONE_DEPLOYMENT_AT_A_TIME.lock().await;
    with_deployment_of(&["--wasm-slots", "1"], |up| async move {
        up.steady(READY).await?;
        let t0 = Instant::now();
        let d = up
            .deploy(
                reqwest::Method::POST,
                "/v1/apps",
                "counter",
                "examples/counter/counter.wasm",
            )
            .await?;
        println!("deployed counter in {:.1} s: {d}", t0.elapsed().as_secs_f64());
        let slot = up.get("/v1/apps/counter").await?["slot"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let upr = &*up;
        let slot_ref = &slot;
        up.wait("counter's VMs: 2 active + 1 paused", DEPLOY, || async move {
            let (a, p) = (
                upr.of_app(slot_ref, "active").await?,
                upr.of_app(slot_ref, "paused").await?,
            );
            Ok((a.len() == 2 && p.len() == 1).then_some(()))
        })
        .await?;
        // Answers, counting one by one; the first fetched the component.
        let mut count = 0u64;
        let started = Instant::now();
        while count < 5 {
            if let Some(n) = up.incr().await? {
                anyhow::ensure!(n > count, "a wrong answer: the count went from {count} to {n}");
                count = n;
            }
            anyhow::ensure!(
                started.elapsed() < DEPLOY,
                "counter never answered 5 times (count {count})"
            );
        }
        println!(
            "deploy request → 5 certified counts: {:.1} s",
            t0.elapsed().as_secs_f64()
        );

        // One active VM lies: answers stay right, the standby is woken.
        let victim = up.of_app(&slot, "active").await?.into_iter().next().unwrap_or_default();
        // The first requests found the VMs compiling the component (under
        // emulation, seconds) and may have opened an incident of their own:
        // only one detected after the fault is this fault's.
        let fault_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        up.post("/v1/faults", json!({"target": victim, "kind": "corrupt-reply"}))
            .await?;
        let since = Instant::now();
        let incident = loop {
            if let Some(n) = up.incr().await? {
                anyhow::ensure!(n > count, "a wrong answer was certified: {count} then {n}");
                count = n;
            }
            let inc = up.get("/v1/incidents").await?;
            let found = inc.as_array().into_iter().flatten().find(|i| {
                i["app"] == slot.as_str()
                    && !i["certified_at"].is_null()
                    && i["detected_at"].as_u64().is_some_and(|t| u128::from(t) >= fault_at)
            });
            if let Some(i) = found {
                break i.clone();
            }
            anyhow::ensure!(
                since.elapsed() < HEAL,
                "no certified incident of {slot} after {victim} lied, within {HEAL:?}: {inc}"
            );
        };
        println!("incident: {incident}");
        let (id, victim_ref) = (incident["id"].clone(), &victim);
        up.wait(&format!("{victim} named faulty in incident {id}"), HEAL, || {
            let id = id.clone();
            async move {
                let inc = upr.get("/v1/incidents").await?;
                let named = inc.as_array().into_iter().flatten().any(|i| {
                    i["id"] == id
                        && i["faulty"]
                            .as_array()
                            .is_some_and(|f| f.iter().any(|x| x == victim_ref.as_str()))
                });
                Ok(named.then_some(()))
            }
        })
        .await?;

        // Upgraded to examples/kv: its replicas fetch the new component and
        // read the count the old one kept.
        let d = up
            .deploy(
                reqwest::Method::PUT,
                "/v1/apps/counter",
                "counter",
                "examples/kv/kv.wasm",
            )
            .await?;
        anyhow::ensure!(d["version"] == 2, "upgrade: {d}");
        let stored = up
            .wait("the count read through the upgraded component", HEAL, || async move {
                let r = upr
                    .http
                    .get(format!("http://{}/counter/count", upr.gateway))
                    .send()
                    .await?;
                match r.status().as_u16() {
                    200 => Ok(Some(r.bytes().await?)),
                    503 => Ok(None),
                    s => anyhow::bail!("GET /counter/count after the upgrade: {s}"),
                }
            })
            .await?;
        let n = u64::from_le_bytes(
            stored
                .as_ref()
                .try_into()
                .map_err(|_| anyhow::anyhow!("not 8 bytes: {stored:?}"))?,
        );
        anyhow::ensure!(n >= count, "the upgrade lost state: {n} < {count}");
        Ok(())
    })
    .await;
}
