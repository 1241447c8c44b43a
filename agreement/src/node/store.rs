//! The node's stable storage (redb): per app, the core's `Durable` snapshot
//! and the write-ahead `Record`s written since it. Every `commit` is one
//! redb transaction, synced before it returns; a broken disk is fatal for
//! the node, so errors propagate to the driver. `MemStore` keeps the same
//! in memory, for simulated nodes.

use crate::core::{Durable, Record, RecordKey, RecordKind};
use redb::{Database, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;
use zz_wire::{AppId, ReplicaKey, Signed};

const DURABLE: TableDefinition<u16, &[u8]> = TableDefinition::new("durable");
/// (app, seq, kind) → record; kind 0 is a prepared certificate (a later
/// view's replaces it), 1 a delivery.
const RECORDS: TableDefinition<(u16, u64, u8), &[u8]> = TableDefinition::new("records");
/// (app, replica index, generation) → that generation's key announcement,
/// so a restarted node never takes a fenced generation's key again.
const REPLICA_KEYS: TableDefinition<(u16, u16, u64), &[u8]> = TableDefinition::new("replica_keys");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(String),
    #[error("stored record for app {0} does not decode: {1}")]
    Corrupt(u16, postcard::Error),
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// One write of a batch handed to `NodeStore::commit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Record(AppId, Record),
    /// Replaces the app's snapshot and drops the records it covers.
    Snapshot(AppId, Durable),
}

pub struct NodeStore {
    db: Database,
}

impl NodeStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let database = Database::create(path).map_err(db)?;
        let tx = database.begin_write().map_err(db)?;
        tx.open_table(DURABLE).map_err(db)?;
        tx.open_table(RECORDS).map_err(db)?;
        tx.open_table(REPLICA_KEYS).map_err(db)?;
        tx.commit().map_err(db)?;
        // The file's directory entry must outlive a power cut as well.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(db)?;
        }
        Ok(NodeStore { db: database })
    }

    /// The app's snapshot and records, or `None` if nothing was ever stored.
    pub fn load(&self, app: AppId) -> Result<Option<(Durable, Vec<Record>)>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(DURABLE).map_err(db)?;
        let snapshot: Option<Durable> = match t.get(app.0).map_err(db)? {
            None => None,
            Some(v) => Some(postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt(app.0, e))?),
        };
        let t = tx.open_table(RECORDS).map_err(db)?;
        let mut records = Vec::new();
        for entry in t.range((app.0, 0, 0)..=(app.0, u64::MAX, u8::MAX)).map_err(db)? {
            let (_, v) = entry.map_err(db)?;
            records.push(postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt(app.0, e))?);
        }
        if snapshot.is_none() && records.is_empty() {
            return Ok(None);
        }
        Ok(Some((snapshot.unwrap_or_default(), records)))
    }

    /// What `load` gives for each of `apps` that has anything stored: what
    /// `NodeMachine::new` restores from.
    pub fn restored(
        &self,
        apps: impl IntoIterator<Item = AppId>,
    ) -> Result<BTreeMap<AppId, (Durable, Vec<Record>)>, StoreError> {
        let mut out = BTreeMap::new();
        for app in apps {
            if let Some(stored) = self.load(app)? {
                out.insert(app, stored);
            }
        }
        Ok(out)
    }

    /// Keeps `cert` (synced before returning), and of its replica's
    /// announcements only the newest `keep`.
    pub fn put_replica_key(&self, cert: &Signed<ReplicaKey>, keep: usize) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(cert).map_err(db)?;
        let r = cert.body.replica;
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(REPLICA_KEYS).map_err(db)?;
            t.insert((r.app.0, r.index, cert.body.generation), bytes.as_slice())
                .map_err(db)?;
            let mut gens = Vec::new();
            for entry in t
                .range((r.app.0, r.index, 0)..=(r.app.0, r.index, u64::MAX))
                .map_err(db)?
            {
                gens.push(entry.map_err(db)?.0.value().2);
            }
            for g in gens.iter().rev().skip(keep) {
                t.remove((r.app.0, r.index, *g)).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// Every replica key announcement kept (their signatures unchecked).
    pub fn replica_keys(&self) -> Result<Vec<Signed<ReplicaKey>>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(REPLICA_KEYS).map_err(db)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            out.push(postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt(k.value().0, e))?);
        }
        Ok(out)
    }

    /// Writes the batch in order in one transaction and syncs before
    /// returning: the caller sends what depends on it only afterwards.
    pub fn commit(&self, batch: &[Write]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut durable = tx.open_table(DURABLE).map_err(db)?;
            let mut records = tx.open_table(RECORDS).map_err(db)?;
            for w in batch {
                match w {
                    Write::Record(app, r) => {
                        let bytes = postcard::to_stdvec(r).map_err(db)?;
                        let (seq, kind) = r.key();
                        records.insert((app.0, seq, kind as u8), bytes.as_slice()).map_err(db)?;
                    }
                    Write::Snapshot(app, d) => {
                        let bytes = postcard::to_stdvec(d).map_err(db)?;
                        durable.insert(app.0, bytes.as_slice()).map_err(db)?;
                        // The key says whether a record is covered: no
                        // record (some hold megabytes) is read back for it.
                        let top = d.stable_checkpoint.max(d.last_committed);
                        let mut stale = Vec::new();
                        for entry in records.range((app.0, 0, 0)..=(app.0, top, u8::MAX)).map_err(db)? {
                            let (k, _) = entry.map_err(db)?;
                            let (a, seq, kind) = k.value();
                            // An unknown kind is no record of ours: leave it.
                            if RecordKind::from_u8(kind).is_some_and(|kind| kind.covered_by(seq, d)) {
                                stale.push((a, seq, kind));
                            }
                        }
                        for k in stale {
                            records.remove(k).map_err(db)?;
                        }
                    }
                }
            }
        }
        tx.commit().map_err(db)
    }
}

