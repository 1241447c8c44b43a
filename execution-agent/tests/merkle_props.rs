//! Properties of the bucketed Merkle tree.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly
#![allow(clippy::cast_possible_truncation)] // test-sized numbers

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use std::collections::BTreeMap;
use zz_agent::merkle::{key_hash, leaf_hash, Shape, Tree};
use zz_wire::Digest;

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::new(2, 3).unwrap()),
        Just(Shape::new(4, 2).unwrap()),
        Just(Shape::new(16, 2).unwrap()),
    ]
}

type Objects = BTreeMap<Vec<u8>, Vec<u8>>;

fn objects() -> impl Strategy<Value = Objects> {
    btree_map(vec(any::<u8>(), 1..6), vec(any::<u8>(), 0..8), 0..60)
}

fn build(shape: Shape, objs: &Objects) -> Tree {
    let mut t = Tree::new(shape);
    for (k, v) in objs {
        t.set(key_hash(k), Some(leaf_hash(k, v)));
    }
    t
}

/// A write (Some) or a delete (None) of one of a few keys.
fn edits() -> impl Strategy<Value = Vec<(Vec<u8>, Option<Vec<u8>>)>> {
    vec(
        (vec(any::<u8>(), 1..4), proptest::option::of(vec(any::<u8>(), 0..8))),
        0..40,
    )
}

fn apply(objs: &mut Objects, edits: &[(Vec<u8>, Option<Vec<u8>>)]) {
    for (k, v) in edits {
        match v {
            Some(v) => objs.insert(k.clone(), v.clone()),
            None => objs.remove(k),
        };
    }
}

proptest! {
    #[test]
    fn incremental_root_equals_from_scratch(shape in shape(), base in objects(), edits in edits(), flush_every in 1usize..8) {
        let mut objs = base.clone();
        let mut t = build(shape, &objs);
        t.root();
        for (i, (k, v)) in edits.iter().enumerate() {
            t.set(key_hash(k), v.as_ref().map(|v| leaf_hash(k, v)));
            if i % flush_every == 0 {
                t.root();
            }
        }
        apply(&mut objs, &edits);
        prop_assert_eq!(t.root(), build(shape, &objs).root());
    }

    #[test]
    fn diff_walk_returns_exactly_the_changed_keys(shape in shape(), base in objects(), edits in edits()) {
        let mut a = build(shape, &base);
        let mut changed = base.clone();
        apply(&mut changed, &edits);
        let mut b = build(shape, &changed);
        let mut want: Vec<Digest> = base
            .keys()
            .chain(changed.keys())
            .filter(|k| base.get(*k) != changed.get(*k))
            .map(|k| key_hash(k))
            .collect();
        want.sort();
        want.dedup();
        prop_assert_eq!(a.diff(&mut b), want);
    }

    #[test]
    fn proofs_verify_and_tampering_fails(shape in shape(), objs in objects(), probe in vec(any::<u8>(), 1..6), junk in any::<u8>()) {
        let mut t = build(shape, &objs);
        let root = t.root();
        for (k, v) in objs.iter().take(5) {
            let p = t.prove(k);
            prop_assert!(p.verify(shape, &root, k, Some(v)));
            let mut other = v.clone();
            other.push(junk);
            prop_assert!(!p.verify(shape, &root, k, Some(&other)), "wrong value accepted");
            prop_assert!(!p.verify(shape, &root, k, None), "absence of a present key accepted");
            let mut bad_root = root;
            bad_root.0[5] ^= 1;
            prop_assert!(!p.verify(shape, &bad_root, k, Some(v)));
            // Tamper with each sibling list in turn.
            for lvl in 0..p.path.len() {
                let mut q = p.clone();
                q.path[lvl][0].0[0] ^= 0x80;
                let own = q.path[lvl].len();
                prop_assert!(own > 0);
                // Flipping one child either hits a sibling or our own slot; both must fail.
                prop_assert!(!q.verify(shape, &root, k, Some(v)));
            }
            if p.bucket.len() > 1 {
                let mut q = p.clone();
                q.bucket.swap(0, 1);
                prop_assert!(!q.verify(shape, &root, k, Some(v)), "unsorted bucket accepted");
            }
        }
        if !objs.contains_key(&probe) {
            let p = t.prove(&probe);
            prop_assert!(p.verify(shape, &root, &probe, None), "absence proof fails");
            prop_assert!(!p.verify(shape, &root, &probe, Some(b"x")));
        }
    }
}
