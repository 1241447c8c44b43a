//! The embedded backend: each replica is a child process. Pause is SIGSTOP,
//! resume SIGCONT, hibernate stops the process and restore spawns a fresh one
//! that re-syncs (a process has no memory image to keep, so hibernated and
//! cold standbys behave alike here), destroy is SIGKILL and reap.
//!
//! A process is named by pid and start time, so a restarted orchestrator
//! re-attaches to the right process even if the pid was reused.

use super::procfs;
use super::{Backend, BackendError, BackendEvent, BackendState, Handle, ReplicaSpec};
use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long a killed process may take to disappear before we give up.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often a re-attached (not our child) process is checked for exit.
const ATTACHED_POLL: Duration = Duration::from_millis(100);

/// The command line to spawn for a replica; `{name}` in any argument is
/// replaced by the replica's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Launch {
    /// `<agent_bin> --deployment <file> --key <keys_dir>/<name>.key --replica <name>`
    pub fn agent(agent_bin: &Path, deployment: &Path, keys_dir: &Path) -> Launch {
        Launch {
            program: agent_bin.to_path_buf(),
            args: vec![
                "--deployment".into(),
                deployment.display().to_string(),
                "--key".into(),
                keys_dir.join("{name}.key").display().to_string(),
                "--replica".into(),
                "{name}".into(),
            ],
        }
    }

    /// The arguments for replica `name`; `key`, a replacement's own key
    /// file, takes the place of the argument after `--key`.
    pub fn args_for(&self, name: &str, key: Option<&Path>) -> Vec<String> {
        let mut args: Vec<String> = self.args.iter().map(|a| a.replace("{name}", name)).collect();
        if let (Some(key), Some(i)) = (key, args.iter().position(|a| a == "--key")) {
            if let Some(a) = args.get_mut(i + 1) {
                *a = key.display().to_string();
            }
        }
        args
    }
}

struct Proc {
    handle: Handle,
    pid: u32,
    start_ticks: u64,
    /// Set before we kill it, so its exit is not reported as a failure.
    deliberate: Arc<AtomicBool>,
    exited: watch::Receiver<bool>,
    waiter: JoinHandle<()>,
}

pub struct ProcessBackend {
    launch: Launch,
    logs_dir: PathBuf,
    events: mpsc::Sender<BackendEvent>,
    procs: Mutex<HashMap<String, Proc>>,
    /// The machine's (busy, total) CPU ticks at the last `cpu_busy`.
    cpu: Mutex<Option<(u64, u64)>>,
}

impl ProcessBackend {
    pub fn new(launch: Launch, logs_dir: PathBuf, events: mpsc::Sender<BackendEvent>) -> Self {
        ProcessBackend {
            launch,
            logs_dir,
            events,
            procs: Mutex::new(HashMap::new()),
            cpu: Mutex::new(None),
        }
    }

