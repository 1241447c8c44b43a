//! A replica whose instance could not be started (its host down, the
//! program missing) is not left faulty: the orchestrator starts it again.

mod common;

use common::{deployment, marker, start_program, tuning};
use zz_orchestrator::controller::Tuning;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_start_failed_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let (dep, ids) = deployment(dir.path());
    // The program is not there yet: every start fails.
    let program = dir.path().join("agent");
    let t = Tuning {
        retry_start_ms: 300,
        ..tuning()
    };
    let mut o = start_program(dir.path(), dep, ids, marker(41), t, &program).await;
    let failed = o.wait_event("start-failed", Some("kv-e0")).await;
    assert!(
        failed["detail"].as_str().is_some_and(|d| d.contains("agent")),
        "{failed}"
    );
    assert_eq!(o.replica("kv-e0").await["state"], "faulty");

    // The cause goes away: the replicas are started again, as a fresh
    // generation each, and the app is back to f+1 active + f paused.
    std::os::unix::fs::symlink("/bin/sleep", &program).unwrap();
    o.wait_replicas("2 active + 1 paused after the retry", |v| {
        let rs = v.as_array().unwrap();
        let n = |s: &str| rs.iter().filter(|r| r["state"] == s).count();
        n("active") == 2 && n("paused") == 1
    })
    .await;
    assert!(o.replica("kv-e0").await["generation"].as_u64().unwrap() > 1);
    let want = format!("{}\0{}\0", program.display(), o.marker);
    let running = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .count();
    assert_eq!(running, 3, "one process per replica");
    o.shutdown().await;
}
