//! Protocol messages. Each body names its author and digests its fields
//! explicitly (see `digest::Hasher`); the wire carries `Signed<body>`.

use crate::app::{AppRequest, AppResponse};
use crate::crypto::{Signable, Signed};
use crate::digest::{Digest, Hasher};
use crate::ids::{AppId, ClientId, NodeId, Principal, ReplicaId};
use crate::packed::{PackError, Packed};
use serde::{Deserialize, Serialize};

pub type Seq = u64;
pub type View = u64;

// ---------------------------------------------------------------- client

/// A client's signed batch of its own requests for one app. Request `i` has
/// id `first_id + i`; ids grow per (client, app), so retransmissions and
/// replays are recognised by id. The requests travel packed: agreement nodes
/// never decode them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientBatch {
    pub client: ClientId,
    pub app: AppId,
    pub first_id: u64,
    pub ops: Packed<AppRequest>,
}

impl ClientBatch {
    pub fn new(client: ClientId, app: AppId, first_id: u64, ops: &[AppRequest]) -> Result<Self, PackError> {
        Ok(ClientBatch {
            client,
            app,
            first_id,
            ops: Packed::pack(ops)?,
        })
    }
}

impl Signable for ClientBatch {
    fn author(&self) -> Principal {
        Principal::Client(self.client)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/client-batch/v2")
            .u16(self.client.0)
            .u16(self.app.0)
            .u64(self.first_id)
            .u64(self.ops.len() as u64)
            .bytes(self.ops.as_bytes())
            .finish()
    }
}

/// The responses to one client batch, in request order (packed: nodes vote
/// on and forward them without decoding).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    pub client: ClientId,
    pub first_id: u64,
    pub responses: Packed<AppResponse>,
}

impl BatchResult {
    fn hash_into(&self, h: Hasher) -> Hasher {
        h.u16(self.client.0)
            .u64(self.first_id)
            .u64(self.responses.len() as u64)
            .bytes(self.responses.as_bytes())
    }
}

/// An agreement node vouches for certified results of a client's batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReply {
    pub node: NodeId,
    pub app: AppId,
    /// The node's current view, so the client knows whom to send to first.
    pub view: View,
    pub client: ClientId,
    pub results: Vec<BatchResult>,
}

impl Signable for ClientReply {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        let mut h = Hasher::new("zz/client-reply/v2")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.view)
            .u16(self.client.0)
            .u64(self.results.len() as u64);
        for r in &self.results {
            h = r.hash_into(h);
        }
        h.finish()
    }
}

// ---------------------------------------------------------------- ordering

/// Non-determinism the primary proposes with each batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonDet {
    pub timestamp_ms: u64,
    pub seed: u64,
}

/// What PBFT agrees on at one sequence number: client batches plus nondet.
/// An empty `requests` is the null request of a new view.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub requests: Vec<Signed<ClientBatch>>,
    pub nondet: NonDet,
}

impl Proposal {
    pub fn digest(&self) -> Digest {
        let mut h = Hasher::new("zz/proposal/v1")
            .u64(self.nondet.timestamp_ms)
            .u64(self.nondet.seed)
            .u64(self.requests.len() as u64);
        for r in &self.requests {
            h = h.digest(&r.body.digest());
        }
        h.finish()
    }

    pub fn op_count(&self) -> usize {
        self.requests.iter().map(|r| r.body.ops.len()).sum()
    }

    /// Roughly what the proposal takes in memory and on the wire.
    pub fn approx_bytes(&self) -> usize {
        64 + self
            .requests
            .iter()
            .map(|r| 128 + r.body.ops.as_bytes().len())
            .sum::<usize>()
    }
}

/// PBFT §4.2: the primary assigns `seq` to a proposal in `view`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepare {
    pub node: NodeId,
    pub app: AppId,
    pub view: View,
    pub seq: Seq,
    pub proposal: Proposal,
    /// `proposal.digest()`, carried so verification of prepares is cheap;
    /// receivers recompute and reject a mismatch.
    pub digest: Digest,
}

impl Signable for PrePrepare {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        self.header().digest()
    }
}

impl PrePrepare {
    /// The signed part without the body: what view changes and new views
    /// carry, so their size does not grow with request sizes.
    pub fn header(&self) -> PrePrepareHeader {
        PrePrepareHeader {
            node: self.node,
            app: self.app,
            view: self.view,
            seq: self.seq,
            digest: self.digest,
        }
    }
}

