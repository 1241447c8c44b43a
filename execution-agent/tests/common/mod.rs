//! An in-process harness: f=1 (4 agreement nodes, 3 replicas of app 0),
//! deterministic keys, and helpers that play the agreement nodes' part.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(dead_code)]

use zz_agent::merkle::Shape;
use zz_agent::source::NoPeers;
use zz_agent::{app, Config, Out, Replica};
use zz_wire::*;

pub const F: usize = 1;

pub fn node_id(i: u16) -> Identity {
    Identity::from_seed(Principal::Node(NodeId(i)), [i as u8 + 1; 32])
}

pub fn replica_name(i: u16) -> ReplicaId {
    ReplicaId {
        app: AppId(0),
        index: i,
    }
}

pub fn replica_id(i: u16) -> Identity {
    Identity::from_seed(Principal::Replica(replica_name(i)), [i as u8 + 50; 32])
}

pub fn client_id() -> Identity {
    Identity::from_seed(Principal::Client(ClientId(0)), [90; 32])
}

pub fn orchestrator() -> Identity {
    Identity::from_seed(Principal::Orchestrator, [99; 32])
}

pub fn keyring() -> Keyring {
    let mut k = Keyring::new();
    for i in 0..4 {
        let id = node_id(i);
        k.insert(id.who, id.public());
    }
    for i in 0..3 {
        let id = replica_id(i);
        k.insert(id.who, id.public());
    }
    for id in [client_id(), orchestrator()] {
        k.insert(id.who, id.public());
    }
    k
}

pub struct Opts {
    pub kind: &'static str,
    pub interval: u64,
    pub shape: Shape,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            kind: "kv",
            interval: 16,
            shape: Shape::new(16, 2).unwrap(),
        }
    }
}

pub fn replica(i: u16, o: &Opts) -> Replica {
    let cfg = Config {
        me: replica_name(i),
        f: F,
        checkpoint_interval: o.interval,
        nodes: (0..4).map(NodeId).collect(),
        peers: (0..3).map(replica_name).filter(|r| r.index != i).collect(),
        shape: o.shape,
        admin: None,
    };
    let a: Box<dyn app::App> = match o.kind {
        // The kv example component, serving `/kv/`.
        "wasm-kv" => {
            let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kv/kv.wasm")).unwrap();
            Box::new(app::wasm::WasmApp::new("kv", &bytes).unwrap())
        }
        kind => app::build(kind, kind).unwrap(),
    };
    Replica::new(cfg, replica_id(i), keyring(), a)
}

/// Plays the agreement cluster: numbers proposals and signs orders.
pub struct Orderer {
    pub seq: Seq,
    pub next_req: u64,
    pub log: Vec<(Seq, Proposal)>,
}

impl Default for Orderer {
    fn default() -> Self {
        Orderer {
            seq: 0,
            next_req: 1,
            log: Vec::new(),
        }
    }
}

impl Orderer {
    pub fn propose(&mut self, ops: Vec<AppRequest>) -> (Seq, Proposal) {
        self.seq += 1;
        let requests = if ops.is_empty() {
            vec![]
        } else {
            let n = ops.len() as u64;
            let b = client_id().sign(ClientBatch::new(ClientId(0), AppId(0), self.next_req, &ops).expect("pack"));
            self.next_req += n;
            vec![b]
        };
        let p = Proposal {
            requests,
            nondet: NonDet {
                timestamp_ms: 1_000 + self.seq,
                seed: self.seq * 7,
            },
        };
        self.log.push((self.seq, p.clone()));
        (self.seq, p)
    }

    /// Orders for one seq from f+1 nodes (node (seq mod 4) carries the body).
    pub fn orders(seq: Seq, p: &Proposal) -> Vec<Msg> {
        (0..=F as u64)
            .map(|k| {
                let node = ((seq + k) % 4) as u16;
                Msg::Order(Order {
                    node: NodeId(node),
                    app: AppId(0),
                    seq,
                    digest: p.digest(),
                    proposal: (k == 0).then(|| p.clone()),
                })
            })
            .collect()
    }
}

pub fn from_node() -> Principal {
    Principal::Node(NodeId(0))
}

/// The link a message arrives on: its author's for a node's message (an
/// unsigned order counts only from its own node's link), node 0's otherwise.
pub fn link_of(m: &Msg) -> Principal {
    m.author()
        .filter(|p| matches!(p, Principal::Node(_)))
        .unwrap_or_else(from_node)
}

/// Feeds orders to a replica that needs no peers; returns its outputs.
pub fn feed(r: &mut Replica, seq: Seq, p: &Proposal) -> Vec<Out> {
    let mut out = Vec::new();
    for m in Orderer::orders(seq, p) {
        out.extend(r.on_msg(0, link_of(&m), m, &mut NoPeers));
    }
    out
}

pub fn replies(out: &[Out]) -> Vec<ExecReply> {
    out.iter()
        .filter_map(|o| match o {
            Out::Broadcast(Msg::ExecReply(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub fn checkpoints(out: &[Out]) -> Vec<Signed<ExecCheckpoint>> {
    out.iter()
        .filter_map(|o| match o {
            Out::Broadcast(Msg::ExecCheckpoint(c)) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

pub fn cert(sigs: Vec<Signed<ExecCheckpoint>>) -> CheckpointCert {
    let b = sigs[0].body;
    CheckpointCert {
        app: AppId(0),
        seq: b.seq,
        root: b.root,
        sigs,
    }
}

pub fn put(k: &str, v: &[u8]) -> AppRequest {
    AppRequest::new("PUT", &format!("/kv/{k}"), v.to_vec())
}

pub fn get(k: &str) -> AppRequest {
    AppRequest::new("GET", &format!("/kv/{k}"), Vec::new())
}

pub fn control(target: u16, nonce: u64, cmd: ControlCmd) -> Msg {
    Msg::Control(orchestrator().sign(Control {
        target: Principal::Replica(replica_name(target)),
        nonce,
        cmd,
    }))
}

pub fn seed() -> u64 {
    let s = std::env::var("ZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("seed = {s} (rerun with ZZ_SEED={s})");
    s
}
