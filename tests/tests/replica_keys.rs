//! Issue 25 item 4 over real processes: four `zz-agreement` nodes told a
//! replacement replica's key by the orchestrator (played here by the test,
//! with the orchestrator's key) refuse the fenced instance's key, keep the
//! new one across a restart, and certify answers the replacement signs
//! (its agent started from the key file and announcement the orchestrator
//! writes).

use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use zz_tests::{eventually, Cluster};
use zz_wire::frame::{handshake, LinkWriter};
use zz_wire::{AppRequest, Identity, Msg, NodeId, Principal, ReplicaId, ReplicaKey};

/// Whether node `n` takes a link opened with `id`'s key.
async fn node_takes(c: &Cluster, n: u16, id: &Identity) -> bool {
    let addr = c.dep.node_addr(NodeId(n)).expect("node address");
    let Ok(s) = TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((_, mut rx, _tx)) = handshake(s, id, &c.dep.keyring(), Some(Principal::Node(NodeId(n)))).await else {
        return false;
    };
    // The node may finish its side and then drop the link: it counts only
    // if the link stays open.
    !matches!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv()).await,
        Ok(Ok(None) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_take_a_replacements_announced_key_and_refuse_the_fenced_one_across_restarts() {
    let mut c = Cluster::new(1, &["kv"]);
    let kv = c.dep.app_by_name("kv").expect("kv");
    let e1 = ReplicaId { app: kv, index: 1 };
    let orch = c
        .dep
        .load_identity(&c.keys(), Principal::Orchestrator)
        .expect("orchestrator key");
    let old = c
        .dep
        .load_identity(&c.keys(), Principal::Replica(e1))
        .expect("kv-e1 key");
    let listener = TcpListener::bind(c.dep.orchestrator.addr)
        .await
        .expect("orchestrator port");
    c.start_nodes();

    // The stand-in orchestrator accepts the nodes' links.
    let mut links: Vec<LinkWriter> = Vec::new();
    while links.len() < c.dep.n() {
        let (s, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
            .await
            .expect("every node dials the orchestrator")
            .expect("accept");
        let (who, rx, tx) = handshake(s, &orch, &c.dep.keyring(), None)
            .await
            .expect("node handshake");
        assert!(matches!(who, Principal::Node(_)));
        drop(rx);
        links.push(tx);
    }
    assert!(
        node_takes(&c, 0, &old).await,
        "kv-e1's first key should open a link before any replacement"
    );

    // kv-e1 is replaced: a fresh key, announced to every node.
    let new = Identity::from_seed(Principal::Replica(e1), [42; 32]);
    let cert = orch.sign(ReplicaKey {
        replica: e1,
        generation: 2,
        public_key: new.public(),
        retired_through: 0,
    });
    for tx in &mut links {
        tx.send(&Msg::ReplicaKey(Box::new(cert.clone())))
            .await
            .expect("announce");
    }
    let refused = eventually(Duration::from_secs(10), || async {
        let mut all = true;
        for n in 0..4 {
            all &= !node_takes(&c, n, &old).await;
        }
        all.then_some(())
    })
    .await;
    if refused.is_none() {
        c.dump_logs();
        panic!("a node still takes the fenced instance's key");
    }

    // The replacement's agent starts from the key file and announcement the
    // orchestrator writes, and its answers count: with kv-e0, f+1 = 2.
    let key_file = c.keys().join("kv-e1-g2.key");
    std::fs::write(&key_file, format!("{}\n", new.secret_hex())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        zz_wire::config::key_cert_path(&key_file),
        zz_wire::config::key_cert_text(&cert),
    )
    .unwrap();
    c.start_agent("kv-e0");
    c.start_agent_with_key("kv-e1", &key_file);
    let client = c.client("gateway", Duration::from_secs(20));
    let put = client.call(kv, AppRequest::new("PUT", "/kv/k", b"v".to_vec())).await;
    if put.as_ref().map(|r| r.status) != Ok(200) {
        c.dump_logs();
        panic!("PUT with the replacement voting: {put:?}");
    }

    // A restarted node remembers the new key with no orchestrator to tell it.
    drop(links);
    drop(listener);
    c.kill("a3");
    c.start_node(3);
    let up = eventually(Duration::from_secs(10), || async {
        node_takes(&c, 3, &new).await.then_some(())
    })
    .await;
    if up.is_none() {
        c.dump_logs();
        panic!("restarted a3 does not take the replacement's key");
    }
    assert!(
        !node_takes(&c, 3, &old).await,
        "restarted a3 takes the fenced instance's key again"
    );
}
