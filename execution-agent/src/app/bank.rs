//! `bank`: accounts with balances and transfers between them.
//!
//! Layout: `acct/{id}` holds a balance (u64, little-endian); `meta/totals`
//! holds the account count and the sum of balances (two u64s), updated by
//! every create, so the audit reads one object instead of scanning.

use super::{error, strip, App, Ctx, NotRun, Txn};
use crate::merkle::Key;
use crate::state::Stale;
use serde::Deserialize;
use serde_json::json;
use zz_wire::{AppRequest, AppResponse};

const TOTALS: &[u8] = b"meta/totals";
const MAX_ID: usize = 128;

pub struct Bank {
    prefix: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    id: String,
    balance: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    from: String,
    to: String,
    amount: u64,
}

enum Route<'p> {
    Create,
    Transfer,
    Account(&'p str),
    Audit,
}

fn account_key(id: &str) -> Key {
    format!("acct/{id}").into_bytes()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && !id.contains('/')
}

fn decode_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

fn read_balance(txn: &mut Txn<'_>, id: &str) -> Result<Option<u64>, Stale> {
    Ok(txn.get(&account_key(id))?.map(|b| decode_u64(&b)))
}

fn read_totals(txn: &mut Txn<'_>) -> Result<(u64, u64), Stale> {
    Ok(match txn.get(TOTALS)? {
        Some(b) if b.len() == 16 => (decode_u64(&b[..8]), decode_u64(&b[8..])),
        _ => (0, 0),
    })
}

fn write_totals(txn: &mut Txn<'_>, accounts: u64, total: u64) -> Result<(), Stale> {
    let mut b = accounts.to_le_bytes().to_vec();
    b.extend_from_slice(&total.to_le_bytes());
    txn.put(TOTALS, b)
}

impl Bank {
    pub fn new(prefix: &str) -> Self {
        Bank {
            prefix: prefix.to_string(),
        }
    }

    fn route<'p>(&self, req: &'p AppRequest) -> Option<Route<'p>> {
        let rest = strip(&req.path, &self.prefix)?;
        match (req.method.as_str(), rest) {
            ("POST", "/accounts") => Some(Route::Create),
            ("POST", "/transfer") => Some(Route::Transfer),
            ("GET", "/audit") => Some(Route::Audit),
            ("GET", r) => r
                .strip_prefix("/accounts/")
                .filter(|id| valid_id(id))
                .map(Route::Account),
            _ => None,
        }
    }

    fn create(&self, txn: &mut Txn<'_>, body: &[u8]) -> Result<AppResponse, NotRun> {
        let Ok(a) = serde_json::from_slice::<NewAccount>(body) else {
            return Ok(error(400, "expected {\"id\": string, \"balance\": integer}"));
        };
        if !valid_id(&a.id) {
            return Ok(error(400, "account id must be 1-128 characters without '/'"));
        }
        if read_balance(txn, &a.id)?.is_some() {
            return Ok(error(409, "account exists"));
        }
        let (accounts, total) = read_totals(txn)?;
        let Some(total) = total.checked_add(a.balance) else {
            return Ok(error(400, "total balance would overflow"));
        };
        txn.put(&account_key(&a.id), a.balance.to_le_bytes().to_vec())?;
        write_totals(txn, accounts.saturating_add(1), total)?;
        Ok(AppResponse::json(201, &json!({ "id": a.id, "balance": a.balance })))
    }

    fn transfer(&self, txn: &mut Txn<'_>, body: &[u8]) -> Result<AppResponse, NotRun> {
        let Ok(t) = serde_json::from_slice::<Transfer>(body) else {
            return Ok(error(
                400,
                "expected {\"from\": string, \"to\": string, \"amount\": integer}",
            ));
        };
        if !valid_id(&t.from) || !valid_id(&t.to) {
            return Ok(error(404, "unknown account"));
        }
        let (Some(from), Some(to)) = (read_balance(txn, &t.from)?, read_balance(txn, &t.to)?) else {
            return Ok(error(404, "unknown account"));
        };
        if from < t.amount {
            return Ok(error(409, "insufficient funds"));
        }
        if t.from != t.to {
            // `to + amount` cannot overflow: both are part of a total that fits in u64.
            let to_after = to.saturating_add(t.amount);
            txn.put(&account_key(&t.from), (from - t.amount).to_le_bytes().to_vec())?;
            txn.put(&account_key(&t.to), to_after.to_le_bytes().to_vec())?;
        }
        Ok(AppResponse::json(
            200,
            &json!({ "from": t.from, "to": t.to, "amount": t.amount }),
        ))
    }
}

impl App for Bank {
    fn kind(&self) -> &'static str {
        "bank"
    }

    fn keys(&self, req: &AppRequest) -> Vec<Key> {
        match self.route(req) {
            Some(Route::Create) => {
                let mut ks = vec![TOTALS.to_vec()];
                if let Ok(a) = serde_json::from_slice::<NewAccount>(&req.body) {
                    ks.push(account_key(&a.id));
                }
                ks
            }
            Some(Route::Transfer) => match serde_json::from_slice::<Transfer>(&req.body) {
                Ok(t) => vec![account_key(&t.from), account_key(&t.to)],
                Err(_) => Vec::new(),
            },
            Some(Route::Account(id)) => vec![account_key(id)],
            Some(Route::Audit) => vec![TOTALS.to_vec()],
            None => Vec::new(),
        }
    }

    fn execute(&self, _ctx: &Ctx, txn: &mut Txn<'_>, req: &AppRequest) -> Result<AppResponse, NotRun> {
        match self.route(req) {
            Some(Route::Create) => self.create(txn, &req.body),
            Some(Route::Transfer) => self.transfer(txn, &req.body),
            Some(Route::Account(id)) => Ok(match read_balance(txn, id)? {
                Some(b) => AppResponse::json(200, &json!({ "id": id, "balance": b })),
                None => error(404, "unknown account"),
            }),
            Some(Route::Audit) => {
                let (accounts, total) = read_totals(txn)?;
                Ok(AppResponse::json(200, &json!({ "accounts": accounts, "total": total })))
            }
            None => Ok(error(404, "no such route")),
        }
    }
}