/// `NodeStore` in memory, for simulated nodes: what one `commit` wrote is
/// all there (a simulated crash loses only what was never committed), and
/// `load` gives what `NodeStore::load` would after the same commits.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    apps: BTreeMap<AppId, Stored>,
}

#[derive(Clone, Debug, Default)]
struct Stored {
    snapshot: Option<Durable>,
    /// Keyed as `NodeStore` keys them: a later certificate for a seq
    /// replaces the earlier one, and `load` gives them in key order.
    records: BTreeMap<RecordKey, Record>,
}

impl MemStore {
    pub fn commit(&mut self, batch: &[Write]) {
        for w in batch {
            match w {
                Write::Record(app, r) => {
                    self.apps.entry(*app).or_default().records.insert(r.key(), r.clone());
                }
                Write::Snapshot(app, d) => {
                    let stored = self.apps.entry(*app).or_default();
                    stored.snapshot = Some(d.clone());
                    stored.records.retain(|&(seq, kind), _| !kind.covered_by(seq, d));
                }
            }
        }
    }

    /// The app's snapshot and records, or `None` if nothing was ever stored.
    pub fn load(&self, app: AppId) -> Option<(Durable, Vec<Record>)> {
        let stored = self.apps.get(&app)?;
        if stored.snapshot.is_none() && stored.records.is_empty() {
            return None;
        }
        let snapshot = stored.snapshot.clone().unwrap_or_default();
        Some((snapshot, stored.records.values().cloned().collect()))
    }