    /// The pid of the live instance behind `h`, if any.
    pub fn pid(&self, h: &Handle) -> Option<u32> {
        let (pid, start) = parse_token(&h.token).ok()?;
        procfs::alive(pid, start).map(|_| pid)
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Proc>> {
        // A poisoned lock only means a panic elsewhere; the map is still sound.
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, h: &Handle) -> Option<Proc> {
        let mut procs = self.procs();
        match procs.get(&h.name) {
            Some(p) if p.handle == *h => procs.remove(&h.name),
            _ => None,
        }
    }

    async fn spawn(&self, spec: &ReplicaSpec) -> Result<Handle, BackendError> {
        // Never two instances under one name.
        let old = self.procs().remove(&spec.name);
        if let Some(old) = old {
            kill_and_wait(old).await?;
        }
        let log = self.logs_dir.join(format!("{}.log", spec.name));
        let logs_dir = self.logs_dir.clone();
        let header = format!(
            "--- zz orchestrator: starting {} generation {} at {} ms\n",
            spec.name,
            spec.generation,
            crate::model::now_ms()
        );
        let out = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            use std::io::Write;
            std::fs::create_dir_all(&logs_dir)?;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
            f.write_all(header.as_bytes())?;
            Ok(f)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let err = out.try_clone()?;
        let key = match &spec.key {
            Some(k) => {
                let dir = self.logs_dir.parent().unwrap_or(&self.logs_dir).join("replica-keys");
                let (k, name, generation) = (k.clone(), spec.name.clone(), spec.generation);
                let path = tokio::task::spawn_blocking(move || k.write(&dir, &name, generation))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))??;
                Some(path)
            }
            None => None,
        };
        let mut child = tokio::process::Command::new(&self.launch.program)
            .args(self.launch.args_for(&spec.name, key.as_deref()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BackendError::Spawn {
                name: format!("{} ({})", spec.name, self.launch.program.display()),
                source,
            })?;
        let pid = child.id().ok_or_else(|| BackendError::NotRunning(spec.name.clone()))?;
        // A process that already exited has no stat; its waiter reports it.
        let start_ticks = procfs::stat(pid).map_or(0, |s| s.start_ticks);
        let handle = Handle {
            name: spec.name.clone(),
            generation: spec.generation,
            token: format!("{pid}:{start_ticks}"),
        };
        let deliberate = Arc::new(AtomicBool::new(false));
        let (exited_tx, exited) = watch::channel(false);
        let waiter = {
            let handle = handle.clone();
            let deliberate = deliberate.clone();
            let events = self.events.clone();
            tokio::spawn(async move {
                let status = match child.wait().await {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                let _ = exited_tx.send(true);
                if !deliberate.load(Ordering::SeqCst) {
                    let _ = events.send(BackendEvent::Exited { handle, status }).await;
                }
            })
        };
        self.procs().insert(
            spec.name.clone(),
            Proc {
                handle: handle.clone(),
                pid,
                start_ticks,
                deliberate,
                exited,
                waiter,
            },
        );
        Ok(handle)
    }

    fn signal(&self, h: &Handle, sig: Signal) -> Result<u32, BackendError> {
        let procs = self.procs();
        let p = procs
            .get(&h.name)
            .filter(|p| p.handle == *h)
            .ok_or_else(|| BackendError::NotRunning(h.name.clone()))?;
        if procfs::alive(p.pid, p.start_ticks).is_none() {
            return Err(BackendError::NotRunning(h.name.clone()));
        }
        send_signal(&h.name, p.pid, sig)?;
        Ok(p.pid)
    }

    async fn stop(&self, h: &Handle) -> Result<(), BackendError> {
        match self.take(h) {
            Some(p) => kill_and_wait(p).await,
            // Not ours (any more): it is already gone as far as we can tell.
            None => Ok(()),
        }
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        // Aborting a waiter drops its Child, which kills the process.
        for p in self.procs().values() {
            p.waiter.abort();
        }
    }
}

fn parse_token(token: &str) -> Result<(u32, u64), BackendError> {
    let bad = || BackendError::BadHandle(token.to_string());
    let (pid, start) = token.split_once(':').ok_or_else(bad)?;
    Ok((pid.parse().map_err(|_| bad())?, start.parse().map_err(|_| bad())?))
}

fn send_signal(name: &str, pid: u32, sig: Signal) -> Result<(), BackendError> {
    let raw = i32::try_from(pid).map_err(|_| BackendError::BadHandle(pid.to_string()))?;
    kill(Pid::from_raw(raw), sig).map_err(|errno| BackendError::Signal {
        name: name.to_string(),
        errno,
    })
}

async fn kill_and_wait(mut p: Proc) -> Result<(), BackendError> {
    p.deliberate.store(true, Ordering::SeqCst);
    if procfs::alive(p.pid, p.start_ticks).is_some() {
        // ESRCH: it died on its own meanwhile; the waiter sees that too.
        let _ = send_signal(&p.handle.name, p.pid, Signal::SIGKILL);
    }
    let timed_out = tokio::time::timeout(KILL_WAIT, p.exited.wait_for(|e| *e))
        .await
        .is_err();
    if timed_out {
        p.waiter.abort();
        return Err(BackendError::NoExit {
            name: p.handle.name.clone(),
            secs: KILL_WAIT.as_secs(),
        });
    }
    let _ = (&mut p.waiter).await;
    Ok(())
}

/// Waits until `pid` shows the wanted state letter (signals are asynchronous).
async fn settle(pid: u32, start_ticks: u64, want: impl Fn(char) -> bool) {
    for _ in 0..100 {
        match procfs::alive(pid, start_ticks) {
            Some(s) if !want(s.state) => tokio::time::sleep(Duration::from_millis(2)).await,
            _ => return,
        }
    }
}

impl Backend for ProcessBackend {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn host(&self, _spec: &ReplicaSpec) -> String {
        "localhost".into()
    }

