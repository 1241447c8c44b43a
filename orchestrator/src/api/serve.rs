//! Serving HTTP with bounds, for the admin API and the gateway: at most
//! `max_connections` open per listener (one more is closed as soon as it is
//! accepted, so a flood cannot take every descriptor of the process), and a
//! deadline for each request head, which also closes idle keep-alive
//! connections. Per-client fairness within the cap is not attempted.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Connections refused because a listener was at its cap, by listener.
pub const REFUSED_CONNECTIONS: &str = "zz_http_refused_connections_total";

/// How long in-flight requests may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once by one listener.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head this long after
    /// it opened, or after its previous response, is closed.
    pub header_timeout: Duration,
}

impl HttpLimits {
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    /// When the open-file limit cannot be read.
    const FALLBACK_MAX_CONNECTIONS: usize = 256;

    /// A quarter of the open-file soft limit (so the gateway and the admin
    /// API sharing a process leave half for links, replicas and files) and
    /// a 5 s header deadline; `ZZ_HTTP_MAX_CONNECTIONS` and
    /// `ZZ_HTTP_HEADER_TIMEOUT_MS` override them.
    pub fn from_env() -> HttpLimits {
        let fd_share = zz_wire::fdlimit::nofile_limit()
            .map(|n| usize::try_from(n / 4).unwrap_or(usize::MAX))
            .unwrap_or(Self::FALLBACK_MAX_CONNECTIONS);
        HttpLimits {
            max_connections: env_num("ZZ_HTTP_MAX_CONNECTIONS")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(fd_share)
                .max(1),
            header_timeout: env_num("ZZ_HTTP_HEADER_TIMEOUT_MS")
                .map(Duration::from_millis)
                .unwrap_or(Self::DEFAULT_HEADER_TIMEOUT),
        }
    }
}

fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            tracing::warn!(%name, value = %v, "ignored: not a positive integer");
            None
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight
/// requests finish (for at most `DRAIN`). `name` labels logs and metrics.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(
        listener = name,
        %local,
        max_connections = limits.max_connections,
        header_timeout_ms = u64::try_from(limits.header_timeout.as_millis()).unwrap_or(u64::MAX),
        "serving HTTP"
    );
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            acc = listener.accept() => match acc {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors (or a connection reset before it was
                    // accepted): wait a little rather than spin.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Closed at once: the descriptor is free again.
            metrics::counter!(REFUSED_CONNECTIONS, "listener" => name).increment(1);
            tracing::debug!(listener = name, "at the connection cap; closed a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        let header_timeout = limits.header_timeout;
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stop.wait_for(|s| *s) => None,
            };
            let r = match done {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                // Header timeouts and clients that go away end up here.
                tracing::debug!(listener = name, error = %e, "connection closed");
            }
        });
    }
    let _ = stop_tx.send(true);
    drop(listener);
    if tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            left = conns.len(),
            "requests still running at shutdown; dropped"
        );
        conns.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = watch::channel(false);
        let app = Router::new().route("/", get(|| async { "ok" }));
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            serve(listener, app, limits, "test", stop).await.expect("serve");
        });
        (addr, tx, task)
    }

    /// Reads until the server closes; what it read.
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get_ok(addr: std::net::SocketAddr) -> bool {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return false;
        };
        if s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        read_to_close(&mut s).await.starts_with("HTTP/1.1 200")
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once_and_half_sent_heads_after_the_deadline() {
        let limits = HttpLimits {
            max_connections: 4,
            header_timeout: Duration::from_secs(2),
        };
        let (addr, stop, task) = start(limits).await;
        let mut held = Vec::new();
        for i in 0..12 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            if i % 2 == 1 {
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
                    .await
                    .expect("half a head");
            }
            held.push(s);
        }
        let t0 = tokio::time::Instant::now();
        let closed_after = futures::future::join_all(held.iter_mut().map(|s| async move {
            tokio::time::timeout(Duration::from_secs(5), read_to_close(s))
                .await
                .expect("closed within 5 s");
            t0.elapsed()
        }))
        .await;
        let early = closed_after.iter().filter(|d| **d < Duration::from_secs(1)).count();
        // 8 past the cap are closed when accepted; the 4 within it (idle or
        // half-sent) at the header deadline.
        assert_eq!(early, 8, "{closed_after:?}");
        assert!(
            closed_after
                .iter()
                .all(|d| *d < Duration::from_secs(1) || *d >= Duration::from_millis(1800)),
            "{closed_after:?}"
        );
        // Slots are free again: a normal request is served.
        assert!(get_ok(addr).await);
        let _ = stop.send(true);
        task.await.expect("server task");
    }

    #[tokio::test]
    async fn a_normal_request_is_served_while_the_cap_sheds_a_flood() {
        let limits = HttpLimits {
            max_connections: 8,
            header_timeout: Duration::from_millis(500),
        };
        let (addr, stop, task) = start(limits).await;
        let mut flood = Vec::new();
        for _ in 0..100 {
            flood.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let t0 = tokio::time::Instant::now();
        loop {
            if get_ok(addr).await {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "no answer within 3 s of the flood"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(true);
        task.await.expect("server task");
    }
}
