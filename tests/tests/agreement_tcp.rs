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
    let got = client
        .call(app, AppRequest::new("GET", "/kv/big12", Vec::new()))
        .await
        .expect("GET");
    assert_eq!(got.body, vec![12u8; 256 << 10]);
}
