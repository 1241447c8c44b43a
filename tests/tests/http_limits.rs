//! The gateway and the admin API under a flood of idle and half-sent
//! connections, with `zz up` held to 1024 open files (a common default):
//! both keep answering, and the flood's connections are closed once they
//! have not sent their headers in time.

mod support;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use std::time::{Duration, Instant};
use support::ZzUp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `zz up`'s open-file limit, soft and hard (so it cannot raise it).
const NOFILE: u64 = 1024;
/// Connections opened to each of the gateway and the admin API: together
/// more than `zz up` (which serves both) has descriptors.
const FLOOD_EACH: usize = 600;
/// A normal request must be answered within this after the flood.
const ANSWER_LIMIT: Duration = Duration::from_secs(12);
/// The flood's connections must be closed within this (the header
/// timeout is 5 s).
const CLOSED_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_neither_starve_the_gateway_and_admin_api_nor_stay_open() {
    // This test holds 2 × FLOOD_EACH connections itself.
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
    let mut up = ZzUp::start_with_nofile(Some(NOFILE));
    let http = support::http();
    up.wait_ready(&http).await;

    let mut flood = Vec::new();
    for addr in [up.gateway, up.admin] {
        for i in 0..FLOOD_EACH {
            // A server that sheds connections may refuse some: fine.
            let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await else {
                continue;
            };
            // Every other one sends headers that never end.
            if i % 2 == 1 {
                let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n").await;
            }
            flood.push(s);
        }
    }
    println!("{} flood connections open", flood.len());
    let t0 = Instant::now();

    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    for (what, url) in [
        ("admin API GET /v1/health", up.admin_url("/v1/health")),
        ("gateway GET /kv/__ready", up.gateway_url("/kv/__ready")),
    ] {
        let mut tries = 0;
        loop {
            tries += 1;
            let last = match quick.get(&url).send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("status {}", r.status()),
                Err(e) => format!("{e}"),
            };
            if t0.elapsed() > ANSWER_LIMIT {
                up.fail(format!(
                    "{what}: no answer within {ANSWER_LIMIT:?} of the flood ({tries} tries); last: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("{what} answered {:?} after the flood ({tries} tries)", t0.elapsed());
    }

    let deadline = t0 + CLOSED_LIMIT;
    let mut open = 0;
    for s in &mut flood {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, until_closed(s)).await.is_err() {
            open += 1;
        }
    }
    if open > 0 {
        up.fail(format!(
            "{open} of {} idle or half-sent connections still open {CLOSED_LIMIT:?} after the flood",
            flood.len()
        ));
    }
    println!("every flood connection closed after {:?}", t0.elapsed());
}

/// Reads (and drops whatever the server says) until the server closes.
async fn until_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}