    fn provision<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            // A process starts from nothing: clean state is a new process.
            let old = self.procs().remove(&spec.name);
            if let Some(p) = old {
                kill_and_wait(p).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<Handle, BackendError>> {
        self.spawn(spec).boxed()
    }

    fn pause<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let pid = self.signal(h, Signal::SIGSTOP)?;
            let (_, start) = parse_token(&h.token)?;
            settle(pid, start, |s| s == 'T').await;
            Ok(())
        }
        .boxed()
    }

    fn resume<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let pid = self.signal(h, Signal::SIGCONT)?;
            let (_, start) = parse_token(&h.token)?;
            settle(pid, start, |s| s != 'T').await;
            Ok(())
        }
        .boxed()
    }

    fn hibernate<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        self.stop(h).boxed()
    }

    fn restore<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<Handle, BackendError>> {
        self.spawn(spec).boxed()
    }

    fn destroy<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), BackendError>> {
        self.stop(h).boxed()
    }

    fn state<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, BackendState> {
        async move {
            let owned = self.procs().get(&h.name).is_some_and(|p| p.handle == *h);
            let Ok((pid, start)) = parse_token(&h.token) else {
                return BackendState::Stopped;
            };
            match procfs::alive(pid, start) {
                Some(_) if !owned => BackendState::Stopped,
                Some(s) if s.state == 'T' || s.state == 't' => BackendState::Paused,
                Some(_) => BackendState::Running,
                None => BackendState::Stopped,
            }
        }
        .boxed()
    }

    fn attach<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, BackendState> {
        async move {
            let attached = self.procs().get(&h.name).is_some_and(|p| p.handle == *h);
            if attached {
                return self.state(h).await;
            }
            let Ok((pid, start_ticks)) = parse_token(&h.token) else {
                return BackendState::Stopped;
            };
            let Some(stat) = procfs::alive(pid, start_ticks) else {
                return BackendState::Stopped;
            };
            let deliberate = Arc::new(AtomicBool::new(false));
            let (exited_tx, exited) = watch::channel(false);
            let waiter = {
                let handle = h.clone();
                let deliberate = deliberate.clone();
                let events = self.events.clone();
                tokio::spawn(async move {
                    while procfs::alive(pid, start_ticks).is_some() {
                        tokio::time::sleep(ATTACHED_POLL).await;
                    }
                    // Reap it if it happens to be our child; otherwise init does.
                    if let Ok(raw) = i32::try_from(pid) {
                        let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
                    }
                    let _ = exited_tx.send(true);
                    if !deliberate.load(Ordering::SeqCst) {
                        let status = "exited (re-attached; status unknown)".to_string();
                        let _ = events.send(BackendEvent::Exited { handle, status }).await;
                    }
                })
            };
            let old = self.procs().insert(
                h.name.clone(),
                Proc {
                    handle: h.clone(),
                    pid,
                    start_ticks,
                    deliberate,
                    exited,
                    waiter,
                },
            );
            if let Some(old) = old {
                let _ = kill_and_wait(old).await;
            }
            if stat.state == 'T' || stat.state == 't' {
                BackendState::Paused
            } else {
                BackendState::Running
            }
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async move {
            let all: Vec<Proc> = self.procs().drain().map(|(_, p)| p).collect();
            for p in all {
                let name = p.handle.name.clone();
                if let Err(e) = kill_and_wait(p).await {
                    tracing::error!(replica = %name, "shutdown: {e}");
                }
            }
        }
        .boxed()
    }

    /// Every replica runs on this machine: its `/proc/stat`.
    fn cpu_busy(&self) -> Option<f64> {
        let now = procfs::cpu_times()?;
        let before = self.cpu.lock().ok()?.replace(now)?;
        let total = now.1.checked_sub(before.1).filter(|t| *t > 0)?;
        #[allow(clippy::cast_precision_loss)] // clock ticks: far below 2^52
        Some(now.0.saturating_sub(before.0) as f64 / total as f64)
    }
}
