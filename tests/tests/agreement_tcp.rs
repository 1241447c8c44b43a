//! Four `zz-agreement` processes and two `zz-agent` processes over real TCP
//! on loopback: requests are ordered, executed by f+1 replicas, certified by
//! f+1 matching replies, and vouched for by f+1 nodes to the client.

use std::time::Duration;
use zz_tests::Cluster;
use zz_wire::AppRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_requests_are_ordered_executed_and_certified_over_tcp() {
    let mut c = Cluster::new(1, &["kv"]);
    c.start_nodes();
    c.start_agent("kv-e0");
    c.start_agent("kv-e1");
    let client = c.client("gateway", Duration::from_secs(20));
    let app = c.dep.app_by_name("kv").expect("kv app");

    let put = client
        .call(app, AppRequest::new("PUT", "/kv/greeting", b"hello".to_vec()))
        .await;
    if put.as_ref().map(|r| r.status) != Ok(200) {
        c.dump_logs();
        panic!("PUT failed: {put:?}");
    }
    let got = client
        .call(app, AppRequest::new("GET", "/kv/greeting", Vec::new()))
        .await
        .expect("GET");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"hello");

    // Many concurrent requests share batches and all get their own answer.
    let mut calls = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let key = format!("/kv/k{i}");
            client
                .call(app, AppRequest::new("PUT", &key, format!("v{i}").into_bytes()))
                .await
        }));
    }
    for call in calls {
        assert_eq!(call.await.expect("join").expect("PUT").status, 200);
    }
    let got = client
        .call(app, AppRequest::new("GET", "/kv/k123", Vec::new()))
        .await
        .expect("GET");
    assert_eq!(got.body, b"v123");
    let missing = client
        .call(app, AppRequest::new("GET", "/kv/nope", Vec::new()))
        .await
        .expect("GET");
    assert_eq!(missing.status, 404);

    // Large values: 16 concurrent PUTs of 256 KiB each get their answer.
    let mut calls = Vec::new();
    for i in 0..16u8 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            client
                .call(app, AppRequest::new("PUT", &format!("/kv/big{i}"), vec![i; 256 << 10]))
                .await
        }));
    }
    for call in calls {
        let put = call.await.expect("join");
        if put.as_ref().map(|r| r.status) != Ok(200) {
            c.dump_logs();
            panic!("large PUT failed: {put:?}");
        }
    }
    let got = client.call(app, AppRequest::new("GET", "/kv/big12", Vec::new())).await;
    let Ok(got) = got else {
        c.dump_logs();
        panic!("GET of a large value: {got:?}");
    };
    assert_eq!(got.body, vec![12u8; 256 << 10]);
}

/// PBFT's last-reply cache (issue 25, item 13): a client that re-sends a
/// batch the cluster already executed (its answers were lost) gets the
/// certified answer again, instead of silence and a 503 for a request that
/// was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_batch_that_already_committed_is_answered_again() {
    use zz_wire::frame::handshake;
    use zz_wire::{ClientBatch, Msg, NodeId, Principal};

    let mut c = Cluster::new(1, &["kv"]);
    c.start_nodes();
    c.start_agent("kv-e0");
    c.start_agent("kv-e1");
    let app = c.dep.app_by_name("kv").expect("kv app");
    let who = c.dep.parse_principal("gateway").expect("gateway");
    let Principal::Client(cid) = who else {
        panic!("gateway is a client")
    };
    let me = c.dep.load_identity(&c.keys(), who).expect("key");
    let keys = c.dep.keyring();
    let batch =
        me.sign(ClientBatch::new(cid, app, 1, &[AppRequest::new("PUT", "/kv/once", b"1".to_vec())]).expect("pack"));

    // Sends the batch to every node on fresh links and counts the nodes
    // that answer it within the limit.
    let send_and_count = |limit: Duration| {
        let (dep, me, keys, batch) = (c.dep.clone(), me.clone(), keys.clone(), batch.clone());
        async move {
            let mut readers = Vec::new();
            for n in &dep.nodes {
                let Ok(s) = tokio::net::TcpStream::connect(n.addr).await else {
                    continue;
                };
                let peer = Principal::Node(NodeId(n.id));
                let Ok((_, r, mut w)) = handshake(s, &me, &keys, Some(peer)).await else {
                    continue;
                };
                w.send(&Msg::Request(batch.clone())).await.expect("send");
                readers.push((r, w));
            }
            let mut answered = 0;
            for (mut r, _w) in readers {
                let got = tokio::time::timeout(limit, async {
                    loop {
                        match r.recv().await {
                            Ok(Some(Msg::Reply(rep))) if rep.results.iter().any(|b| b.first_id == 1) => return true,
                            Ok(Some(_)) => continue,
                            _ => return false,
                        }
                    }
                })
                .await;
                if got == Ok(true) {
                    answered += 1;
                }
            }
            answered
        }
    };
    let first = send_and_count(Duration::from_secs(15)).await;
    if first < 2 {
        c.dump_logs();
        panic!("only {first} nodes answered the first send");
    }
    let again = send_and_count(Duration::from_secs(5)).await;
    assert!(again >= 2, "{again} nodes answered the retransmission; f+1 = 2 needed");
}
