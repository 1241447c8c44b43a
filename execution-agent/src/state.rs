//! The app's objects, their Merkle tree, the stale set of a catching-up
//! replica, and copy-on-write snapshots of recent checkpoints.
//!
//! A snapshot is not a copy of the state: it keeps the inner tree levels
//! (a few thousand digests) and, from then on, the *first* old version of
//! every object and bucket that is overwritten. Reading checkpoint `c` looks
//! in the logs of `c` and every newer snapshot in order, then falls through
//! to the current state (untouched since the newest snapshot).

use crate::merkle::{bucket_hash, entries_of, key_hash, leaf_hash, Bucket, DigestMap, Entry, Key, Shape, Tree};
use std::collections::{HashMap, VecDeque};
use zz_wire::{Digest, Seq, TreePath};

/// An object the catching-up replica does not hold yet: fetch it first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object {} is stale", String::from_utf8_lossy(.0))]
pub struct Stale(pub Key);

type Object = (Key, Vec<u8>);

/// An object this replica must fetch before touching it.
#[derive(Debug, Clone)]
struct StaleObject {
    leaf: Digest,
    /// Known when the replica held an older version: then it can be fetched
    /// by key alone; otherwise only its whole bucket can be asked for.
    key: Option<Key>,
}

#[derive(Debug)]
struct Snapshot {
    seq: Seq,
    root: Digest,
    inner: Vec<Vec<Digest>>,
    old_buckets: HashMap<u64, Bucket>,
    old_objects: DigestMap<Option<Object>>,
}

/// What a snapshot knows about one object.
#[derive(Debug, PartialEq, Eq)]
pub enum AtCheckpoint<'a> {
    Present(&'a [u8], &'a [u8]),
    Absent,
    /// Stale here too (this replica is itself still catching up).
    Unknown,
}

/// Most snapshots kept: the stable one, the one before it, and the ones
/// signed since (which become stable within a few intervals).
pub const MAX_SNAPSHOTS: usize = 8;

#[derive(Debug)]
pub struct State {
    tree: Tree,
    objects: DigestMap<Object>,
    /// Key hash → what the certified tree expects for it.
    stale: DigestMap<StaleObject>,
    snapshots: VecDeque<Snapshot>,
}

impl State {
    pub fn new(shape: Shape) -> Self {
        State {
            tree: Tree::new(shape),
            objects: DigestMap::default(),
            stale: DigestMap::default(),
            snapshots: VecDeque::new(),
        }
    }