/// A pre-prepare without its proposal. Its signature digest is the
/// pre-prepare's (same domain tag and fields), so a pre-prepare's signature
/// verifies on its header, and a header with a body whose digest matches is
/// again a validly signed pre-prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepareHeader {
    pub node: NodeId,
    pub app: AppId,
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
}

impl PrePrepareHeader {
    /// The full pre-prepare, if `proposal` is the body this header names.
    pub fn with_body(&self, proposal: Proposal) -> Option<PrePrepare> {
        (proposal.digest() == self.digest).then_some(PrePrepare {
            node: self.node,
            app: self.app,
            view: self.view,
            seq: self.seq,
            proposal,
            digest: self.digest,
        })
    }
}

impl Signed<PrePrepare> {
    /// The header with the pre-prepare's own signature (it covers the header).
    pub fn signed_header(&self) -> Signed<PrePrepareHeader> {
        Signed {
            body: self.body.header(),
            sig: self.sig,
        }
    }
}

impl Signed<PrePrepareHeader> {
    /// The signed pre-prepare again, if `proposal` is the body this header names.
    pub fn with_body(&self, proposal: Proposal) -> Option<Signed<PrePrepare>> {
        Some(Signed {
            body: self.body.with_body(proposal)?,
            sig: self.sig,
        })
    }
}

impl Signable for PrePrepareHeader {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/pre-prepare/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.view)
            .u64(self.seq)
            .digest(&self.digest)
            .finish()
    }
}

/// PBFT §4.2 prepare and commit share a shape; the phase is in the domain tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub node: NodeId,
    pub app: AppId,
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare(pub Vote);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit(pub Vote);

fn vote_digest(tag: &str, v: &Vote) -> Digest {
    Hasher::new(tag)
        .u16(v.node.0)
        .u16(v.app.0)
        .u64(v.view)
        .u64(v.seq)
        .digest(&v.digest)
        .finish()
}

impl Signable for Prepare {
    fn author(&self) -> Principal {
        Principal::Node(self.0.node)
    }
    fn digest(&self) -> Digest {
        vote_digest("zz/prepare/v1", &self.0)
    }
}

impl Signable for Commit {
    fn author(&self) -> Principal {
        Principal::Node(self.0.node)
    }
    fn digest(&self) -> Digest {
        vote_digest("zz/commit/v1", &self.0)
    }
}

/// PBFT §4.3 checkpoint of the agreement log: `log_digest` chains the digests
/// of every committed proposal up to `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCheckpoint {
    pub node: NodeId,
    pub app: AppId,
    pub seq: Seq,
    pub log_digest: Digest,
}

impl Signable for LogCheckpoint {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/log-checkpoint/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.seq)
            .digest(&self.log_digest)
            .finish()
    }
}

/// A pre-prepare with 2f matching prepares from distinct backups (PBFT's P
/// set entry). Only the header travels: receivers that need the body fetch
/// it by (seq, digest) with `BodyFetch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedProof {
    pub pre_prepare: Signed<PrePrepareHeader>,
    pub prepares: Vec<Signed<Prepare>>,
}

/// PBFT §4.4: node `node` moves to `new_view`, carrying its stable checkpoint
/// proof and everything it prepared above it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    pub node: NodeId,
    pub app: AppId,
    pub new_view: View,
    pub stable_seq: Seq,
    pub stable_digest: Digest,
    /// 2f+1 signed checkpoints for (stable_seq, stable_digest); empty at seq 0.
    pub checkpoint_proof: Vec<Signed<LogCheckpoint>>,
    pub prepared: Vec<PreparedProof>,
}

impl Signable for ViewChange {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        let mut h = Hasher::new("zz/view-change/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.new_view)
            .u64(self.stable_seq)
            .digest(&self.stable_digest)
            .u64(self.checkpoint_proof.len() as u64);
        for c in &self.checkpoint_proof {
            h = h.digest(&c.body.digest());
        }
        h = h.u64(self.prepared.len() as u64);
        for p in &self.prepared {
            h = h.digest(&p.pre_prepare.body.digest()).u64(p.prepares.len() as u64);
            for v in &p.prepares {
                h = h.digest(&v.body.digest());
            }
        }
        h.finish()
    }
}

/// PBFT §4.4: the new primary's proof (2f+1 view changes) and the
/// pre-prepares it re-issues for the new view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    pub node: NodeId,
    pub app: AppId,
    pub view: View,
    pub view_changes: Vec<Signed<ViewChange>>,
    /// The O set, as headers; bodies come from the receiver's log or `BodyFetch`.
    pub pre_prepares: Vec<Signed<PrePrepareHeader>>,
}

