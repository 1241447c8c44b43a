//! The node's stable storage (redb): per app, the core's `Durable` snapshot
//! and the write-ahead `Record`s written since it. Every `commit` is one
//! redb transaction, synced before it returns; a broken disk is fatal for
//! the node, so errors propagate to the driver.

use crate::core::{Durable, Record, RecordKind};
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use zz_wire::AppId;

const DURABLE: TableDefinition<u16, &[u8]> = TableDefinition::new("durable");
/// (app, seq, kind) → record; kind 0 is a prepared certificate (a later
/// view's replaces it), 1 a delivery.
const RECORDS: TableDefinition<(u16, u64, u8), &[u8]> = TableDefinition::new("records");

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
#[derive(Clone, Debug)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use zz_wire::Digest;

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
}