    pub fn shape(&self) -> Shape {
        self.tree.shape()
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    pub fn tree_mut(&mut self) -> &mut Tree {
        &mut self.tree
    }

    pub fn root(&mut self) -> Digest {
        self.tree.root()
    }

    pub fn object_count(&self) -> usize {
        self.tree.object_count()
    }

    /// Stale objects, plus opaque buckets (whose objects are not even
    /// known by hash yet): zero once the replica holds the whole state.
    pub fn stale_count(&self) -> usize {
        self.stale.len() + self.tree.opaque_count()
    }

    pub fn is_stale(&self, key: &[u8]) -> bool {
        self.is_stale_hash(&key_hash(key))
    }

    fn is_stale_hash(&self, kh: &Digest) -> bool {
        (!self.stale.is_empty() && self.stale.contains_key(kh)) || self.tree.is_opaque(self.tree.shape().bucket_of(kh))
    }

    /// Whether bucket `b` is opaque or holds a stale object.
    pub fn bucket_is_stale(&self, b: u64) -> bool {
        self.tree.is_opaque(b)
            || (!self.stale.is_empty()
                && self
                    .tree
                    .bucket(b)
                    .is_some_and(|bk| bk.entries.iter().any(|e| self.stale.contains_key(&e.key_hash))))
    }

    /// The opaque bucket holding `key`, if it is in one.
    pub fn opaque_bucket_of(&self, key: &[u8]) -> Option<u64> {
        let b = self.tree.shape().bucket_of(&key_hash(key));
        self.tree.is_opaque(b).then_some(b)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>, Stale> {
        let kh = key_hash(key);
        if self.is_stale_hash(&kh) {
            return Err(Stale(key.to_vec()));
        }
        Ok(self.objects.get(&kh).map(|(_, v)| v.as_slice()))
    }

    /// Writes (`Some`) or deletes (`None`) an object.
    pub fn write(&mut self, key: Key, value: Option<Vec<u8>>) -> Result<(), Stale> {
        let kh = key_hash(&key);
        if self.is_stale_hash(&kh) {
            return Err(Stale(key));
        }
        self.keep_old(kh);
        match value {
            Some(v) => {
                self.tree.set(kh, Some(leaf_hash(&key, &v)));
                self.objects.insert(kh, (key, v));
            }
            None => {
                self.tree.set(kh, None);
                self.objects.remove(&kh);
            }
        }
        Ok(())
    }

    /// Copy-on-write: the newest snapshot keeps the first old version.
    fn keep_old(&mut self, kh: Digest) {
        let Some(s) = self.snapshots.back_mut() else {
            return;
        };
        let b = self.tree.shape().bucket_of(&kh);
        let objects = &self.objects;
        s.old_objects.entry(kh).or_insert_with(|| objects.get(&kh).cloned());
        if let (std::collections::hash_map::Entry::Vacant(v), Some(bk)) = (s.old_buckets.entry(b), self.tree.bucket(b))
        {
            v.insert(bk.clone());
        }
    }

    /// Any key of the state (for the corrupt-state fault).
    pub fn any_key(&self) -> Option<Key> {
        self.objects.values().map(|(k, _)| k.clone()).min()
    }

    // ------------------------------------------------------------ snapshots

    /// Takes a snapshot of the current state as checkpoint `seq`.
    pub fn snapshot(&mut self, seq: Seq) -> Digest {
        let root = self.tree.root();
        self.snapshots.push_back(Snapshot {
            seq,
            root,
            inner: self.tree.inner_levels(),
            old_buckets: HashMap::new(),
            old_objects: DigestMap::default(),
        });
        while self.snapshots.len() > MAX_SNAPSHOTS {
            self.snapshots.pop_front();
        }
        root
    }

    /// Checkpoint `seq` is stable: keep it and the one before it, drop older.
    pub fn stabilize(&mut self, seq: Seq) {
        let Some(pos) = self.snapshots.iter().position(|s| s.seq == seq) else {
            return;
        };
        let keep_from = pos.saturating_sub(1);
        self.snapshots.drain(..keep_from);
    }

    pub fn snapshot_seqs(&self) -> Vec<Seq> {
        self.snapshots.iter().map(|s| s.seq).collect()
    }

    pub fn snapshot_root(&self, seq: Seq) -> Option<Digest> {
        self.snap_index(seq).map(|i| self.snapshots[i].root)
    }

    fn snap_index(&self, seq: Seq) -> Option<usize> {
        self.snapshots.iter().position(|s| s.seq == seq)
    }

    pub fn has_snapshot(&self, seq: Seq) -> bool {
        self.snap_index(seq).is_some()
    }

    /// The old copy of bucket `b` that snapshot `i` or a newer one kept
    /// when it was first written after them; `None` if it was not written.
    fn kept_bucket(&self, i: usize, b: u64) -> Option<&Bucket> {
        self.snapshots.range(i..).find_map(|s| s.old_buckets.get(&b))
    }

    /// A bucket as of snapshot `i`; `None` for one still opaque here (an
    /// opaque bucket was never written, so no snapshot keeps an old copy).
    fn bucket_at_idx(&self, i: usize, b: u64) -> Option<&Bucket> {
        self.kept_bucket(i, b)
            .or_else(|| self.tree.bucket(b).filter(|_| !self.tree.is_opaque(b)))
    }

    /// A bucket's hash as of snapshot `i`, known even while it is opaque.
    fn bucket_hash_at_idx(&self, i: usize, b: u64) -> Option<Digest> {
        self.kept_bucket(i, b).or_else(|| self.tree.bucket(b)).map(|bk| bk.hash)
    }

    /// The hash bucket `b` has at checkpoint `seq`.
    pub fn bucket_hash_at(&self, seq: Seq, b: u64) -> Option<Digest> {
        self.bucket_hash_at_idx(self.snap_index(seq)?, b)
    }

    /// A bucket as of checkpoint `seq`.
    pub fn bucket_at(&self, seq: Seq, b: u64) -> Option<&Bucket> {
        self.bucket_at_idx(self.snap_index(seq)?, b)
    }

    fn object_at_idx(&self, i: usize, kh: &Digest) -> AtCheckpoint<'_> {
        for s in self.snapshots.range(i..) {
            if let Some(o) = s.old_objects.get(kh) {
                return match o {
                    Some((k, v)) => AtCheckpoint::Present(k, v),
                    None => AtCheckpoint::Absent,
                };
            }
        }
        if self.is_stale_hash(kh) {
            return AtCheckpoint::Unknown;
        }
        match self.objects.get(kh) {
            Some((k, v)) => AtCheckpoint::Present(k, v),
            None => AtCheckpoint::Absent,
        }
    }

    /// An object as of checkpoint `seq`; `None` if that snapshot is gone.
    pub fn object_at(&self, seq: Seq, key: &[u8]) -> Option<AtCheckpoint<'_>> {
        let i = self.snap_index(seq)?;
        Some(self.object_at_idx(i, &key_hash(key)))
    }

