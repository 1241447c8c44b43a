//! The persisted inventory (redb under the data dir): replicas, the event
//! log (bounded), incidents, injected faults and Control nonces. Values are
//! JSON so the file stays readable across versions of these structs.
//!
//! The store is synchronous; the controller runs each batch on a blocking
//! thread.

use crate::model::{Event, FaultRecord, Incident, ReplicaRecord, TenantApp};
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const REPLICAS: TableDefinition<&str, &[u8]> = TableDefinition::new("replicas");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const INCIDENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("incidents");
const FAULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("faults");
const NONCES: TableDefinition<&str, u64> = TableDefinition::new("nonces");
/// Tenants' Wasm apps by the name of the deployment slot they occupy.
const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");

/// Events kept in the store and in memory; older ones are dropped.
pub const MAX_EVENTS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Boxed: redb's error is large and this travels through every result.
    #[error("store: {0}")]
    Db(Box<redb::Error>),
    #[error("store record does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("store task failed: {0}")]
    Join(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(Box::new(e.into())) }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// One write; a batch of them commits atomically.
#[derive(Clone, Debug)]
pub enum Change {
    Replica(ReplicaRecord),
    Event(Event),
    Incident(Incident),
    Fault(FaultRecord),
    RemoveFault(u64),
    Nonce(String, u64),
    App(TenantApp),
    /// The app in this slot is gone.
    RemoveApp(String),
}

/// Everything the store holds, as loaded at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub replicas: BTreeMap<String, ReplicaRecord>,
    pub events: Vec<Event>,
    pub incidents: Vec<Incident>,
    pub faults: Vec<FaultRecord>,
    pub nonces: BTreeMap<String, u64>,
    pub apps: Vec<TenantApp>,
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    /// Held in memory (no disk I/O to move off the runtime).
    memory: bool,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::init(Database::create(path)?, false)
    }

    /// A store that lives only as long as the process (the simulator's).
    pub fn in_memory() -> Result<Store, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        Store::init(db, true)
    }

    fn init(db: Database, memory: bool) -> Result<Store, StoreError> {
        // Create every table so readers never meet a missing one.
        let tx = db.begin_write()?;
        tx.open_table(REPLICAS)?;
        tx.open_table(EVENTS)?;
        tx.open_table(INCIDENTS)?;
        tx.open_table(FAULTS)?;
        tx.open_table(NONCES)?;
        tx.open_table(APPS)?;
        tx.commit()?;
        Ok(Store {
            db: Arc::new(db),
            memory,
        })
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read()?;
        let mut snap = Snapshot::default();
        for item in tx.open_table(REPLICAS)?.iter()? {
            let (k, v) = item?;
            snap.replicas.insert(k.value().to_string(), decode(v.value())?);
        }
        for item in tx.open_table(EVENTS)?.iter()? {
            snap.events.push(decode(item?.1.value())?);
        }
        for item in tx.open_table(INCIDENTS)?.iter()? {
            snap.incidents.push(decode(item?.1.value())?);
        }
        for item in tx.open_table(FAULTS)?.iter()? {
            snap.faults.push(decode(item?.1.value())?);
        }
        for item in tx.open_table(NONCES)?.iter()? {
            let (k, v) = item?;
            snap.nonces.insert(k.value().to_string(), v.value());
        }
        for item in tx.open_table(APPS)?.iter()? {
            snap.apps.push(decode(item?.1.value())?);
        }
        Ok(snap)
    }

    /// Commits a batch; events below the retention window are pruned.
    pub fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut replicas = tx.open_table(REPLICAS)?;
            let mut events = tx.open_table(EVENTS)?;
            let mut incidents = tx.open_table(INCIDENTS)?;
            let mut faults = tx.open_table(FAULTS)?;
            let mut nonces = tx.open_table(NONCES)?;
            let mut apps = tx.open_table(APPS)?;
            let mut newest_event = None;
            for c in changes {
                match c {
                    Change::Replica(r) => {
                        replicas.insert(r.name.as_str(), encode(r)?.as_slice())?;
                    }
                    Change::Event(e) => {
                        events.insert(e.seq, encode(e)?.as_slice())?;
                        newest_event = Some(e.seq);
                    }
                    Change::Incident(i) => {
                        incidents.insert(i.id, encode(i)?.as_slice())?;
                    }
                    Change::Fault(f) => {
                        faults.insert(f.id, encode(f)?.as_slice())?;
                    }
                    Change::RemoveFault(id) => {
                        faults.remove(*id)?;
                    }
                    Change::Nonce(k, n) => {
                        nonces.insert(k.as_str(), *n)?;
                    }
                    Change::App(a) => {
                        apps.insert(a.slot.as_str(), encode(a)?.as_slice())?;
                    }
                    Change::RemoveApp(slot) => {
                        apps.remove(slot.as_str())?;
                    }
                }
            }
            if let Some(newest) = newest_event {
                let floor = newest.saturating_sub(MAX_EVENTS - 1);
                events.retain_in(..floor, |_, _| false)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// `apply` on a blocking thread (in place for a store in memory).
    pub async fn apply_async(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        if self.memory {
            return self.apply(&changes);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.apply(&changes))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(v)?)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    Ok(serde_json::from_slice(b)?)
}
