//! The bucketed Merkle tree over the app's objects.
//!
//! A key hashes (its *key hash*) to one of `fanout^depth` buckets. A bucket's
//! hash covers its entries `(key hash, leaf hash)` sorted by key hash, where
//! the leaf hash covers the key and the value. Inner nodes hash their
//! `fanout` children. `TreePath { level: 0 }` is the root; level `depth` is
//! the bucket level. Sorting by key hash rather than by key lets a peer
//! describe a bucket's contents in fixed-size digests, so a diff walk can
//! name differing objects without copying any value.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use zz_wire::{Digest, Hasher, TreePath};

/// An object key.
pub type Key = Vec<u8>;

/// A node or bucket index as a vector index. Shapes have at most 2^32
/// buckets, and indices from peers are checked with `Shape::is_valid` first.
pub fn ix(i: u64) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

/// One object in a bucket: which key (by hash) and which value (by leaf hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub key_hash: Digest,
    pub leaf: Digest,
}

pub fn key_hash(key: &[u8]) -> Digest {
    Hasher::new("zz/merkle/key/v1").bytes(key).finish()
}

pub fn leaf_hash(key: &[u8], value: &[u8]) -> Digest {
    Hasher::new("zz/merkle/leaf/v1").bytes(key).bytes(value).finish()
}

/// Covers the entries in order: their count, then each key hash and leaf.
/// Fed to sha2 as one buffer (hashing is most of the cost of a write).
pub fn bucket_hash(entries: &[Entry]) -> Digest {
    let mut buf = Vec::with_capacity(64 * entries.len());
    for e in entries {
        buf.extend_from_slice(&e.key_hash.0);
        buf.extend_from_slice(&e.leaf.0);
    }
    Hasher::new("zz/merkle/bucket/v1")
        .u64(entries.len() as u64)
        .bytes(&buf)
        .finish()
}

/// Covers the children's hashes in order.
pub fn inner_hash(children: &[Digest]) -> Digest {
    let mut buf = Vec::with_capacity(32 * children.len());
    for c in children {
        buf.extend_from_slice(&c.0);
    }
    Hasher::new("zz/merkle/inner/v1")
        .u64(children.len() as u64)
        .bytes(&buf)
        .finish()
}

/// A map keyed by digests: they are uniformly random already, so their
/// first eight bytes are the hash (SipHash showed up in profiles).
pub type DigestMap<V> = HashMap<Digest, V, BuildHasherDefault<DigestHasher>>;

#[derive(Default)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

/// The entries of a bucket's objects, sorted by key hash.
pub fn entries_of(objs: &[(Key, Vec<u8>)]) -> Vec<Entry> {
    let mut es: Vec<Entry> = objs
        .iter()
        .map(|(k, v)| Entry {
            key_hash: key_hash(k),
            leaf: leaf_hash(k, v),
        })
        .collect();
    es.sort();
    es
}

/// Flattens bucket entries into the digest list a `Nodes` answer carries
/// for a bucket path: `[key_hash0, leaf0, key_hash1, leaf1, ...]`.
pub fn flatten(entries: &[Entry]) -> Vec<Digest> {
    entries.iter().flat_map(|e| [e.key_hash, e.leaf]).collect()
}

/// The inverse of `flatten`; `None` for an odd list or unsorted/duplicate keys.
pub fn unflatten(ds: &[Digest]) -> Option<Vec<Entry>> {
    if !ds.len().is_multiple_of(2) {
        return None;
    }
    let entries: Vec<Entry> = ds
        .chunks_exact(2)
        .map(|c| Entry {
            key_hash: c[0],
            leaf: c[1],
        })
        .collect();
    if entries.windows(2).any(|w| w[0].key_hash >= w[1].key_hash) {
        return None;
    }
    Some(entries)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    #[error("fan-out must be a power of two between 2 and 256, got {0}")]
    Fanout(u32),
    #[error("fan-out^depth must be between 1 and 2^32 buckets")]
    Size,
}

/// Fan-out and depth of the tree: `fanout^depth` buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    fanout_bits: u32,
    depth: u8,
}

impl Default for Shape {
    /// 2^16 buckets, fan-out 16: four inner levels above the buckets.
    fn default() -> Self {
        Shape {
            fanout_bits: 4,
            depth: 4,
        }
    }
}

