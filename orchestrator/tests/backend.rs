//! The process backend with real children (`/bin/sleep` stands in for the agent).

use std::time::Duration;
use tokio::sync::mpsc;
use zz_orchestrator::backend::{Backend, BackendEvent, BackendState, Handle, Launch, ProcessBackend, ReplicaSpec};

fn proc_state(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f[0].chars().next()?, f[19].parse().ok()?))
}

/// Gone for good: no process, not even an unreaped zombie.
fn gone(pid: u32, start: u64) -> bool {
    proc_state(pid).is_none_or(|(_, s)| s != start)
}

fn sleeper(dir: &std::path::Path) -> (ProcessBackend, mpsc::Receiver<BackendEvent>) {
    let (tx, rx) = mpsc::channel(16);
    let launch = Launch {
        program: "/bin/sleep".into(),
        args: vec!["1000".into()],
    };
    (ProcessBackend::new(launch, dir.join("logs"), tx), rx)
}

fn spec(name: &str) -> ReplicaSpec {
    ReplicaSpec {
        name: name.into(),
        generation: 1,
        key: None,
    }
}

#[tokio::test]
async fn pause_stops_the_process_and_resume_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let (b, mut events) = sleeper(dir.path());
    let h = b.start(&spec("kv-e0")).await.unwrap();
    let pid = b.pid(&h).unwrap();
    let (st, start) = proc_state(pid).unwrap();
    assert!(matches!(st, 'S' | 'R'), "state {st}");
    b.pause(&h).await.unwrap();
    assert_eq!(proc_state(pid).unwrap().0, 'T');
    assert_eq!(b.state(&h).await, BackendState::Paused);
    b.resume(&h).await.unwrap();
    assert_ne!(proc_state(pid).unwrap().0, 'T');
    assert_eq!(b.state(&h).await, BackendState::Running);
    b.destroy(&h).await.unwrap();
    assert!(gone(pid, start), "destroyed process still present");
    assert_eq!(b.state(&h).await, BackendState::Stopped);
    // A deliberate kill is not reported as a failure.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(events.try_recv().is_err());
    assert!(std::fs::read_to_string(dir.path().join("logs/kv-e0.log"))
        .unwrap()
        .contains("starting kv-e0 generation 1"));
}

#[tokio::test]
async fn destroying_a_paused_process_reaps_it() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _events) = sleeper(dir.path());
    let h = b.start(&spec("kv-e2")).await.unwrap();
    let pid = b.pid(&h).unwrap();
    let start = proc_state(pid).unwrap().1;
    b.pause(&h).await.unwrap();
    b.hibernate(&h).await.unwrap();
    assert!(gone(pid, start));
    // Restore is a fresh start.
    let h2 = b.restore(&spec("kv-e2")).await.unwrap();
    assert_ne!(h2.token, h.token);
    assert_eq!(b.state(&h2).await, BackendState::Running);
    b.shutdown().await;
}

#[tokio::test]
async fn an_exit_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut events) = mpsc::channel(16);
    let launch = Launch {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "sleep 0.2; exit 3".into(), "{name}".into()],
    };
    let b = ProcessBackend::new(launch, dir.path().join("logs"), tx);
    let h = b.start(&spec("kv-e1")).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("no exit reported")
        .unwrap();
    let BackendEvent::Exited { handle, status } = ev else {
        panic!("expected an exit, got {ev:?}")
    };
    assert_eq!(handle, h);
    assert!(status.contains('3'), "status {status}");
    assert_eq!(b.state(&h).await, BackendState::Stopped);
}

#[tokio::test]
async fn shutdown_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _events) = sleeper(dir.path());
    let mut pids = Vec::new();
    for name in ["kv-e0", "kv-e1", "kv-e2"] {
        let h = b.start(&spec(name)).await.unwrap();
        let pid = b.pid(&h).unwrap();
        pids.push((pid, proc_state(pid).unwrap().1));
        if name == "kv-e2" {
            b.pause(&h).await.unwrap();
        }
    }
    b.shutdown().await;
    for (pid, start) in pids {
        assert!(gone(pid, start), "pid {pid} survived shutdown");
    }
}

#[tokio::test]
async fn reattaches_to_a_process_started_by_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    // Started "by a previous orchestrator": not through this backend.
    let mut child = std::process::Command::new("/bin/sleep").arg("1000").spawn().unwrap();
    let pid = child.id();
    let start = proc_state(pid).unwrap().1;
    let (b, mut events) = sleeper(dir.path());
    // A handle whose start time does not match is a reused pid: refused.
    let stale = Handle {
        name: "kv-e0".into(),
        generation: 1,
        token: format!("{pid}:{}", start + 1),
    };
    assert_eq!(b.attach(&stale).await, BackendState::Stopped);
    let h = Handle {
        token: format!("{pid}:{start}"),
        ..stale
    };
    assert_eq!(b.attach(&h).await, BackendState::Running);
    b.pause(&h).await.unwrap();
    assert_eq!(proc_state(pid).unwrap().0, 'T');
    assert_eq!(b.attach(&h).await, BackendState::Paused);
    b.shutdown().await;
    assert!(gone(pid, start), "re-attached process survived shutdown");
    assert!(events.try_recv().is_err());
    // The backend reaped it (it happened to be our child).
    assert!(child.try_wait().is_err() || child.try_wait().unwrap().is_some());
}

#[tokio::test]
async fn an_attached_process_that_dies_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("/bin/sleep").arg("1000").spawn().unwrap();
    let pid = child.id();
    let start = proc_state(pid).unwrap().1;
    let (b, mut events) = sleeper(dir.path());
    let h = Handle {
        name: "kv-e1".into(),
        generation: 4,
        token: format!("{pid}:{start}"),
    };
    assert_eq!(b.attach(&h).await, BackendState::Running);
    child.kill().unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("no exit reported")
        .unwrap();
    let BackendEvent::Exited { handle, .. } = ev else {
        panic!("expected an exit, got {ev:?}")
    };
    assert_eq!(handle, h);
    let _ = child.wait();
}