    /// `load` for every app with anything stored: what `NodeMachine::new`
    /// restores from.
    pub fn restored(&self) -> BTreeMap<AppId, (Durable, Vec<Record>)> {
        self.apps
            .keys()
            .filter_map(|&app| Some((app, self.load(app)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Certificate;
    use proptest::prelude::*;
    use zz_wire::{Digest, Identity, NodeId, NonDet, PrePrepare, Principal, Proposal};

    fn committed(seq: u64) -> Record {
        Record::Committed {
            seq,
            digest: Digest([u8::try_from(seq).unwrap(); 32]),
            batches: Vec::new(),
        }
    }

    #[test]
    fn snapshot_and_records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        {
            let s = NodeStore::open(&path).unwrap();
            assert_eq!(s.load(AppId(1)).unwrap(), None);
            let d = Durable {
                view: 3,
                last_committed: 77,
                ..Durable::default()
            };
            s.commit(&[Write::Snapshot(AppId(1), d), Write::Record(AppId(1), committed(78))])
                .unwrap();
        }
        let s = NodeStore::open(&path).unwrap();
        let (d, records) = s.load(AppId(1)).unwrap().unwrap();
        assert_eq!(d.last_committed, 77);
        assert_eq!(records, vec![committed(78)]);
        assert_eq!(s.load(AppId(2)).unwrap(), None, "apps are apart");
    }

    #[test]
    fn a_snapshot_drops_the_records_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let s = NodeStore::open(&dir.path().join("node.redb")).unwrap();
        let app = AppId(0);
        s.commit(&[
            Write::Record(app, committed(1)),
            Write::Record(app, committed(2)),
            Write::Record(app, committed(3)),
        ])
        .unwrap();
        let d = Durable {
            last_committed: 2,
            ..Durable::default()
        };
        s.commit(&[Write::Snapshot(app, d)]).unwrap();
        let (_, records) = s.load(app).unwrap().unwrap();
        assert_eq!(records, vec![committed(3)]);
    }

    /// A prepared certificate for `seq` in `view` (its body tells views apart).
    fn prepared(seq: u64, view: u64) -> Record {
        let id = Identity::from_seed(Principal::Node(NodeId(0)), [1; 32]);
        let proposal = Proposal {
            requests: Vec::new(),
            nondet: NonDet {
                timestamp_ms: view,
                seed: seq,
            },
        };
        let digest = proposal.digest();
        Record::Prepared(Certificate {
            pre_prepare: id.sign(PrePrepare {
                node: NodeId(0),
                app: AppId(0),
                view,
                seq,
                proposal,
                digest,
            }),
            prepares: Vec::new(),
        })
    }

    fn write() -> impl Strategy<Value = Write> {
        let app = (0u16..2).prop_map(AppId);
        prop_oneof![
            (app.clone(), 0u64..12).prop_map(|(a, seq)| Write::Record(a, committed(seq))),
            (app.clone(), 0u64..12, 0u64..3).prop_map(|(a, seq, view)| Write::Record(a, prepared(seq, view))),
            (app, 0u64..12, 0u64..12).prop_map(|(a, last_committed, stable_checkpoint)| {
                Write::Snapshot(
                    a,
                    Durable {
                        view: last_committed % 3,
                        last_committed,
                        stable_checkpoint,
                        ..Durable::default()
                    },
                )
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A simulated node restarts from exactly what a real one would.
        #[test]
        fn the_memory_store_loads_what_the_disk_store_loads(
            batches in prop::collection::vec(prop::collection::vec(write(), 0..6), 1..6)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let disk = NodeStore::open(&dir.path().join("node.redb")).unwrap();
            let mut mem = MemStore::default();
            for batch in &batches {
                disk.commit(batch).unwrap();
                mem.commit(batch);
            }
            for app in (0..3).map(AppId) {
                prop_assert_eq!(disk.load(app).unwrap(), mem.load(app));
            }
            prop_assert_eq!(disk.restored((0..3).map(AppId)).unwrap(), mem.restored());
        }
    }

    #[test]
    fn the_memory_store_prunes_as_the_disk_store_does() {
        let app = AppId(0);
        let d = Durable {
            last_committed: 2,
            stable_checkpoint: 1,
            ..Durable::default()
        };
        let batches = [
            vec![
                Write::Record(app, committed(1)),
                Write::Record(app, prepared(2, 0)),
                Write::Record(app, committed(2)),
            ],
            vec![Write::Record(app, prepared(2, 1)), Write::Record(app, committed(3))],
            vec![Write::Snapshot(app, d.clone())],
        ];
        let mut mem = MemStore::default();
        for b in &batches {
            mem.commit(b);
        }
        let expected = (d, vec![prepared(2, 1), committed(3)]);
        assert_eq!(
            mem.load(app),
            Some(expected.clone()),
            "a later view's certificate replaces"
        );
        let dir = tempfile::tempdir().unwrap();
        let disk = NodeStore::open(&dir.path().join("node.redb")).unwrap();
        for b in &batches {
            disk.commit(b).unwrap();
        }
        assert_eq!(disk.load(app).unwrap(), Some(expected));
        assert_eq!(mem.load(AppId(1)), None);
    }
}
