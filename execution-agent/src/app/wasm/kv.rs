//! `wasi:keyvalue` (store and atomics) over the replica's Merkle state.
//!
//! The component runs as one future and the request's `Txn` is served by
//! another, in the same task: a host call sends its operation over a channel
//! and the server answers it against the `Txn`. A read or write of a stale
//! key traps the component; the server remembers the key so the replica can
//! fetch it and run the request again.
//!
//! Object key = the app's namespace, the bucket name's length (one byte),
//! the bucket name, the key. The one bucket is `default`. `increment` keeps
//! its counter as 8 bytes, the u64 little-endian (a missing key counts as
//! 0); wasmtime's own in-memory store keeps decimal text instead.

use super::host::Host;
use crate::app::Txn;
use crate::merkle::Key;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{HasSelf, Linker, Resource};
use zz_wire::app::MAX_BODY;

mod bindings {
    // The standard interfaces, as vendored in `wit/` (store, atomics, batch).
    wasmtime::component::bindgen!({
        path: "wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// The one bucket an app has.
const BUCKET: &str = "default";
/// Longest key.
const MAX_KEY: usize = 256;

/// An open bucket: the prefix of its object keys (the app's namespace,
/// the bucket name's length in one byte, the bucket name).
pub struct Bucket {
    prefix: Vec<u8>,
}

impl Bucket {
    fn new(namespace: &[u8], name: &str) -> Self {
        let mut prefix = namespace.to_vec();
        prefix.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        prefix.extend_from_slice(name.as_bytes());
        Bucket { prefix }
    }

    fn key(&self, key: &str) -> Result<Key, store::Error> {
        if key.len() > MAX_KEY {
            return Err(store::Error::Other(format!("key longer than {MAX_KEY} bytes")));
        }
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key.as_bytes());
        Ok(k)
    }
}

/// The object key under which a component with `namespace` keeps `key`
/// of its bucket (for tests and tools that fill a replica's state).
pub fn object_key(namespace: &[u8], key: &str) -> Key {
    let mut k = Bucket::new(namespace, BUCKET).prefix;
    k.extend_from_slice(key.as_bytes());
    k
}

/// What a host call asks of the store.
#[derive(Debug)]
enum Op {
    Get(Key),
    Set(Key, Vec<u8>),
    Delete(Key),
    Exists(Key),
    Increment(Key, u64),
}

#[derive(Debug)]
enum Value {
    Bytes(Option<Vec<u8>>),
    Bool(bool),
    Count(u64),
    Done,
}

#[derive(Debug)]
enum Failure {
    Stale(Key),
    Other(String),
}

pub(super) struct KvCall {
    op: Op,
    reply: oneshot::Sender<Result<Value, Failure>>,
}

pub(super) type Calls = mpsc::UnboundedSender<KvCall>;

/// The trap a component gets for touching a stale key.
#[derive(Debug)]
struct StaleTrap;

impl std::fmt::Display for StaleTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the object is not fetched yet")
    }
}

impl std::error::Error for StaleTrap {}

pub(super) fn is_stale(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<StaleTrap>().is_some()
}

/// Answers a request's host calls against its `Txn`.
pub(super) struct KvServer<'t, 'a> {
    rx: mpsc::UnboundedReceiver<KvCall>,
    txn: &'t mut Txn<'a>,
    /// A dry run: a stale object reads as missing, a write to one is
    /// dropped, and the run goes on.
    probe: bool,
    stale: Vec<Key>,
}

impl<'t, 'a> KvServer<'t, 'a> {
    pub(super) fn new(txn: &'t mut Txn<'a>, probe: bool) -> (Calls, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            tx,
            KvServer {
                rx,
                txn,
                probe,
                stale: Vec::new(),
            },
        )
    }

    /// Serves until the component's store is gone; the stale keys touched
    /// (at most one unless probing: the component traps on it).
    pub(super) async fn serve(mut self) -> Vec<Key> {
        while let Some(call) = self.rx.recv().await {
            let answer = self.answer(call.op);
            if let Err(Failure::Stale(k)) = &answer {
                self.stale.push(k.clone());
            }
            let _ = call.reply.send(answer);
        }
        self.stale
    }

    /// The answer of a dry run for an op on a stale key.
    fn probed(&mut self, op: &Op) -> Option<Value> {
        let key = match op {
            Op::Get(k) | Op::Set(k, _) | Op::Delete(k) | Op::Exists(k) | Op::Increment(k, _) => k,
        };
        if !self.probe || !self.txn.is_stale(key) {
            return None;
        }
        self.stale.push(key.clone());
        Some(match op {
            Op::Get(_) => Value::Bytes(None),
            Op::Exists(_) => Value::Bool(false),
            Op::Increment(_, d) => Value::Count(*d),
            Op::Set(..) | Op::Delete(_) => Value::Done,
        })
    }

    fn answer(&mut self, op: Op) -> Result<Value, Failure> {
        if let Some(v) = self.probed(&op) {
            return Ok(v);
        }
        let stale = |s: crate::state::Stale| Failure::Stale(s.0);
        match op {
            Op::Get(k) => self.txn.get(&k).map(Value::Bytes).map_err(stale),
            Op::Set(k, v) => self.txn.put(&k, v).map(|()| Value::Done).map_err(stale),
            Op::Delete(k) => self.txn.delete(&k).map(|()| Value::Done).map_err(stale),
            Op::Exists(k) => self.txn.exists(&k).map(Value::Bool).map_err(stale),
            Op::Increment(k, delta) => {
                let now = match self.txn.get(&k).map_err(stale)? {
                    None => 0,
                    Some(v) => <[u8; 8]>::try_from(v.as_slice())
                        .map(u64::from_le_bytes)
                        .map_err(|_| Failure::Other("the value is not an 8-byte counter".into()))?,
                };
                let next = now
                    .checked_add(delta)
                    .ok_or_else(|| Failure::Other("counter overflow".into()))?;
                self.txn.put(&k, next.to_le_bytes().to_vec()).map_err(stale)?;
                Ok(Value::Count(next))
            }
        }
    }
}

