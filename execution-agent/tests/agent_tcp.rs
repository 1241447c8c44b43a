//! The `zz-agent` binary over TCP: it dials fake agreement nodes and a fake
//! orchestrator, executes what they order, heartbeats, and obeys `crash`.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::timeout;
use zz_wire::config::{generate, GenerateOptions};
use zz_wire::frame::{handshake, LinkReader, LinkWriter};
use zz_wire::*;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn accept(l: &TcpListener, me: &Identity, keys: &Keyring) -> (Principal, LinkReader, LinkWriter) {
    let (s, _) = timeout(Duration::from_secs(20), l.accept()).await.unwrap().unwrap();
    handshake(s, me, keys, None).await.unwrap()
}

async fn next_of<T>(r: &mut LinkReader, mut pick: impl FnMut(Msg) -> Option<T>) -> T {
    timeout(Duration::from_secs(20), async {
        loop {
            let m = r.recv().await.unwrap().expect("link closed");
            if let Some(t) = pick(m) {
                return t;
            }
        }
    })
    .await
    .expect("timed out waiting for a message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_executes_orders_heartbeats_and_crashes_on_command() {
    let dir = tempfile::tempdir().unwrap();
    let opts = GenerateOptions::local(1, &["kv"]).unwrap();
    let (d, ids) = generate(&opts).unwrap();
    let path = d.write(dir.path(), &ids).unwrap();
    let keys = d.keyring();
    let me = ReplicaId {
        app: AppId(0),
        index: 1,
    };
    let node_ids: Vec<Identity> = ids
        .iter()
        .filter(|i| matches!(i.who, Principal::Node(_)))
        .cloned()
        .collect();
    let orch = ids.iter().find(|i| i.who == Principal::Orchestrator).unwrap().clone();
    let client = ids
        .iter()
        .find(|i| matches!(i.who, Principal::Client(_)))
        .unwrap()
        .clone();
    let mut listeners = Vec::new();
    for n in &d.nodes {
        listeners.push(TcpListener::bind(n.addr).await.unwrap());
    }
    let ol = TcpListener::bind(d.orchestrator.addr).await.unwrap();

    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_zz-agent"))
            .args(["--deployment", path.to_str().unwrap()])
            .args(["--key", dir.path().join("keys/kv-e1.key").to_str().unwrap()])
            .args(["--replica", "kv-e1", "--host-alias", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let mut links = Vec::new();
    for (l, id) in listeners.iter().zip(&node_ids) {
        let (peer, r, w) = accept(l, id, &keys).await;
        assert_eq!(peer, Principal::Replica(me));
        links.push((r, w));
    }
    let (_, mut orx, mut ow) = accept(&ol, &orch, &keys).await;

    // It asks for what it missed on connecting.
    let fetch = next_of(&mut links[0].0, |m| match m {
        Msg::FetchOrders(f) => Some(f),
        _ => None,
    })
    .await;
    assert_eq!(fetch.body.from, 1);

    // Seq 1: a PUT, ordered by nodes 1 and 2 (node 1 carries the body).
    let batch = client.sign(
        ClientBatch::new(
            ClientId(0),
            AppId(0),
            1,
            &[
                AppRequest::new("PUT", "/kv/x", b"hello".to_vec()),
                AppRequest::new("GET", "/kv/x", vec![]),
            ],
        )
        .expect("pack"),
    );
    let p = Proposal {
        requests: vec![batch],
        nondet: NonDet {
            timestamp_ms: 1,
            seed: 2,
        },
    };
    for k in 1..=2u16 {
        let o = Order {
            node: NodeId(k),
            app: AppId(0),
            seq: 1,
            digest: p.digest(),
            proposal: (k == 1).then(|| p.clone()),
        };
        links[k as usize].1.send(&Msg::Order(o)).await.unwrap();
    }
    let reply = next_of(&mut links[3].0, |m| match m {
        Msg::ExecReply(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(reply.seq, 1);
    let responses = reply.responses().unwrap();
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[1].2.body, b"hello");
    assert_eq!(responses[1].1, 2);

    let hb = next_of(&mut orx, |m| match m {
        Msg::Heartbeat(h) if h.body.last_executed == 1 => Some(h),
        _ => None,
    })
    .await;
    assert!(hb.verify(&keys).is_ok());

    ow.send(&Msg::Control(orch.sign(Control {
        target: Principal::Replica(me),
        nonce: 1,
        cmd: ControlCmd::SetFault(ReplicaFault::Crash),
    })))
    .await
    .unwrap();
    let status = timeout(Duration::from_secs(20), async {
        loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(101));
}