    /// All objects of a bucket as of checkpoint `seq`; `None` if the snapshot
    /// is gone or some object is unknown here.
    pub fn bucket_objects_at(&self, seq: Seq, b: u64) -> Option<Vec<Object>> {
        let i = self.snap_index(seq)?;
        let bk = self.bucket_at_idx(i, b)?;
        bk.entries
            .iter()
            .map(|e| match self.object_at_idx(i, &e.key_hash) {
                AtCheckpoint::Present(k, v) => Some((k.to_vec(), v.to_vec())),
                _ => None,
            })
            .collect()
    }

    /// Children hashes (or flattened bucket entries) of `p` at checkpoint `seq`.
    pub fn children_at(&self, seq: Seq, p: TreePath) -> Option<Vec<Digest>> {
        let i = self.snap_index(seq)?;
        let shape = self.tree.shape();
        if !shape.is_valid(p) {
            return None;
        }
        let depth = shape.depth();
        if p.level == depth {
            return Some(crate::merkle::flatten(&self.bucket_at_idx(i, p.index)?.entries));
        }
        let kids = shape.children_of(p);
        if p.level + 1 == depth {
            kids.map(|c| self.bucket_hash_at_idx(i, c.index)).collect()
        } else {
            let level = &self.snapshots[i].inner[usize::from(p.level) + 1];
            kids.map(|c| level.get(crate::merkle::ix(c.index)).copied()).collect()
        }
    }

    // ------------------------------------------------------------ catch-up