impl Signable for NewView {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        let mut h = Hasher::new("zz/new-view/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.view)
            .u64(self.view_changes.len() as u64);
        for v in &self.view_changes {
            h = h.digest(&v.body.digest());
        }
        h = h.u64(self.pre_prepares.len() as u64);
        for p in &self.pre_prepares {
            h = h.digest(&p.body.digest());
        }
        h.finish()
    }
}

/// A lagging or restarted agreement node asks peers for committed entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFetch {
    pub node: NodeId,
    pub app: AppId,
    pub from: Seq,
}

impl Signable for LogFetch {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/log-fetch/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.from)
            .finish()
    }
}

/// Committed entries a peer vouches for; a node accepts an entry once f+1
/// distinct peers vouch for the same digest at the same seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntries {
    pub node: NodeId,
    pub app: AppId,
    pub entries: Vec<(Seq, Proposal)>,
}

impl Signable for LogEntries {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        let mut h = Hasher::new("zz/log-entries/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.entries.len() as u64);
        for (seq, p) in &self.entries {
            h = h.u64(*seq).digest(&p.digest());
        }
        h.finish()
    }
}

/// A node installing a new view asks peers for the proposals it lacks,
/// named by (seq, digest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyFetch {
    pub node: NodeId,
    pub app: AppId,
    pub wants: Vec<(Seq, Digest)>,
}

impl Signable for BodyFetch {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        let mut h = Hasher::new("zz/body-fetch/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.wants.len() as u64);
        for (seq, d) in &self.wants {
            h = h.u64(*seq).digest(d);
        }
        h.finish()
    }
}

/// Proposals answering a `BodyFetch`; the receiver checks each against the
/// digest it asked for, so one correct answer suffices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bodies {
    pub node: NodeId,
    pub app: AppId,
    pub proposals: Vec<(Seq, Proposal)>,
}

impl Signable for Bodies {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        let mut h = Hasher::new("zz/bodies/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.proposals.len() as u64);
        for (seq, p) in &self.proposals {
            h = h.u64(*seq).digest(&p.digest());
        }
        h.finish()
    }
}

// ---------------------------------------------------------------- execution

/// An agreement node tells execution replicas what was committed at `seq`.
/// Replicas execute once f+1 distinct nodes sent matching (seq, digest);
/// `proposal` may be omitted by all but one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub node: NodeId,
    pub app: AppId,
    pub seq: Seq,
    pub digest: Digest,
    pub proposal: Option<Proposal>,
}

impl Signable for Order {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/order/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.seq)
            .digest(&self.digest)
            .finish()
    }
}

/// A replica asks an agreement node for the ORDERs in `from..=to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchOrders {
    pub replica: ReplicaId,
    pub from: Seq,
    pub to: Seq,
}

impl Signable for FetchOrders {
    fn author(&self) -> Principal {
        Principal::Replica(self.replica)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/fetch-orders/v1")
            .u16(self.replica.app.0)
            .u16(self.replica.index)
            .u64(self.from)
            .u64(self.to)
            .finish()
    }
}

/// A node's answer to `FetchOrders`: the latest stable checkpoint certificate
/// it knows, and the orders it still holds in the asked range (with bodies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrdersReply {
    pub node: NodeId,
    pub app: AppId,
    pub stable: Option<CheckpointCert>,
    /// The node's own orders (each names `node` as its author).
    pub orders: Vec<Order>,
}

impl Signable for OrdersReply {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        let mut h = Hasher::new("zz/orders-reply/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .opt_digest(self.stable.as_ref().map(|c| c.digest()).as_ref())
            .u64(self.orders.len() as u64);
        for o in &self.orders {
            h = h.digest(&o.digest());
        }
        h.finish()
    }
}

/// A replica's signed result of executing `seq`, with the state root after
/// it: one `BatchResult` per client batch of the proposal, in its order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecReply {
    pub replica: ReplicaId,
    pub seq: Seq,
    pub results: Vec<BatchResult>,
    pub root: Digest,
}

impl ExecReply {
    /// Every request's response, with its client and request id, in order.
    pub fn responses(&self) -> Result<Vec<(ClientId, u64, AppResponse)>, PackError> {
        let mut out = Vec::new();
        for b in &self.results {
            for (i, r) in b.responses.iter().enumerate() {
                out.push((b.client, b.first_id + i as u64, r?));
            }
        }
        Ok(out)
    }

    /// What replies must agree on to match: everything but the author.
    pub fn result_digest(&self) -> Digest {
        let mut h = Hasher::new("zz/exec-result/v2")
            .u16(self.replica.app.0)
            .u64(self.seq)
            .digest(&self.root)
            .u64(self.results.len() as u64);
        for r in &self.results {
            h = r.hash_into(h);
        }
        h.finish()
    }
}

