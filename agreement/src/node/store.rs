//! The node's stable storage (redb): each app core's `Durable` record.
//! A broken disk is fatal for the node, so errors propagate to the driver.

use crate::core::Durable;
use redb::{Database, TableDefinition};
use std::path::Path;
use zz_wire::AppId;

const DURABLE: TableDefinition<u16, &[u8]> = TableDefinition::new("durable");

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

pub struct NodeStore {
    db: Database,
}

impl NodeStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let database = Database::create(path).map_err(db)?;
        let tx = database.begin_write().map_err(db)?;
        tx.open_table(DURABLE).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(NodeStore { db: database })
    }

    pub fn load(&self, app: AppId) -> Result<Option<Durable>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(DURABLE).map_err(db)?;
        match t.get(app.0).map_err(db)? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(v.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(app.0, e)),
        }
    }

    /// Writes and syncs before returning: the caller sends dependent messages after.
    pub fn save(&self, app: AppId, d: &Durable) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(d).map_err(db)?;
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(DURABLE).map_err(db)?;
            t.insert(app.0, bytes.as_slice()).map_err(db)?;
        }
        tx.commit().map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_survives_reopen() {
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
            s.save(AppId(1), &d).unwrap();
        }
        let s = NodeStore::open(&path).unwrap();
        assert_eq!(s.load(AppId(1)).unwrap().unwrap().last_committed, 77);
    }
}
