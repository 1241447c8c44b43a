//! Clients as the gateway is one: each signs a one-op batch, sends it to
//! every agreement node, accepts the answer once f+1 nodes sent the same
//! result, re-sends while none came, and gives up at a deadline (the
//! gateway's 503; the op is then "maybe applied" for the oracle).

use crate::oracle::{Call, Kind, Record};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use zz_wire::{AppId, AppRequest, AppResponse, BatchResult, ClientBatch, ClientId, Identity, Msg, NodeId, Signed};

/// How long a client waits for f+1 matching answers before it gives up.
pub const DEADLINE_MS: u64 = 8_000;
/// Re-send to every node when no answer came this long.
const RETRY_MS: u64 = 500;
const KV_KEYS: u64 = 4;
pub const BANK_ACCOUNTS: [&str; 3] = ["a", "b", "c"];
pub const OPENING_BALANCE: u64 = 100;

struct Pending {
    batch: Signed<ClientBatch>,
    call: Call,
    call_ms: u64,
    last_sent_ms: u64,
    answers: BTreeMap<NodeId, BatchResult>,
}

pub(crate) struct Client {
    pub id: ClientId,
    identity: Identity,
    pub app: AppId,
    kind: Kind,
    /// This client's index among its app's clients.
    nth: usize,
    next_id: u64,
    pending: Option<Pending>,
    next_at_ms: u64,
    rng: ChaCha8Rng,
    pub flooding: bool,
    /// Bank: accounts opened so far (the first client opens them).
    opened: usize,
}

/// What a client wants sent.
pub(crate) type Sends = Vec<Msg>;

impl Client {
    pub fn new(identity: Identity, id: ClientId, app: AppId, kind: Kind, nth: usize, seed: u64) -> Self {
        Client {
            id,
            identity,
            app,
            kind,
            nth,
            next_id: 1,
            pending: None,
            next_at_ms: 0,
            rng: ChaCha8Rng::seed_from_u64(seed ^ (u64::from(id.0) << 40) ^ 0xc11e),
            flooding: false,
            opened: 0,
        }
    }

    /// Time passed: issue, re-send or give up. `issue`: new ops may start.
    pub fn tick(&mut self, now: u64, issue: bool, history: &mut Vec<Record>) -> Sends {
        if let Some(p) = &mut self.pending {
            if now.saturating_sub(p.call_ms) > DEADLINE_MS {
                self.finish(None, None, history);
                self.next_at_ms = now;
                return Vec::new();
            }
            let copies = if self.flooding { 3 } else { 1 };
            if self.flooding || now.saturating_sub(p.last_sent_ms) >= RETRY_MS {
                p.last_sent_ms = now;
                return vec![Msg::Request(p.batch.clone()); copies];
            }
            return Vec::new();
        }
        if !issue || now < self.next_at_ms {
            return Vec::new();
        }
        let call = self.next_call();
        let req = call.request();
        let first_id = self.next_id;
        self.next_id += 1;
        let Ok(body) = ClientBatch::new(self.id, self.app, first_id, &[req]) else {
            return Vec::new();
        };
        let batch = self.identity.sign(body);
        self.pending = Some(Pending {
            batch: batch.clone(),
            call,
            call_ms: now,
            last_sent_ms: now,
            answers: BTreeMap::new(),
        });
        vec![Msg::Request(batch)]
    }

    /// A node's answer; the op completes on f+1 equal results.
    pub fn on_reply(&mut self, now: u64, node: NodeId, results: &[BatchResult], f: usize, history: &mut Vec<Record>) {
        let Some(p) = &mut self.pending else { return };
        let Some(r) = results
            .iter()
            .find(|r| r.client == self.id && r.first_id == p.batch.body.first_id)
        else {
            return;
        };
        p.answers.insert(node, r.clone());
        let same = p.answers.values().filter(|x| x.responses == r.responses).count();
        if same <= f {
            return;
        }
        let answer: Option<AppResponse> = r.responses.iter().next().and_then(Result::ok);
        self.finish(Some(now), answer, history);
        self.next_at_ms = now + self.rng.gen_range(20..400);
    }

    /// The pending op ends: answered at `ret_ms`, or given up on (`None`).
    fn finish(&mut self, ret_ms: Option<u64>, answer: Option<AppResponse>, history: &mut Vec<Record>) {
        if let Some(p) = self.pending.take() {
            history.push(Record {
                client: self.id,
                app: self.app,
                call: p.call,
                call_ms: p.call_ms,
                ret_ms,
                answer,
            });
        }
    }

    fn next_call(&mut self) -> Call {
        match self.kind {
            Kind::Kv => {
                let key = format!("k{}", self.rng.gen_range(0..KV_KEYS));
                match self.rng.gen_range(0..10) {
                    0..=3 => Call::Put {
                        key,
                        value: format!("{}-{}", self.id.0, self.next_id),
                    },
                    4..=7 => Call::Get { key },
                    _ => Call::Delete { key },
                }
            }
            Kind::Bank => {
                if self.nth == 0 && self.opened < BANK_ACCOUNTS.len() {
                    self.opened += 1;
                    return Call::Open {
                        id: BANK_ACCOUNTS[self.opened - 1].to_string(),
                        balance: OPENING_BALANCE,
                    };
                }
                let a = BANK_ACCOUNTS[self.rng.gen_range(0..BANK_ACCOUNTS.len())].to_string();
                match self.rng.gen_range(0..10) {
                    0..=5 => {
                        let to = BANK_ACCOUNTS[self.rng.gen_range(0..BANK_ACCOUNTS.len())].to_string();
                        Call::Transfer {
                            from: a,
                            to,
                            amount: self.rng.gen_range(1..60),
                        }
                    }
                    6..=7 => Call::Balance { id: a },
                    _ => Call::Audit,
                }
            }
        }
    }
}

impl Call {
    fn request(&self) -> AppRequest {
        match self {
            Call::Put { key, value } => AppRequest::new("PUT", &format!("/kv/{key}"), value.as_bytes().to_vec()),
            Call::Get { key } => AppRequest::new("GET", &format!("/kv/{key}"), Vec::new()),
            Call::Delete { key } => AppRequest::new("DELETE", &format!("/kv/{key}"), Vec::new()),
            Call::Open { id, balance } => AppRequest::new(
                "POST",
                "/bank/accounts",
                serde_json::json!({ "id": id, "balance": balance }).to_string(),
            ),
            Call::Transfer { from, to, amount } => AppRequest::new(
                "POST",
                "/bank/transfer",
                serde_json::json!({ "from": from, "to": to, "amount": amount }).to_string(),
            ),
            Call::Balance { id } => AppRequest::new("GET", &format!("/bank/accounts/{id}"), Vec::new()),
            Call::Audit => AppRequest::new("GET", "/bank/audit", Vec::new()),
        }
    }
}