impl Signable for ExecReply {
    fn author(&self) -> Principal {
        Principal::Replica(self.replica)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/exec-reply/v1")
            .u16(self.replica.index)
            .digest(&self.result_digest())
            .finish()
    }
}

/// A replica's signed Merkle root of its state after executing `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecCheckpoint {
    pub replica: ReplicaId,
    pub seq: Seq,
    pub root: Digest,
}

impl Signable for ExecCheckpoint {
    fn author(&self) -> Principal {
        Principal::Replica(self.replica)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/exec-checkpoint/v1")
            .u16(self.replica.app.0)
            .u16(self.replica.index)
            .u64(self.seq)
            .digest(&self.root)
            .finish()
    }
}

/// f+1 matching signed checkpoints from distinct replicas: a stable checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCert {
    pub app: AppId,
    pub seq: Seq,
    pub root: Digest,
    pub sigs: Vec<Signed<ExecCheckpoint>>,
}

impl CheckpointCert {
    pub fn digest(&self) -> Digest {
        Hasher::new("zz/checkpoint-cert/v1")
            .u16(self.app.0)
            .u64(self.seq)
            .digest(&self.root)
            .finish()
    }

    /// Checks that `quorum` distinct replicas of the app signed this (seq, root).
    pub fn verify(&self, keys: &crate::Keyring, quorum: usize) -> Result<(), CertError> {
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.sigs {
            let b = &s.body;
            if b.replica.app != self.app || b.seq != self.seq || b.root != self.root {
                return Err(CertError::Mismatch);
            }
            let (who, d, sig) = s.signed_digest();
            keys.verify_checkpoint(who, b.seq, &d, sig)
                .map_err(|_| CertError::BadSignature)?;
            seen.insert(b.replica.index);
        }
        if seen.len() < quorum {
            return Err(CertError::TooFew {
                have: seen.len(),
                need: quorum,
            });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("a signature in the certificate covers other values")]
    Mismatch,
    #[error("bad signature in certificate")]
    BadSignature,
    #[error("certificate has {have} distinct signers, needs {need}")]
    TooFew { have: usize, need: usize },
}

// ---------------------------------------------------------------- state fetch

/// A replica asks a peer for parts of the peer's copy of checkpoint `seq`.
/// Replicas cannot be dialled into, so agreement nodes relay these to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRequest {
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub id: u64,
    pub checkpoint: Seq,
    pub want: StateWant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateWant {
    /// Hashes of the children of the inner nodes at these paths.
    Nodes(Vec<TreePath>),
    /// Objects by key; absent keys answer `None`.
    Objects(Vec<Vec<u8>>),
    /// Whole buckets (all objects in them) by index.
    Buckets(Vec<u64>),
}

/// A node in the Merkle tree: `level` 0 is the root; `index` counts across the level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TreePath {
    pub level: u8,
    pub index: u64,
}

impl Signable for StateRequest {
    fn author(&self) -> Principal {
        Principal::Replica(self.from)
    }
    fn digest(&self) -> Digest {
        // The whole addressing is signed: a relay cannot re-aim a request
        // at another app's replica.
        let mut h = Hasher::new("zz/state-request/v2")
            .u16(self.from.app.0)
            .u16(self.from.index)
            .u16(self.to.app.0)
            .u16(self.to.index)
            .u64(self.id)
            .u64(self.checkpoint);
        match &self.want {
            StateWant::Nodes(ps) => {
                h = h.u8(0).u64(ps.len() as u64);
                for p in ps {
                    h = h.u8(p.level).u64(p.index);
                }
            }
            StateWant::Objects(ks) => {
                h = h.u8(1).u64(ks.len() as u64);
                for k in ks {
                    h = h.bytes(k);
                }
            }
            StateWant::Buckets(bs) => {
                h = h.u8(2).u64(bs.len() as u64);
                for b in bs {
                    h = h.u64(*b);
                }
            }
        }
        h.finish()
    }
}

/// One bucket's objects: (bucket index, [(key, value)]).
pub type BucketContents = (u64, Vec<(Vec<u8>, Vec<u8>)>);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateGive {
    /// For each asked path, the hashes of its children (in order).
    Nodes(Vec<(TreePath, Vec<Digest>)>),
    Objects(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Buckets(Vec<BucketContents>),
    /// The peer does not hold that checkpoint (any more).
    Unavailable,
}

/// The answer to a `StateRequest`. Its contents are checked against the
/// certified root by the receiver, so the signature only names the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateResponse {
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub id: u64,
    pub checkpoint: Seq,
    pub give: StateGive,
}

