//! Byzantine behaviour as middleware on a node's outgoing messages. The
//! node still runs the real core; what leaves it is rewritten here.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use zz_wire::{Identity, Msg, NodeId, Principal};

/// What a middleware sees besides the message.
pub struct MwCtx<'a> {
    pub now: u64,
    pub me: NodeId,
    pub n: usize,
    /// The faulty node's own key: a Byzantine node can sign anything as itself.
    pub identity: &'a Identity,
    pub rng: &'a mut ChaCha8Rng,
}

pub trait Middleware {
    /// Rewrites one message on its way to `to`: returns what actually
    /// leaves, each with an extra delay in ms.
    fn outgoing(&mut self, ctx: &mut MwCtx<'_>, to: NodeId, msg: Msg) -> Vec<(Msg, u64)>;
}

/// Sends nothing.
pub struct Silent;

impl Middleware for Silent {
    fn outgoing(&mut self, _: &mut MwCtx<'_>, _: NodeId, _: Msg) -> Vec<(Msg, u64)> {
        Vec::new()
    }
}

/// As primary, sends each backup a different pre-prepare for the same seq
/// (another seed, so another digest), each properly signed.
pub struct Equivocate;

impl Middleware for Equivocate {
    fn outgoing(&mut self, ctx: &mut MwCtx<'_>, to: NodeId, msg: Msg) -> Vec<(Msg, u64)> {
        match msg {
            Msg::PrePrepare(s) if s.body.node == ctx.me => {
                let mut b = s.body;
                b.proposal.nondet.seed ^= u64::from(to.0) + 1;
                b.digest = b.proposal.digest();
                vec![(Msg::PrePrepare(ctx.identity.sign(b)), 0)]
            }
            m => vec![(m, 0)],
        }
    }
}

/// Rewrites the primary's timestamps by `offset_ms` (re-signed): an
/// implausible clock that backups must refuse.
pub struct SkewTimestamps {
    pub offset_ms: i64,
}

impl Middleware for SkewTimestamps {
    fn outgoing(&mut self, ctx: &mut MwCtx<'_>, _: NodeId, msg: Msg) -> Vec<(Msg, u64)> {
        match msg {
            Msg::PrePrepare(s) if s.body.node == ctx.me && !s.body.proposal.requests.is_empty() => {
                let mut b = s.body;
                let ts = b.proposal.nondet.timestamp_ms;
                b.proposal.nondet.timestamp_ms = ts.saturating_add_signed(self.offset_ms);
                b.digest = b.proposal.digest();
                vec![(Msg::PrePrepare(ctx.identity.sign(b)), 0)]
            }
            m => vec![(m, 0)],
        }
    }
}

/// Holds the node's pre-prepares back by `delay_ms`.
pub struct DelayPrePrepares {
    pub delay_ms: u64,
}

impl Middleware for DelayPrePrepares {
    fn outgoing(&mut self, _: &mut MwCtx<'_>, _: NodeId, msg: Msg) -> Vec<(Msg, u64)> {
        let d = if matches!(msg, Msg::PrePrepare(_)) {
            self.delay_ms
        } else {
            0
        };
        vec![(msg, d)]
    }
}

/// Replaces every message by a forgery: signed by a key not in the
/// deployment, a tampered body under the original signature, or a message
/// claiming another node as author (every unsigned commit does).
pub struct Forge {
    pub stranger: Identity,
}

impl Middleware for Forge {
    fn outgoing(&mut self, ctx: &mut MwCtx<'_>, to: NodeId, msg: Msg) -> Vec<(Msg, u64)> {
        let how = ctx.rng.gen_range(0..3u8);
        let forged = match (how, msg) {
            // Tampered body, original signature.
            (0, Msg::Prepare(mut s)) => {
                s.body.0.digest.0[0] ^= 1;
                Msg::Prepare(s)
            }
            // A commit carries no signature: only its link vouches for it.
            (0 | 2, Msg::Commit(mut c)) => {
                c.0.node = super::node_id((usize::from(ctx.me.0) + 1) % ctx.n);
                Msg::Commit(c)
            }
            (0, Msg::PrePrepare(mut s)) => {
                s.body.proposal.nondet.seed ^= 7;
                s.body.digest = s.body.proposal.digest();
                Msg::PrePrepare(s)
            }
            (0, Msg::ViewChange(mut s)) => {
                s.body.new_view += 1;
                Msg::ViewChange(s)
            }
            (0, Msg::Bodies(mut s)) => {
                for (_, p) in &mut s.body.proposals {
                    p.nondet.seed ^= 7;
                }
                Msg::Bodies(s)
            }
            // Impersonate another node, signed with our key.
            (1, Msg::Commit(mut c)) => {
                c.0.seq += 1;
                c.0.node = super::node_id((usize::from(ctx.me.0) + 2) % ctx.n);
                Msg::Commit(c)
            }
            (1, Msg::Prepare(s)) => {
                let mut b = s.body;
                b.0.node = super::node_id((usize::from(ctx.me.0) + 1) % ctx.n);
                let sig = ctx.identity.sign_digest(&zz_wire::Signable::digest(&b));
                Msg::Prepare(zz_wire::Signed { body: b, sig })
            }
            // Signed by a key outside the deployment.
            (_, m) => resign(m, &self.stranger),
        };
        let _ = to;
        vec![(forged, 0)]
    }
}

/// As primary, slips a request no client made into every proposal: the
/// first client batch's first op is altered under the client's signature,
/// and the pre-prepare is then properly signed with the node's own key.
/// The digests of the proposals it forged are kept, to check that none
/// was ever delivered.
#[derive(Default)]
pub struct ForgeRequests {
    pub forged: std::sync::Arc<std::sync::Mutex<Vec<zz_wire::Digest>>>,
}

impl Middleware for ForgeRequests {
    fn outgoing(&mut self, ctx: &mut MwCtx<'_>, _: NodeId, msg: Msg) -> Vec<(Msg, u64)> {
        let Msg::PrePrepare(pp) = msg else {
            return vec![(msg, 0)];
        };
        let mut body = pp.body;
        let Some(batch) = body.proposal.requests.first_mut() else {
            return vec![(Msg::PrePrepare(ctx.identity.sign(body)), 0)];
        };
        let mut ops = batch.body.ops.unpack().unwrap_or_default();
        if let Some(op) = ops.first_mut() {
            op.body.extend_from_slice(b"-forged");
        }
        if let Ok(forged) = zz_wire::Packed::pack(&ops) {
            batch.body.ops = forged;
        }
        body.digest = body.proposal.digest();
        if let Ok(mut f) = self.forged.lock() {
            f.push(body.digest);
        }
        vec![(Msg::PrePrepare(ctx.identity.sign(body)), 0)]
    }
}

/// Re-signs a node message with another key, keeping the claimed author.
fn resign(m: Msg, key: &Identity) -> Msg {
    fn sig<T: zz_wire::Signable>(s: zz_wire::Signed<T>, key: &Identity) -> zz_wire::Signed<T> {
        let sig = key.sign_digest(&s.body.digest());
        zz_wire::Signed { body: s.body, sig }
    }
    match m {
        Msg::PrePrepare(s) => Msg::PrePrepare(sig(s, key)),
        Msg::Prepare(s) => Msg::Prepare(sig(s, key)),
        Msg::LogCheckpoint(s) => Msg::LogCheckpoint(sig(s, key)),
        Msg::ViewChange(s) => Msg::ViewChange(sig(s, key)),
        Msg::NewView(s) => Msg::NewView(sig(s, key)),
        Msg::LogFetch(s) => Msg::LogFetch(sig(s, key)),
        Msg::LogEntries(s) => Msg::LogEntries(sig(s, key)),
        Msg::BodyFetch(s) => Msg::BodyFetch(sig(s, key)),
        Msg::Bodies(s) => Msg::Bodies(sig(s, key)),
        other => other,
    }
}

/// Sends the real messages, plus old ones from its history to random peers.
pub struct Replay {
    history: VecDeque<Msg>,
    /// Chance per message of also replaying an old one.
    pub rate: f64,
}

impl Replay {
    pub fn new(rate: f64) -> Self {
        Replay {
            history: VecDeque::new(),
            rate,
        }
    }
}

impl Middleware for Replay {
    fn outgoing(&mut self, ctx: &mut MwCtx<'_>, _: NodeId, msg: Msg) -> Vec<(Msg, u64)> {
        let mut out = vec![(msg.clone(), 0)];
        if ctx.rng.gen_bool(self.rate) && !self.history.is_empty() {
            let i = ctx.rng.gen_range(0..self.history.len());
            out.push((self.history[i].clone(), ctx.rng.gen_range(0..50)));
        }
        if self.history.len() >= 512 {
            self.history.pop_front();
        }
        self.history.push_back(msg);
        out
    }
}

/// Identity of a principal that is not in the deployment's keyring.
pub fn stranger(seed: u8) -> Identity {
    Identity::from_seed(Principal::Orchestrator, [seed; 32])
}