    /// Adopts checkpoint `seq`'s tree for the buckets that differ (entries
    /// already verified against the certified root): objects whose leaf
    /// differs become stale, objects the checkpoint lacks are dropped. No
    /// value is copied. Old snapshots describe a past this replica left, so
    /// they go; a snapshot of `seq` replaces them.
    ///
    /// `opaque` buckets are adopted by hash alone (this replica holds nothing
    /// in them, so there is nothing to keep): their objects are fetched when
    /// touched, which keeps a fresh replica's walk from copying the whole
    /// leaf level of a large state before its first answer.
    pub fn adopt(&mut self, seq: Seq, buckets: Vec<(u64, Vec<Entry>)>, opaque: Vec<(u64, Digest)>) -> Digest {
        self.snapshots.clear();
        for (b, hash) in opaque {
            let local: Vec<Digest> = self
                .tree
                .bucket(b)
                .map(|bk| bk.entries.iter().map(|e| e.key_hash).collect())
                .unwrap_or_default();
            for kh in local {
                self.objects.remove(&kh);
                self.stale.remove(&kh);
            }
            self.tree.set_opaque(b, hash);
        }
        for (b, remote) in buckets {
            let local: Vec<Entry> = match self.tree.bucket(b) {
                Some(bk) => bk.entries.clone(),
                None => continue,
            };
            for e in &local {
                if remote.binary_search_by(|r| r.key_hash.cmp(&e.key_hash)).is_err() {
                    self.objects.remove(&e.key_hash);
                    self.stale.remove(&e.key_hash);
                }
            }
            for r in &remote {
                let fresh = local
                    .binary_search_by(|e| e.key_hash.cmp(&r.key_hash))
                    .is_ok_and(|i| local[i].leaf == r.leaf)
                    && !self.stale.contains_key(&r.key_hash);
                if !fresh {
                    let key = match self.objects.remove(&r.key_hash) {
                        Some((k, _)) => Some(k),
                        None => self.stale.remove(&r.key_hash).and_then(|s| s.key),
                    };
                    self.stale.insert(r.key_hash, StaleObject { leaf: r.leaf, key });
                }
            }
            self.tree.set_bucket(b, remote);
        }
        self.snapshot(seq)
    }

    /// Installs a fetched object if it is the one the certified tree expects.
    pub fn install(&mut self, key: &[u8], value: &[u8]) -> bool {
        let kh = key_hash(key);
        match self.stale.get(&kh) {
            Some(s) if s.leaf == leaf_hash(key, value) => {
                self.stale.remove(&kh);
                self.objects.insert(kh, (key.to_vec(), value.to_vec()));
                true
            }
            _ => false,
        }
    }

    /// Installs the whole of opaque bucket `b` if its objects hash to the
    /// bucket hash the certified tree holds; false (nothing installed)
    /// otherwise.
    pub fn install_bucket(&mut self, b: u64, objs: &[(Key, Vec<u8>)]) -> bool {
        if !self.tree.is_opaque(b) {
            return false;
        }
        let shape = self.tree.shape();
        let entries = entries_of(objs);
        let well_formed = entries.windows(2).all(|w| w[0].key_hash < w[1].key_hash)
            && entries.iter().all(|e| shape.bucket_of(&e.key_hash) == b);
        if !well_formed || self.tree.bucket(b).map(|bk| bk.hash) != Some(bucket_hash(&entries)) {
            return false;
        }
        for (k, v) in objs {
            self.objects.insert(key_hash(k), (k.clone(), v.clone()));
        }
        self.tree.fill_opaque(b, entries);
        true
    }

    /// The leaf the certified tree expects for a stale key.
    pub fn expected_leaf(&self, key: &[u8]) -> Option<Digest> {
        self.stale.get(&key_hash(key)).map(|s| s.leaf)
    }

    /// Keys of stale objects this replica knows by name, at most `limit`.
    pub fn stale_known_keys(&self, limit: usize) -> Vec<Key> {
        let mut ks: Vec<Key> = self.stale.values().filter_map(|s| s.key.clone()).collect();
        ks.sort_unstable();
        ks.truncate(limit);
        ks
    }