impl Signable for StateResponse {
    fn author(&self) -> Principal {
        Principal::Replica(self.from)
    }
    fn digest(&self) -> Digest {
        let mut h = Hasher::new("zz/state-response/v2")
            .u16(self.from.app.0)
            .u16(self.from.index)
            .u16(self.to.app.0)
            .u16(self.to.index)
            .u64(self.id)
            .u64(self.checkpoint);
        match &self.give {
            StateGive::Nodes(ns) => {
                h = h.u8(0).u64(ns.len() as u64);
                for (p, ds) in ns {
                    h = h.u8(p.level).u64(p.index).u64(ds.len() as u64);
                    for d in ds {
                        h = h.digest(d);
                    }
                }
            }
            StateGive::Objects(os) => {
                h = h.u8(1).u64(os.len() as u64);
                for (k, v) in os {
                    h = h.bytes(k);
                    h = match v {
                        Some(v) => h.u8(1).bytes(v),
                        None => h.u8(0),
                    };
                }
            }
            StateGive::Buckets(bs) => {
                h = h.u8(2).u64(bs.len() as u64);
                for (b, objs) in bs {
                    h = h.u64(*b).u64(objs.len() as u64);
                    for (k, v) in objs {
                        h = h.bytes(k).bytes(v);
                    }
                }
            }
            StateGive::Unavailable => h = h.u8(3),
        }
        h.finish()
    }
}

// ---------------------------------------------------------------- orchestration

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IncidentKind {
    /// Two replies for the same seq differ.
    Mismatch,
    /// No f+1 matching replies within the reply timeout.
    Timeout,
    /// No f+1 matching checkpoint digests for a checkpoint seq.
    Checkpoint,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Mismatch => "mismatch",
            IncidentKind::Timeout => "timeout",
            IncidentKind::Checkpoint => "checkpoint",
        }
    }
}

/// An agreement node asks the orchestrator to wake standbys of `app`. The
/// orchestrator acts on f+1 distinct nodes naming the same (app, seq).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    pub node: NodeId,
    pub app: AppId,
    pub seq: Seq,
    pub kind: IncidentKind,
}

impl Signable for Wake {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/wake/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.seq)
            .u8(self.kind as u8)
            .finish()
    }
}

/// Replica `replica` answered `seq` with `their_digest` where the certified
/// result was `certified_digest`; or stayed silent (`their_digest` = None).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub node: NodeId,
    pub replica: ReplicaId,
    pub seq: Seq,
    pub certified_digest: Digest,
    pub their_digest: Option<Digest>,
}

impl Signable for Fault {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/fault/v1")
            .u16(self.node.0)
            .u16(self.replica.app.0)
            .u16(self.replica.index)
            .u64(self.seq)
            .digest(&self.certified_digest)
            .opt_digest(self.their_digest.as_ref())
            .finish()
    }
}

/// Fault modes a replica can be switched into for demos and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReplicaFault {
    Crash,
    Hang,
    CorruptReply,
    CorruptState,
    BadCheckpoint,
    ServeBadState,
    Slow,
}

/// Fault modes an agreement node can be switched into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeFault {
    Crash,
    Mute,
    Equivocate,
    Slow,
    /// As primary, holds each pre-prepare just under the view-change
    /// timeout (Aardvark's slow primary): PBFT's timers alone never fire.
    SlowPrimary,
}

macro_rules! kebab_names {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub const ALL: &'static [$t] = &[$(<$t>::$v),*];
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(<$t>::$v),)*
                    _ => Err(format!("unknown kind {s:?}; expected one of: {}",
                        [$($s),*].join(", "))),
                }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

kebab_names!(ReplicaFault {
    Crash => "crash",
    Hang => "hang",
    CorruptReply => "corrupt-reply",
    CorruptState => "corrupt-state",
    BadCheckpoint => "bad-checkpoint",
    ServeBadState => "serve-bad-state",
    Slow => "slow",
});

kebab_names!(NodeFault {
    Crash => "crash",
    Mute => "mute",
    Equivocate => "equivocate",
    Slow => "slow",
    SlowPrimary => "slow-primary",
});

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCmd {
    SetFault(ReplicaFault),
    SetNodeFault(NodeFault),
    ClearFaults,
}

/// An authenticated command from the orchestrator to a replica or a node.
/// `nonce` grows per target so a replayed command is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub target: Principal,
    pub nonce: u64,
    pub cmd: ControlCmd,
}

