//! `zz-agent serve` over real TCP on a port-0 listener: calls are executed
//! against the app in order, and a malformed frame closes only its own
//! connection.
#![allow(clippy::unwrap_used)]

use futures::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use zz_agent::unreplicated::{serve, Answer, Call, Counters, ServeOptions};
use zz_wire::frame::{codec, encode};
use zz_wire::AppRequest;

struct Server {
    addr: std::net::SocketAddr,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(kind: &str, checkpoint_interval: u64) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let app = zz_agent::app::build(kind, kind).unwrap();
    let opts = ServeOptions {
        checkpoint_interval,
        ..ServeOptions::default()
    };
    let task = tokio::spawn(serve(listener, app, opts, counters.clone(), async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        counters,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

type Conn = Framed<TcpStream, LengthDelimitedCodec>;

async fn connect(addr: std::net::SocketAddr) -> Conn {
    Framed::new(TcpStream::connect(addr).await.unwrap(), codec())
}

async fn send(c: &mut Conn, tag: u64, req: AppRequest) {
    c.send(encode(&Call { tag, req }).unwrap()).await.unwrap();
}

async fn recv(c: &mut Conn) -> Answer {
    let frame = tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .expect("an answer within 5 s")
        .expect("connection open")
        .unwrap();
    postcard::from_bytes(&frame).unwrap()
}

#[tokio::test]
async fn put_then_get_returns_the_value() {
    let s = start("kv", 128).await;
    let mut c = connect(s.addr).await;
    send(&mut c, 7, AppRequest::new("PUT", "/kv/greeting", b"hello".to_vec())).await;
    let a = recv(&mut c).await;
    assert_eq!((a.tag, a.resp.status), (7, 200));
    send(&mut c, 8, AppRequest::new("GET", "/kv/greeting", Vec::new())).await;
    let a = recv(&mut c).await;
    assert_eq!((a.tag, a.resp.status, a.resp.body.as_slice()), (8, 200, &b"hello"[..]));
    send(&mut c, 9, AppRequest::new("GET", "/kv/missing", Vec::new())).await;
    assert_eq!(recv(&mut c).await.resp.status, 404);
    assert_eq!(s.counters.executed.load(Ordering::Relaxed), 3);
    s.stop().await;
}

#[tokio::test]
async fn many_calls_in_flight_are_answered_in_order() {
    // Interval 1: every batch takes and stabilizes a snapshot.
    let s = start("kv", 1).await;
    let mut c = connect(s.addr).await;
    let n = 2000u64;
    for i in 0..n {
        send(
            &mut c,
            i,
            AppRequest::new("PUT", &format!("/kv/k{}", i % 50), i.to_le_bytes().to_vec()),
        )
        .await;
    }
    for i in 0..n {
        let a = recv(&mut c).await;
        assert_eq!((a.tag, a.resp.status), (i, 200));
    }
    // The last write to each key wins: execution followed send order.
    for k in 0..50u64 {
        send(&mut c, n + k, AppRequest::new("GET", &format!("/kv/k{k}"), Vec::new())).await;
        let a = recv(&mut c).await;
        let last = (0..n).filter(|i| i % 50 == k).max().unwrap();
        assert_eq!(a.resp.body, last.to_le_bytes().to_vec());
    }
    assert!(s.counters.batches.load(Ordering::Relaxed) >= 1);
    s.stop().await;
}

#[tokio::test]
async fn a_garbage_frame_closes_its_connection_and_is_counted() {
    let s = start("bank", 128).await;
    let mut bad = connect(s.addr).await;
    let mut good = connect(s.addr).await;
    // A length-delimited frame whose body is not a postcard `Call`.
    bad.send(bytes::Bytes::from_static(&[0xff; 9])).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), bad.next()).await.unwrap();
    assert!(end.is_none(), "the server closes a connection that sent garbage");
    // A length prefix past the 16 MiB limit is refused the same way.
    let mut huge = TcpStream::connect(s.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut huge, &(64u32 << 20).to_be_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut huge, &mut buf),
    )
    .await
    .unwrap()
    .unwrap_or(0);
    assert_eq!(n, 0, "closed after an oversized frame");
    assert_eq!(s.counters.malformed.load(Ordering::Relaxed), 2);
    // Everyone else is still served, by the same state.
    let mut req = AppRequest::new("POST", "/bank/accounts", br#"{"id":"alice","balance":100}"#.to_vec());
    req.headers.push(("content-type".into(), "application/json".into()));
    send(&mut good, 1, req).await;
    assert_eq!(recv(&mut good).await.resp.status, 201);
    let mut late = connect(s.addr).await;
    send(&mut late, 2, AppRequest::new("GET", "/bank/accounts/alice", Vec::new())).await;
    let a = recv(&mut late).await;
    assert_eq!(a.resp.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&a.resp.body).unwrap();
    assert_eq!(v["balance"], 100);
    s.stop().await;
}
