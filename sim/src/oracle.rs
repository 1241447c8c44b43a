//! What every accepted answer must satisfy.
//!
//! - kv: the history is linearizable against a plain map (Wing & Gong's
//!   search with Lowe's memo of (linearized set, state)), checked key by
//!   key (a map's keys are independent). A request that got no answer may
//!   have been applied or not: it may take effect anywhere after its call,
//!   or never.
//! - bank: every certified audit shows the money of the accounts opened,
//!   no more and no less (transfers conserve it); balances are never negative.

use std::collections::{BTreeMap, HashSet};
use zz_wire::{AppId, AppResponse, ClientId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kv,
    Bank,
}

/// One operation a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Put { key: String, value: String },
    Get { key: String },
    Delete { key: String },
    Open { id: String, balance: u64 },
    Transfer { from: String, to: String, amount: u64 },
    Balance { id: String },
    Audit,
}

/// One finished operation: answered (`ret_ms`, `answer`) or given up on.
#[derive(Clone, Debug)]
pub struct Record {
    pub client: ClientId,
    pub app: AppId,
    pub call: Call,
    pub call_ms: u64,
    pub ret_ms: Option<u64>,
    pub answer: Option<AppResponse>,
}

/// Violations of the kv and bank rules in `history`.
pub fn check(history: &[Record]) -> Vec<String> {
    let mut out = Vec::new();
    let mut by_key: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in history {
        match &r.call {
            Call::Put { key, .. } | Call::Get { key } | Call::Delete { key } => {
                by_key.entry(key.clone()).or_default().push(r)
            }
            Call::Audit => out.extend(check_audit(r)),
            Call::Balance { id } => {
                if let Some(a) = &r.answer {
                    if a.status == 200 && json_u64(&a.body, "balance").is_none() {
                        out.push(format!("balance of {id} is not a whole number: {}", text(&a.body)));
                    }
                }
            }
            Call::Open { .. } | Call::Transfer { .. } => {}
        }
    }
    for (key, ops) in by_key {
        if let Err(e) = linearizable(&ops) {
            out.push(format!("kv key {key}: {e}"));
        }
    }
    out
}

fn check_audit(r: &Record) -> Option<String> {
    let a = r.answer.as_ref()?;
    if a.status != 200 {
        return Some(format!("audit at {} ms answered {}", r.call_ms, a.status));
    }
    let (accounts, total) = (json_u64(&a.body, "accounts")?, json_u64(&a.body, "total")?);
    let opened = accounts.checked_mul(crate::clients::OPENING_BALANCE)?;
    (total != opened || accounts > crate::clients::BANK_ACCOUNTS.len() as u64).then(|| {
        format!(
            "bank audit at {} ms: {accounts} accounts hold {total}, not {opened} (money made or lost)",
            r.call_ms
        )
    })
}

fn json_u64(body: &[u8], field: &str) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get(field)?
        .as_u64()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Whether the answers of one key's ops fit some order consistent with
/// real time.
fn linearizable(ops: &[&Record]) -> Result<(), String> {
    // Unanswered reads change nothing: leave them out.
    let ops: Vec<&Record> = ops
        .iter()
        .copied()
        .filter(|r| r.answer.is_some() || !matches!(r.call, Call::Get { .. }))
        .collect();
    let mut search = Search {
        ops: &ops,
        done: vec![0u64; ops.len().div_ceil(64)],
        left: ops.iter().filter(|r| r.answer.is_some()).count(),
        seen: HashSet::new(),
        steps: 0,
    };
    if search.dfs(&None) {
        return Ok(());
    }
    if search.steps >= MAX_STEPS {
        return Ok(()); // Too wide to decide; not a violation we can show.
    }
    let lines: Vec<String> = ops
        .iter()
        .map(|r| {
            format!(
                "  c{} {:?} [{}..{}] -> {}",
                r.client.0,
                r.call,
                r.call_ms,
                r.ret_ms.map_or("?".into(), |t| t.to_string()),
                r.answer
                    .as_ref()
                    .map_or("no answer".into(), |a| format!("{} {}", a.status, text(&a.body)))
            )
        })
        .collect();
    Err(format!("no linearization of:\n{}", lines.join("\n")))
}

const MAX_STEPS: u64 = 2_000_000;

struct Search<'a> {
    ops: &'a [&'a Record],
    done: Vec<u64>,
    /// Answered ops not yet placed.
    left: usize,
    seen: HashSet<(Vec<u64>, Option<String>)>,
    steps: u64,
}