fn principal_into(h: Hasher, p: &Principal) -> Hasher {
    match p {
        Principal::Node(n) => h.u8(0).u16(n.0),
        Principal::Replica(r) => h.u8(1).u16(r.app.0).u16(r.index),
        Principal::Client(c) => h.u8(2).u16(c.0),
        Principal::Orchestrator => h.u8(3),
    }
}

impl Signable for Control {
    fn author(&self) -> Principal {
        Principal::Orchestrator
    }
    fn digest(&self) -> Digest {
        let h = principal_into(Hasher::new("zz/control/v1"), &self.target).u64(self.nonce);
        match self.cmd {
            ControlCmd::SetFault(k) => h.u8(0).str(k.as_str()),
            ControlCmd::SetNodeFault(k) => h.u8(1).str(k.as_str()),
            ControlCmd::ClearFaults => h.u8(2),
        }
        .finish()
    }
}

/// Periodic liveness and progress report to the orchestrator: from a replica
/// (its app's execution progress) or from an agreement node (one per app).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub from: Principal,
    pub app: AppId,
    /// Agreement nodes: current view; replicas: 0.
    pub view: View,
    /// Replicas: last executed seq; nodes: last committed seq.
    pub last_executed: Seq,
    /// Last stable checkpoint known.
    pub last_checkpoint: Seq,
    /// Replicas: objects fetched from peers since start (catch-up work).
    pub fetched_objects: u64,
    /// Replicas: objects still marked stale, plus buckets known only by hash
    /// (a fresh replica fetches those whole); 0 once it holds the whole state.
    pub stale_objects: u64,
    pub time_ms: u64,
}

/// A replica asks the orchestrator for part of a tenant's Wasm component
/// (by its SHA-256), from `offset`: replicas that do not share its disk (VMs,
/// other hosts) get deployed components this way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentFetch {
    pub replica: ReplicaId,
    pub hash: [u8; 32],
    pub offset: u64,
}

impl Signable for ComponentFetch {
    fn author(&self) -> Principal {
        Principal::Replica(self.replica)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/component-fetch/v1")
            .u16(self.replica.app.0)
            .u16(self.replica.index)
            .u64(self.offset)
            .bytes(&self.hash)
            .finish()
    }
}

/// Bytes `offset..offset + bytes.len()` of the component `hash`, `total`
/// bytes long. Unsigned: the replica checks the whole against its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentChunk {
    pub hash: [u8; 32],
    pub offset: u64,
    pub total: u64,
    pub bytes: Vec<u8>,
}

/// The orchestrator's word that replica `replica`'s instance of
/// `generation` signs with `public_key`. Every replacement gets a fresh key,
/// so a fenced instance's key, stolen or not, stops counting: links and
/// signatures need the newest generation's key. The generation before keeps
/// counting only in checkpoint certificates at or below `retired_through`
/// (checkpoints it signed before it was fenced). Generation 1 is the key in
/// the deployment file. Nodes relay these to the app's replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaKey {
    pub replica: ReplicaId,
    pub generation: u64,
    pub public_key: crate::PublicKey,
    pub retired_through: Seq,
}

impl Signable for ReplicaKey {
    fn author(&self) -> Principal {
        Principal::Orchestrator
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/replica-key/v1")
            .u16(self.replica.app.0)
            .u16(self.replica.index)
            .u64(self.generation)
            .bytes(self.public_key.0.as_bytes())
            .u64(self.retired_through)
            .finish()
    }
}

impl Signed<ReplicaKey> {
    /// Checks the orchestrator's signature and makes the key current in
    /// `keys` (and every clone of it). `Ok(false)`: nothing new.
    pub fn apply(&self, keys: &crate::Keyring) -> Result<bool, crate::SigError> {
        self.verify(keys)?;
        let k = &self.body;
        Ok(keys.rotate(k.replica, k.generation, k.public_key, k.retired_through))
    }
}

/// Bytes per `ComponentChunk`, well inside the frame limit.
pub const COMPONENT_CHUNK: usize = 4 << 20;

impl Signable for Heartbeat {
    fn author(&self) -> Principal {
        self.from
    }
    fn digest(&self) -> Digest {
        principal_into(Hasher::new("zz/heartbeat/v1"), &self.from)
            .u16(self.app.0)
            .u64(self.view)
            .u64(self.last_executed)
            .u64(self.last_checkpoint)
            .u64(self.fetched_objects)
            .u64(self.stale_objects)
            .u64(self.time_ms)
            .finish()
    }
}