impl Shape {
    pub fn new(fanout: u32, depth: u8) -> Result<Self, ShapeError> {
        if !(2..=256).contains(&fanout) || !fanout.is_power_of_two() {
            return Err(ShapeError::Fanout(fanout));
        }
        let fanout_bits = fanout.trailing_zeros();
        if depth == 0 || fanout_bits * u32::from(depth) > 32 {
            return Err(ShapeError::Size);
        }
        Ok(Shape { fanout_bits, depth })
    }

    pub fn fanout(&self) -> usize {
        1 << self.fanout_bits
    }

    /// The level of the buckets.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    pub fn buckets(&self) -> u64 {
        self.level_len(self.depth)
    }

    pub fn level_len(&self, level: u8) -> u64 {
        1u64 << (self.fanout_bits * u32::from(level))
    }

    fn bucket_bits(&self) -> u32 {
        self.fanout_bits * u32::from(self.depth)
    }

    /// The top bits of the key hash pick the bucket.
    pub fn bucket_of(&self, key_hash: &Digest) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&key_hash.0[..8]);
        u64::from_be_bytes(b) >> (64 - self.bucket_bits())
    }

    pub fn is_valid(&self, p: TreePath) -> bool {
        p.level <= self.depth && p.index < self.level_len(p.level)
    }

    pub fn bucket_path(&self, b: u64) -> TreePath {
        TreePath {
            level: self.depth,
            index: b,
        }
    }

    pub fn children_of(&self, p: TreePath) -> impl Iterator<Item = TreePath> {
        let f = self.fanout() as u64;
        (0..f).map(move |j| TreePath {
            level: p.level + 1,
            index: p.index * f + j,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Sorted by key hash, no duplicates.
    pub entries: Vec<Entry>,
    pub hash: Digest,
}

impl Bucket {
    pub fn find(&self, kh: &Digest) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.key_hash.cmp(kh))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// The tree itself. Writes mark their bucket dirty; `root` rehashes the dirty
/// buckets and only the paths above them, once per batch of writes.
#[derive(Clone, Debug)]
pub struct Tree {
    shape: Shape,
    /// `inner[l][i]` is the hash of node `(l, i)` for levels `0..depth`.
    inner: Vec<Vec<Digest>>,
    buckets: Vec<Bucket>,
    /// Buckets written since the last flush (with repeats; sorted at flush).
    dirty: Vec<u64>,
    /// Buckets known only by their certified hash (a catching-up replica
    /// that held nothing there): no entries, and the hash is kept as given.
    opaque: BTreeSet<u64>,
}

impl Tree {
    pub fn new(shape: Shape) -> Self {
        let empty = Bucket {
            entries: Vec::new(),
            hash: bucket_hash(&[]),
        };
        let mut inner = Vec::with_capacity(usize::from(shape.depth));
        let mut below = empty.hash;
        for level in (0..shape.depth).rev() {
            let h = inner_hash(&vec![below; shape.fanout()]);
            inner.push(vec![h; ix(shape.level_len(level))]);
            below = h;
        }
        inner.reverse();
        Tree {
            shape,
            inner,
            buckets: vec![empty; ix(shape.buckets())],
            dirty: Vec::new(),
            opaque: BTreeSet::new(),
        }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Sets (`Some(leaf)`) or removes (`None`) the entry of a key hash.
    /// Returns the bucket index touched.
    pub fn set(&mut self, kh: Digest, leaf: Option<Digest>) -> u64 {
        let b = self.shape.bucket_of(&kh);
        let entries = &mut self.buckets[ix(b)].entries;
        match (entries.binary_search_by(|e| e.key_hash.cmp(&kh)), leaf) {
            (Ok(i), Some(l)) => entries[i].leaf = l,
            (Ok(i), None) => {
                entries.remove(i);
            }
            (Err(i), Some(l)) => entries.insert(i, Entry { key_hash: kh, leaf: l }),
            (Err(_), None) => return b,
        }
        self.dirty.push(b);
        b
    }

    /// Replaces a whole bucket's entries (catch-up installs a verified bucket).
    pub fn set_bucket(&mut self, b: u64, entries: Vec<Entry>) {
        if let Some(bk) = self.buckets.get_mut(ix(b)) {
            bk.entries = entries;
            self.opaque.remove(&b);
            self.dirty.push(b);
        }
    }

    /// Fills an opaque bucket with the entries its kept hash was checked
    /// against (the caller verified `bucket_hash(&entries)` equals it):
    /// nothing above it changes, so nothing is left to rehash. Marking it
    /// dirty instead would make the first root after a background sync
    /// rehash every bucket (~95 ms at 1 GB, on a woken standby's path).
    pub fn fill_opaque(&mut self, b: u64, entries: Vec<Entry>) {
        if let Some(bk) = self.buckets.get_mut(ix(b)) {
            if self.opaque.remove(&b) {
                bk.entries = entries;
            }
        }
    }

    /// Takes a bucket's hash on trust from a verified parent, without its
    /// entries: they are fetched when a request touches the bucket, or in
    /// the background. Until then its keys are stale.
    pub fn set_opaque(&mut self, b: u64, hash: Digest) {
        if let Some(bk) = self.buckets.get_mut(ix(b)) {
            bk.entries.clear();
            bk.hash = hash;
            self.opaque.insert(b);
            self.dirty.push(b);
        }
    }

    pub fn is_opaque(&self, b: u64) -> bool {
        !self.opaque.is_empty() && self.opaque.contains(&b)
    }

    /// Opaque buckets, lowest first, at most `limit`.
    pub fn opaque_buckets(&self, limit: usize) -> Vec<u64> {
        self.opaque.iter().take(limit).copied().collect()
    }

    pub fn opaque_count(&self) -> usize {
        self.opaque.len()
    }

    pub fn bucket(&self, b: u64) -> Option<&Bucket> {
        self.buckets.get(ix(b))
    }

    pub fn entry(&self, kh: &Digest) -> Option<&Entry> {
        self.buckets[ix(self.shape.bucket_of(kh))].find(kh)
    }

    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Rehashes dirty buckets and the paths above them.
    pub fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let f = self.shape.fanout() as u64;
        let mut level_dirty = std::mem::take(&mut self.dirty);
        level_dirty.sort_unstable();
        level_dirty.dedup();
        for &b in &level_dirty {
            if self.opaque.contains(&b) {
                continue;
            }
            let bk = &mut self.buckets[ix(b)];
            bk.hash = bucket_hash(&bk.entries);
        }
        for level in (0..self.shape.depth).rev() {
            // Sorted input keeps parents sorted, so dedup removes repeats.
            level_dirty = level_dirty.iter().map(|i| i / f).collect();
            level_dirty.dedup();
            for &i in &level_dirty {
                let h = inner_hash(&self.children_hashes_inner(level, i));
                self.inner[usize::from(level)][ix(i)] = h;
            }
        }
    }

    fn children_hashes_inner(&self, level: u8, i: u64) -> Vec<Digest> {
        let f = self.shape.fanout() as u64;
        let range = ix(i * f)..ix((i + 1) * f);
        if level + 1 == self.shape.depth {
            self.buckets[range].iter().map(|b| b.hash).collect()
        } else {
            self.inner[usize::from(level) + 1][range].to_vec()
        }
    }

    pub fn root(&mut self) -> Digest {
        self.flush();
        self.inner[0][0]
    }

    /// The root as of the last flush (callers flush first).
    pub fn flushed_root(&self) -> Digest {
        self.inner[0][0]
    }

    /// Hash of the node at `p` (as of the last flush).
    pub fn node(&self, p: TreePath) -> Option<Digest> {
        if !self.shape.is_valid(p) {
            return None;
        }
        Some(if p.level == self.shape.depth {
            self.buckets[ix(p.index)].hash
        } else {
            self.inner[usize::from(p.level)][ix(p.index)]
        })
    }

    /// Children hashes of an inner node, or the flattened entries of a bucket
    /// (`None` for an opaque one: its entries are not here).
    pub fn children(&self, p: TreePath) -> Option<Vec<Digest>> {
        if !self.shape.is_valid(p) || (p.level == self.shape.depth && self.is_opaque(p.index)) {
            return None;
        }
        Some(if p.level == self.shape.depth {
            flatten(&self.buckets[ix(p.index)].entries)
        } else {
            self.children_hashes_inner(p.level, p.index)
        })
    }

    /// A copy of the inner levels (kept by snapshots; small next to the state).
    pub fn inner_levels(&self) -> Vec<Vec<Digest>> {
        self.inner.clone()
    }

    pub fn object_count(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.len()).sum()
    }

    /// The proof that `key` has `leaf` (or is absent) under the current root.
    pub fn prove(&mut self, key: &[u8]) -> Proof {
        self.flush();
        let kh = key_hash(key);
        let b = self.shape.bucket_of(&kh);
        let mut path = Vec::with_capacity(usize::from(self.shape.depth));
        let mut idx = b;
        let f = self.shape.fanout() as u64;
        for level in (0..self.shape.depth).rev() {
            idx /= f;
            path.push(self.children_hashes_inner(level, idx));
        }
        Proof {
            bucket: self.buckets[ix(b)].entries.clone(),
            path,
        }
    }

    /// Key hashes whose entries differ between `self` and `other` (same shape),
    /// descending only into subtrees whose hashes differ.
    pub fn diff(&mut self, other: &mut Tree) -> Vec<Digest> {
        self.flush();
        other.flush();
        let mut out = Vec::new();
        let mut frontier = vec![TreePath { level: 0, index: 0 }];
        while let Some(p) = frontier.pop() {
            if self.node(p) == other.node(p) {
                continue;
            }
            if p.level == self.shape.depth {
                let a = &self.buckets[ix(p.index)].entries;
                let b = &other.buckets[ix(p.index)].entries;
                out.extend(diff_entries(a, b));
            } else {
                frontier.extend(self.shape.children_of(p));
            }
        }
        out.sort();
        out
    }
}

/// Key hashes present in only one list, or with different leaves.
pub fn diff_entries(a: &[Entry], b: &[Entry]) -> Vec<Digest> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.key_hash == y.key_hash => {
                if x.leaf != y.leaf {
                    out.push(x.key_hash);
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.key_hash < y.key_hash => {
                out.push(x.key_hash);
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                out.push(y.key_hash);
                j += 1;
            }
            (Some(x), None) => {
                out.push(x.key_hash);
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Inclusion (or absence) proof: the key's bucket, then each ancestor's
/// children from the bucket's parent up to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub bucket: Vec<Entry>,
    pub path: Vec<Vec<Digest>>,
}

impl Proof {
    /// Checks that `key` holds `value` (or is absent, for `None`) under `root`.
    pub fn verify(&self, shape: Shape, root: &Digest, key: &[u8], value: Option<&[u8]>) -> bool {
        if self.path.len() != usize::from(shape.depth) {
            return false;
        }
        if self.bucket.windows(2).any(|w| w[0].key_hash >= w[1].key_hash) {
            return false;
        }
        let kh = key_hash(key);
        let found = self
            .bucket
            .binary_search_by(|e| e.key_hash.cmp(&kh))
            .ok()
            .map(|i| self.bucket[i].leaf);
        if found != value.map(|v| leaf_hash(key, v)) {
            return false;
        }
        let f = shape.fanout() as u64;
        let mut idx = shape.bucket_of(&kh);
        let mut cur = bucket_hash(&self.bucket);
        for children in &self.path {
            if children.len() as u64 != f || children[ix(idx % f)] != cur {
                return false;
            }
            cur = inner_hash(children);
            idx /= f;
        }
        cur == *root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_shape_has_65536_buckets_four_levels() {
        let s = Shape::default();
        assert_eq!(s.buckets(), 65536);
        assert_eq!(s.depth(), 4);
        assert_eq!(s.fanout(), 16);
        assert!(Shape::new(3, 2).is_err());
        assert!(Shape::new(16, 9).is_err());
    }

    #[test]
    fn write_then_delete_restores_the_root() {
        let mut t = Tree::new(Shape::new(4, 3).unwrap());
        let empty = t.root();
        t.set(key_hash(b"a"), Some(leaf_hash(b"a", b"1")));
        assert_ne!(t.root(), empty);
        t.set(key_hash(b"a"), None);
        assert_eq!(t.root(), empty);
    }

    #[test]
    fn unflatten_rejects_unsorted_lists() {
        let e1 = Entry {
            key_hash: Digest([1; 32]),
            leaf: Digest([0; 32]),
        };
        let e2 = Entry {
            key_hash: Digest([2; 32]),
            leaf: Digest([0; 32]),
        };
        assert_eq!(unflatten(&flatten(&[e1, e2])), Some(vec![e1, e2]));
        assert_eq!(unflatten(&flatten(&[e2, e1])), None);
        assert_eq!(unflatten(&[Digest::ZERO]), None);
    }
}