impl Host {
    /// Sends `op` to the server and waits for its answer: a trap when the
    /// key is stale, a `wasi:keyvalue` error for anything else that failed.
    async fn call(&mut self, op: Op) -> wasmtime::Result<Result<Value, store::Error>> {
        let (reply, answer) = oneshot::channel();
        if self.kv.send(KvCall { op, reply }).is_err() {
            return Ok(Err(store::Error::Other("the store is closed".into())));
        }
        match answer.await {
            Ok(Ok(v)) => Ok(Ok(v)),
            Ok(Err(Failure::Stale(_))) => Err(wasmtime::Error::new(StaleTrap)),
            Ok(Err(Failure::Other(m))) => Ok(Err(store::Error::Other(m))),
            Err(_) => Ok(Err(store::Error::Other("the store is closed".into()))),
        }
    }

    fn bucket_key(&mut self, bucket: &Resource<Bucket>, key: &str) -> wasmtime::Result<Result<Key, store::Error>> {
        Ok(self.table().get(bucket)?.key(key))
    }
}

/// A `Value` of the wrong shape would be a bug in this file, not input.
fn shape() -> wasmtime::Error {
    wasmtime::Error::msg("keyvalue: answer of the wrong shape")
}

impl store::Host for Host {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        if identifier != BUCKET {
            return Ok(Err(store::Error::NoSuchStore));
        }
        let bucket = Bucket::new(&self.namespace, &identifier);
        Ok(Ok(self.table().push(bucket)?))
    }
}

impl store::HostBucket for Host {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let k = match self.bucket_key(&bucket, &key)? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match self.call(Op::Get(k)).await? {
            Ok(Value::Bytes(v)) => Ok(v),
            Ok(_) => return Err(shape()),
            Err(e) => Err(e),
        })
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        if value.len() > MAX_BODY {
            return Ok(Err(store::Error::Other("value larger than 1 MiB".into())));
        }
        let k = match self.bucket_key(&bucket, &key)? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.call(Op::Set(k, value)).await?.map(|_| ()))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<(), store::Error>> {
        let k = match self.bucket_key(&bucket, &key)? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.call(Op::Delete(k)).await?.map(|_| ()))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<bool, store::Error>> {
        let k = match self.bucket_key(&bucket, &key)? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match self.call(Op::Exists(k)).await? {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(_) => return Err(shape()),
            Err(e) => Err(e),
        })
    }

    async fn list_keys(
        &mut self,
        _bucket: Resource<Bucket>,
        _cursor: Option<u64>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        Ok(Err(store::Error::Other(
            "list-keys is not supported: keep an index of your keys".into(),
        )))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for Host {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, store::Error>> {
        let k = match self.bucket_key(&bucket, &key)? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match self.call(Op::Increment(k, delta)).await? {
            Ok(Value::Count(n)) => Ok(n),
            Ok(_) => return Err(shape()),
            Err(e) => Err(e),
        })
    }
}

impl batch::Host for Host {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let k = match self.bucket_key(&bucket, &key)? {
                Ok(k) => k,
                Err(e) => return Ok(Err(e)),
            };
            match self.call(Op::Get(k)).await? {
                Ok(Value::Bytes(v)) => out.push(v.map(|v| (key, v))),
                Ok(_) => return Err(shape()),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        for (key, value) in key_values {
            let again = Resource::new_borrow(bucket.rep());
            if let Err(e) = store::HostBucket::set(self, again, key, value).await? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        for key in keys {
            let again = Resource::new_borrow(bucket.rep());
            if let Err(e) = store::HostBucket::delete(self, again, key).await? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}

pub(super) fn link(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    store::add_to_linker::<Host, HasSelf<Host>>(linker, |h| h)?;
    atomics::add_to_linker::<Host, HasSelf<Host>>(linker, |h| h)?;
    batch::add_to_linker::<Host, HasSelf<Host>>(linker, |h| h)
}