/// An agreement node tells the orchestrator that the incident at (app, seq)
/// got its first certified reply (f+1 matching); the orchestrator records
/// the time of the f+1-th such notice as `certified_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub node: NodeId,
    pub app: AppId,
    pub seq: Seq,
}

impl Signable for Resolved {
    fn author(&self) -> Principal {
        Principal::Node(self.node)
    }
    fn digest(&self) -> Digest {
        Hasher::new("zz/resolved/v1")
            .u16(self.node.0)
            .u16(self.app.0)
            .u64(self.seq)
            .finish()
    }
}

/// Everything that crosses a zz link after the handshake.
///
/// A message that only its receiver ever acts on — a commit, an order, an
/// execution reply, a reply to a client — travels unsigned: the link's frame
/// tags already prove it comes from the peer the handshake proved, and the
/// link reader checks that the peer is the message's author. Whatever may be
/// shown to a third party as proof (client batches, pre-prepares, prepares,
/// checkpoints, view changes, replica checkpoints) stays signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Request(Signed<ClientBatch>),
    Reply(ClientReply),
    PrePrepare(Signed<PrePrepare>),
    Prepare(Signed<Prepare>),
    Commit(Commit),
    LogCheckpoint(Signed<LogCheckpoint>),
    ViewChange(Signed<ViewChange>),
    NewView(Signed<NewView>),
    LogFetch(Signed<LogFetch>),
    LogEntries(Signed<LogEntries>),
    Order(Order),
    FetchOrders(Signed<FetchOrders>),
    OrdersReply(Signed<OrdersReply>),
    ExecReply(ExecReply),
    ExecCheckpoint(Signed<ExecCheckpoint>),
    /// A stable checkpoint certificate pushed to replicas (and the orchestrator).
    CheckpointCert(CheckpointCert),
    StateRequest(Signed<StateRequest>),
    StateResponse(Signed<StateResponse>),
    Wake(Signed<Wake>),
    Fault(Signed<Fault>),
    Resolved(Signed<Resolved>),
    Control(Signed<Control>),
    Heartbeat(Signed<Heartbeat>),
    // Appended, so the tags of the variants above stay as they were.
    BodyFetch(Signed<BodyFetch>),
    Bodies(Signed<Bodies>),
    ComponentFetch(Signed<ComponentFetch>),
    ComponentChunk(ComponentChunk),
    /// Boxed: a public key in its decoded form would make every `Msg` large.
    ReplicaKey(Box<Signed<ReplicaKey>>),
}