    /// Buckets holding stale objects known only by hash, and opaque ones,
    /// at most `limit`, lowest first.
    pub fn stale_buckets(&self, limit: usize) -> Vec<u64> {
        let shape = self.tree.shape();
        let mut bs: Vec<u64> = self
            .stale
            .iter()
            .filter(|(_, s)| s.key.is_none())
            .map(|(kh, _)| shape.bucket_of(kh))
            .chain(self.tree.opaque_buckets(limit))
            .collect();
        bs.sort_unstable();
        bs.dedup();
        bs.truncate(limit);
        bs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st() -> State {
        State::new(Shape::new(4, 3).unwrap())
    }

    #[test]
    fn snapshot_keeps_old_versions_while_executing_on() {
        let mut s = st();
        s.write(b"a".to_vec(), Some(b"1".to_vec())).unwrap();
        let r1 = s.snapshot(10);
        s.write(b"a".to_vec(), Some(b"2".to_vec())).unwrap();
        s.write(b"b".to_vec(), Some(b"x".to_vec())).unwrap();
        let r2 = s.snapshot(20);
        s.write(b"a".to_vec(), None).unwrap();
        assert_ne!(r1, r2);
        assert_eq!(s.object_at(10, b"a"), Some(AtCheckpoint::Present(b"a", b"1")));
        assert_eq!(s.object_at(10, b"b"), Some(AtCheckpoint::Absent));
        assert_eq!(s.object_at(20, b"a"), Some(AtCheckpoint::Present(b"a", b"2")));
        assert_eq!(s.get(b"a"), Ok(None));
        // The snapshot's tree still hashes to its root.
        let root_children = s.children_at(10, TreePath { level: 0, index: 0 }).unwrap();
        assert_eq!(crate::merkle::inner_hash(&root_children), r1);
        s.stabilize(20);
        assert_eq!(s.snapshot_seqs(), vec![10, 20]);
        s.snapshot(30);
        s.stabilize(30);
        assert_eq!(s.snapshot_seqs(), vec![20, 30]);
    }

    #[test]
    fn an_opaque_bucket_is_stale_unservable_and_installed_only_whole_and_verified() {
        // The source: two objects; find the bucket of "a".
        let mut src = st();
        src.write(b"a".to_vec(), Some(b"1".to_vec())).unwrap();
        let root = src.root();
        let shape = src.shape();
        let b = shape.bucket_of(&key_hash(b"a"));
        let bucket = src.tree().bucket(b).unwrap().clone();
        // A fresh state adopts that bucket by hash alone.
        let mut s = st();
        let r = s.adopt(10, Vec::new(), vec![(b, bucket.hash)]);
        assert_eq!(r, root, "the opaque hash stands in for the bucket");
        assert!(s.is_stale(b"a"));
        assert_eq!(s.get(b"a"), Err(Stale(b"a".to_vec())));
        assert_eq!(s.write(b"a".to_vec(), Some(b"2".to_vec())), Err(Stale(b"a".to_vec())));
        assert_eq!(s.stale_count(), 1);
        assert_eq!(s.stale_buckets(8), vec![b]);
        // Nothing of it can be served, except its hash.
        assert_eq!(s.bucket_objects_at(10, b), None);
        assert_eq!(s.children_at(10, shape.bucket_path(b)), None);
        assert_eq!(s.object_at(10, b"a"), Some(AtCheckpoint::Unknown));
        assert_eq!(s.bucket_hash_at(10, b), Some(bucket.hash));
        // A wrong value or a missing object does not install.
        assert!(!s.install_bucket(b, &[(b"a".to_vec(), b"9".to_vec())]));
        assert!(!s.install_bucket(b, &[]));
        assert!(s.is_stale(b"a"));
        assert!(!s.tree().is_dirty());
        assert!(s.install_bucket(b, &[(b"a".to_vec(), b"1".to_vec())]));
        assert!(
            !s.tree().is_dirty(),
            "a verified bucket changes no hash: nothing is left to rehash"
        );
        assert_eq!(s.get(b"a"), Ok(Some(&b"1"[..])));
        assert_eq!(s.stale_count(), 0);
        assert_eq!(s.root(), root);
        assert_eq!(s.bucket_objects_at(10, b), Some(vec![(b"a".to_vec(), b"1".to_vec())]));
    }
}