impl Search<'_> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    fn dfs(&mut self, value: &Option<String>) -> bool {
        if self.left == 0 {
            return true;
        }
        self.steps += 1;
        if self.steps >= MAX_STEPS || !self.seen.insert((self.done.clone(), value.clone())) {
            return false;
        }
        // An op may go next only if no unplaced op returned before it was called.
        let min_ret = (0..self.ops.len())
            .filter(|&i| !self.is_done(i))
            .filter_map(|i| self.ops[i].ret_ms)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            let r = self.ops[i];
            if self.is_done(i) || r.call_ms > min_ret {
                continue;
            }
            let Some(next) = apply(&r.call, value, r.answer.as_ref()) else {
                continue;
            };
            self.flip(i);
            let answered = r.answer.is_some();
            if answered {
                self.left -= 1;
            }
            let ok = self.dfs(&next);
            if answered {
                self.left += 1;
            }
            self.flip(i);
            if ok {
                return true;
            }
        }
        false
    }
}

/// The map after `call` on `value`, if `answer` (when there is one) is what
/// the map would have said.
fn apply(call: &Call, value: &Option<String>, answer: Option<&AppResponse>) -> Option<Option<String>> {
    let status = answer.map(|a| a.status);
    match call {
        Call::Put { value: v, .. } => (status.is_none() || status == Some(200)).then(|| Some(v.clone())),
        Call::Delete { .. } => {
            let expect = if value.is_some() { 204 } else { 404 };
            (status.is_none() || status == Some(expect)).then_some(None)
        }
        Call::Get { .. } => {
            let a = answer?;
            let ok = match value {
                Some(v) => a.status == 200 && a.body == v.as_bytes(),
                None => a.status == 404,
            };
            ok.then(|| value.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(call: Call, call_ms: u64, ret: Option<(u64, u16, &str)>) -> Record {
        Record {
            client: ClientId(0),
            app: AppId(0),
            call,
            call_ms,
            ret_ms: ret.map(|r| r.0),
            answer: ret.map(|(_, s, b)| AppResponse::new(s, b.as_bytes().to_vec())),
        }
    }

    fn put(v: &str) -> Call {
        Call::Put {
            key: "k".into(),
            value: v.into(),
        }
    }

    fn get() -> Call {
        Call::Get { key: "k".into() }
    }

    #[test]
    fn a_read_after_a_write_returned_must_see_it() {
        let h = vec![
            rec(put("1"), 0, Some((5, 200, ""))),
            rec(get(), 10, Some((12, 404, ""))),
        ];
        assert_eq!(check(&h).len(), 1, "{:?}", check(&h));
        let h = vec![
            rec(put("1"), 0, Some((5, 200, ""))),
            rec(get(), 10, Some((12, 200, "1"))),
        ];
        assert!(check(&h).is_empty());
    }

    #[test]
    fn concurrent_ops_may_take_either_order() {
        let h = vec![rec(put("1"), 0, Some((10, 200, ""))), rec(get(), 2, Some((8, 404, "")))];
        assert!(check(&h).is_empty());
    }

    #[test]
    fn an_unanswered_write_may_or_may_not_have_happened() {
        let applied = vec![
            rec(put("1"), 0, None),
            rec(get(), 100, Some((102, 200, "1"))),
            rec(get(), 200, Some((202, 200, "1"))),
        ];
        assert!(check(&applied).is_empty());
        let not = vec![rec(put("1"), 0, None), rec(get(), 100, Some((102, 404, "")))];
        assert!(check(&not).is_empty());
        // ...but once seen it cannot be unseen.
        let flicker = vec![
            rec(put("1"), 0, None),
            rec(get(), 100, Some((102, 200, "1"))),
            rec(get(), 200, Some((202, 404, ""))),
        ];
        assert_eq!(check(&flicker).len(), 1);
    }

    #[test]
    fn an_audit_that_lost_money_is_a_violation() {
        let audit = |total: u64| Record {
            client: ClientId(0),
            app: AppId(1),
            call: Call::Audit,
            call_ms: 0,
            ret_ms: Some(1),
            answer: Some(AppResponse::new(
                200,
                format!("{{\"accounts\":2,\"total\":{total}}}").into_bytes(),
            )),
        };
        assert!(check(&[audit(200)]).is_empty());
        assert_eq!(check(&[audit(199)]).len(), 1);
    }
}