impl Msg {
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Request(_) => "request",
            Msg::Reply(_) => "reply",
            Msg::PrePrepare(_) => "pre-prepare",
            Msg::Prepare(_) => "prepare",
            Msg::Commit(_) => "commit",
            Msg::LogCheckpoint(_) => "log-checkpoint",
            Msg::ViewChange(_) => "view-change",
            Msg::NewView(_) => "new-view",
            Msg::LogFetch(_) => "log-fetch",
            Msg::LogEntries(_) => "log-entries",
            Msg::BodyFetch(_) => "body-fetch",
            Msg::Bodies(_) => "bodies",
            Msg::Order(_) => "order",
            Msg::FetchOrders(_) => "fetch-orders",
            Msg::OrdersReply(_) => "orders-reply",
            Msg::ExecReply(_) => "exec-reply",
            Msg::ExecCheckpoint(_) => "exec-checkpoint",
            Msg::CheckpointCert(_) => "checkpoint-cert",
            Msg::StateRequest(_) => "state-request",
            Msg::StateResponse(_) => "state-response",
            Msg::Wake(_) => "wake",
            Msg::Fault(_) => "fault",
            Msg::Resolved(_) => "resolved",
            Msg::Control(_) => "control",
            Msg::Heartbeat(_) => "heartbeat",
            Msg::ComponentFetch(_) => "component-fetch",
            Msg::ComponentChunk(_) => "component-chunk",
            Msg::ReplicaKey(_) => "replica-key",
        }
    }

    /// Verifies every signature the message carries at its top level.
    /// Nested proofs (view changes, certificates) are checked by their consumer.
    pub fn verify(&self, keys: &crate::Keyring) -> Result<(), crate::SigError> {
        self.signature()
            .map_or(Ok(()), |(who, d, sig)| keys.verify_digest(who, &d, sig))
    }

    /// Adds the signature the message carries at its top level to `batch`
    /// (what `verify` checks alone).
    pub fn queue(&self, batch: &mut crate::crypto::Batch) -> Result<(), crate::SigError> {
        self.signature()
            .map_or(Ok(()), |(who, d, sig)| batch.queue(who, &d, sig))
    }

    /// The top-level signature: its author, the digest it covers and itself.
    fn signature(&self) -> Option<(Principal, Digest, &crate::crypto::Signature)> {
        match self {
            Msg::Request(s) => Some(s.signed_digest()),
            Msg::Reply(_) | Msg::Commit(_) | Msg::Order(_) | Msg::ExecReply(_) => None,
            Msg::PrePrepare(s) => Some(s.signed_digest()),
            Msg::Prepare(s) => Some(s.signed_digest()),
            Msg::LogCheckpoint(s) => Some(s.signed_digest()),
            Msg::ViewChange(s) => Some(s.signed_digest()),
            Msg::NewView(s) => Some(s.signed_digest()),
            Msg::LogFetch(s) => Some(s.signed_digest()),
            Msg::LogEntries(s) => Some(s.signed_digest()),
            Msg::BodyFetch(s) => Some(s.signed_digest()),
            Msg::Bodies(s) => Some(s.signed_digest()),
            Msg::FetchOrders(s) => Some(s.signed_digest()),
            Msg::OrdersReply(s) => Some(s.signed_digest()),
            Msg::ExecCheckpoint(s) => Some(s.signed_digest()),
            Msg::CheckpointCert(_) => None,
            Msg::StateRequest(s) => Some(s.signed_digest()),
            Msg::StateResponse(s) => Some(s.signed_digest()),
            Msg::Wake(s) => Some(s.signed_digest()),
            Msg::Fault(s) => Some(s.signed_digest()),
            Msg::Resolved(s) => Some(s.signed_digest()),
            Msg::Control(s) => Some(s.signed_digest()),
            Msg::Heartbeat(s) => Some(s.signed_digest()),
            Msg::ComponentFetch(s) => Some(s.signed_digest()),
            Msg::ComponentChunk(_) => None,
            Msg::ReplicaKey(s) => Some(s.signed_digest()),
        }
    }

    /// The principal that wrote the message: the signer of a signed one,
    /// the named sender of an unsigned one (which only its link vouches for).
    pub fn author(&self) -> Option<Principal> {
        Some(match self {
            Msg::Request(s) => s.author(),
            Msg::Reply(m) => m.author(),
            Msg::PrePrepare(s) => s.author(),
            Msg::Prepare(s) => s.author(),
            Msg::Commit(m) => m.author(),
            Msg::LogCheckpoint(s) => s.author(),
            Msg::ViewChange(s) => s.author(),
            Msg::NewView(s) => s.author(),
            Msg::LogFetch(s) => s.author(),
            Msg::LogEntries(s) => s.author(),
            Msg::BodyFetch(s) => s.author(),
            Msg::Bodies(s) => s.author(),
            Msg::Order(m) => m.author(),
            Msg::FetchOrders(s) => s.author(),
            Msg::OrdersReply(s) => s.author(),
            Msg::ExecReply(m) => m.author(),
            Msg::ExecCheckpoint(s) => s.author(),
            Msg::CheckpointCert(_) | Msg::ComponentChunk(_) => return None,
            Msg::StateRequest(s) => s.author(),
            Msg::StateResponse(s) => s.author(),
            Msg::Wake(s) => s.author(),
            Msg::Fault(s) => s.author(),
            Msg::Resolved(s) => s.author(),
            Msg::Control(s) => s.author(),
            Msg::Heartbeat(s) => s.author(),
            Msg::ComponentFetch(s) => s.author(),
            Msg::ReplicaKey(s) => s.author(),
        })
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn a_pre_prepare_signature_verifies_on_its_header_and_back() {
        let id = Identity::from_seed(Principal::Node(NodeId(0)), [7; 32]);
        let mut keys = crate::Keyring::new();
        keys.insert(Principal::Node(NodeId(0)), id.public());
        let proposal = Proposal::default();
        let pp = id.sign(PrePrepare {
            node: NodeId(0),
            app: AppId(1),
            view: 3,
            seq: 7,
            digest: proposal.digest(),
            proposal: proposal.clone(),
        });
        let h = pp.signed_header();
        assert_eq!(h.body.digest(), pp.body.digest());
        h.verify(&keys).expect("header verifies");
        let back = h.with_body(proposal).expect("matching body");
        back.verify(&keys).expect("re-formed pre-prepare verifies");
        assert_eq!(back, pp);
        let other = Proposal {
            nondet: NonDet {
                timestamp_ms: 1,
                seed: 2,
            },
            ..Proposal::default()
        };
        assert!(h.with_body(other).is_none(), "a body with another digest is refused");
    }
}
