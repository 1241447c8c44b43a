//! `kv`: PUT/GET/DELETE `/kv/{key}`; values up to 1 MiB.

use super::{error, strip, App, Ctx, NotRun, Txn};
use crate::merkle::Key;
use zz_wire::app::MAX_BODY;
use zz_wire::{AppRequest, AppResponse};

pub struct Kv {
    prefix: String,
}

impl Kv {
    pub fn new(prefix: &str) -> Self {
        Kv {
            prefix: prefix.to_string(),
        }
    }

    /// The object key of a request: the path after `/{prefix}/`, non-empty.
    fn key<'p>(&self, path: &'p str) -> Option<&'p str> {
        strip(path, &self.prefix)?.strip_prefix('/').filter(|k| !k.is_empty())
    }
}

impl App for Kv {
    fn kind(&self) -> &'static str {
        "kv"
    }

    fn keys(&self, req: &AppRequest) -> Vec<Key> {
        self.key(&req.path)
            .map(|k| vec![k.as_bytes().to_vec()])
            .unwrap_or_default()
    }

    fn execute(&self, _ctx: &Ctx, txn: &mut Txn<'_>, req: &AppRequest) -> Result<AppResponse, NotRun> {
        let Some(key) = self.key(&req.path) else {
            return Ok(error(404, "no such route"));
        };
        let key = key.as_bytes();
        Ok(match req.method.as_str() {
            "PUT" if req.body.len() > MAX_BODY => error(413, "value larger than 1 MiB"),
            "PUT" => {
                txn.put(key, req.body.clone())?;
                AppResponse::new(200, Vec::new())
            }
            "GET" => match txn.get(key)? {
                Some(v) => AppResponse::new(200, v),
                None => error(404, "no such key"),
            },
            "DELETE" => {
                if txn.exists(key)? {
                    txn.delete(key)?;
                    AppResponse::new(204, Vec::new())
                } else {
                    error(404, "no such key")
                }
            }
            _ => error(405, "method not allowed"),
        })
    }
}
