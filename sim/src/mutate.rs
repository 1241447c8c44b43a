//! ByzzFuzz-style small-scope mutations of a Byzantine node's outgoing
//! protocol messages: view or seq off by one, a digest swapped for one it
//! saw earlier, an old message replayed, a vote dropped or sent twice. The
//! node signs what it sends with its own key, as a Byzantine node can.

use rand::Rng;
use std::collections::VecDeque;
use zz_agreement::sim::byz::{Middleware, MwCtx};
use zz_wire::{Digest, Msg, NodeId, Vote};

/// Old messages and digests kept to replay or swap in.
const MEMORY: usize = 64;

pub struct Mutate {
    pub rate: f64,
    old: VecDeque<Msg>,
    digests: VecDeque<Digest>,
    pub mutated: u64,
}

impl Mutate {
    pub fn new(rate: f64) -> Self {
        Mutate {
            rate,
            old: VecDeque::new(),
            digests: VecDeque::new(),
            mutated: 0,
        }
    }

    fn remember(&mut self, msg: &Msg) {
        let d = match msg {
            Msg::PrePrepare(p) => Some(p.body.digest),
            Msg::Prepare(p) => Some(p.body.0.digest),
            Msg::Commit(c) => Some(c.0.digest),
            _ => None,
        };
        if let Some(d) = d {
            if self.digests.len() >= MEMORY {
                self.digests.pop_front();
            }
            self.digests.push_back(d);
        }
        if self.old.len() >= MEMORY {
            self.old.pop_front();
        }
        self.old.push_back(msg.clone());
    }
}

/// A field of a vote-like message nudged.
enum Nudge {
    View(i64),
    Seq(i64),
    Digest(Digest),
}

fn nudge_vote(v: &mut Vote, n: &Nudge) {
    match n {
        Nudge::View(d) => v.view = v.view.saturating_add_signed(*d),
        Nudge::Seq(d) => v.seq = v.seq.saturating_add_signed(*d),
        Nudge::Digest(x) => v.digest = *x,
    }
}

impl Middleware for Mutate {
    fn outgoing(&mut self, ctx: &mut MwCtx<'_>, _to: NodeId, msg: Msg) -> Vec<(Msg, u64)> {
        let protocol = matches!(
            msg,
            Msg::PrePrepare(_) | Msg::Prepare(_) | Msg::Commit(_) | Msg::ViewChange(_)
        );
        if !protocol || !ctx.rng.gen_bool(self.rate) {
            self.remember(&msg);
            return vec![(msg, 0)];
        }
        self.mutated += 1;
        let choice = ctx.rng.gen_range(0..6);
        let nudge = match choice {
            0 => Nudge::View(if ctx.rng.gen_bool(0.5) { 1 } else { -1 }),
            1 => Nudge::Seq(if ctx.rng.gen_bool(0.5) { 1 } else { -1 }),
            2 => match self.digests.get(ctx.rng.gen_range(0..self.digests.len().max(1))) {
                Some(d) => Nudge::Digest(*d),
                None => Nudge::Seq(1),
            },
            3 => return Vec::new(),
            4 => {
                let extra = ctx.rng.gen_range(0..50);
                return vec![(msg.clone(), 0), (msg, extra)];
            }
            _ => {
                let old = self.old.get(ctx.rng.gen_range(0..self.old.len().max(1))).cloned();
                self.remember(&msg);
                return std::iter::once((msg, 0)).chain(old.map(|m| (m, 0))).collect();
            }
        };
        let out = match msg {
            Msg::PrePrepare(p) => {
                let mut b = p.body;
                match nudge {
                    Nudge::View(d) => b.view = b.view.saturating_add_signed(d),
                    Nudge::Seq(d) => b.seq = b.seq.saturating_add_signed(d),
                    Nudge::Digest(x) => b.digest = x,
                }
                Msg::PrePrepare(ctx.identity.sign(b))
            }
            Msg::Prepare(p) => {
                let mut b = p.body;
                nudge_vote(&mut b.0, &nudge);
                Msg::Prepare(ctx.identity.sign(b))
            }
            Msg::Commit(mut c) => {
                nudge_vote(&mut c.0, &nudge);
                Msg::Commit(c)
            }
            Msg::ViewChange(v) => {
                let mut b = v.body;
                if let Nudge::View(d) = nudge {
                    b.new_view = b.new_view.saturating_add_signed(d);
                }
                Msg::ViewChange(ctx.identity.sign(b))
            }
            other => other,
        };
        vec![(out, 0)]
    }
}
