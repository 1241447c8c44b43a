//! ed25519 keys and signed envelopes.
//!
//! A `Signed<T>` carries a body and a signature over `T::digest()`, the
//! domain-separated digest of the body's named fields. The author is a field
//! of the body, so it is covered by the signature too.

use crate::digest::Digest;
use crate::ids::{Principal, ReplicaId};
use crate::zip215::{BatchVerifier, CheckKey};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

pub use ed25519_dalek::Signature;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    #[error("unknown key for {0}")]
    UnknownKey(Principal),
    #[error("bad signature from {0}")]
    BadSignature(Principal),
    #[error("bad signature in batch")]
    BadBatch,
}

/// A public key as carried in the deployment file (hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey(pub VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &hex::encode(self.0.as_bytes())[..8])
    }
}

impl TryFrom<String> for PublicKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bytes = hex::decode(s.trim()).map_err(|e| format!("public key is not hex: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "public key must be 32 bytes".to_string())?;
        VerifyingKey::from_bytes(&arr)
            .map(PublicKey)
            .map_err(|e| format!("invalid public key: {e}"))
    }
}

impl From<PublicKey> for String {
    fn from(k: PublicKey) -> String {
        hex::encode(k.0.as_bytes())
    }
}

/// The one component of a process that holds a signing key.
#[derive(Clone)]
pub struct Identity {
    pub who: Principal,
    key: SigningKey,
    /// Where its signatures are recorded as valid (see [`Identity::vouching`]).
    memo: Option<Arc<Memo>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.who)
    }
}

impl Identity {
    pub fn new(who: Principal, key: SigningKey) -> Self {
        Identity { who, key, memo: None }
    }

    pub fn generate(who: Principal) -> Self {
        Identity::new(who, SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Deterministic key for simulations and tests.
    pub fn from_seed(who: Principal, seed: [u8; 32]) -> Self {
        Identity::new(who, SigningKey::from_bytes(&seed))
    }

    /// This identity, recording every signature it makes as valid in the
    /// memo of `keys` (a keyring made with [`Keyring::with_memo`]; keys it
    /// derives do the same). An ed25519 signature made with a key verifies
    /// under that key, so the record cannot change a check's answer: a
    /// simulation that runs every principal in one process then checks by
    /// curve arithmetic only the signatures no one in it made, such as a
    /// forger's bytes. The memo is keyed by public key, so a signature
    /// checked under another principal's key is still checked for real.
    pub fn vouching(mut self, keys: &Keyring) -> Self {
        self.memo.clone_from(&keys.memo);
        self
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// A key for `who` derived from this identity's secret and `context`:
    /// the same inputs give the same key, and no one without this secret
    /// can compute it.
    pub fn derive(&self, who: Principal, context: &Digest) -> Identity {
        let seed = crate::digest::Hasher::new("zz/derived-key/v1")
            .bytes(&self.key.to_bytes())
            .digest(context)
            .finish();
        Identity {
            memo: self.memo.clone(),
            ..Identity::from_seed(who, seed.0)
        }
    }

    pub fn secret_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    pub fn from_secret_hex(who: Principal, s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s.trim()).map_err(|e| format!("secret key is not hex: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "secret key must be 32 bytes".to_string())?;
        Ok(Identity::new(who, SigningKey::from_bytes(&arr)))
    }

    pub fn sign_digest(&self, d: &Digest) -> Signature {
        let sig = self.key.sign(&d.0);
        if let Some(m) = &self.memo {
            m.add((self.key.verifying_key().to_bytes(), d.0, sig.to_bytes()));
        }
        sig
    }

    pub fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        debug_assert_eq!(body.author(), self.who, "signing a body authored by someone else");
        let sig = self.sign_digest(&body.digest());
        Signed { body, sig }
    }
}

/// A message body that can be signed: it names its author and digests its fields.
pub trait Signable {
    fn author(&self) -> Principal;
    fn digest(&self) -> Digest;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub body: T,
    pub sig: Signature,
}

impl<T: Signable> Signed<T> {
    pub fn author(&self) -> Principal {
        self.body.author()
    }

    pub fn verify(&self, keys: &Keyring) -> Result<(), SigError> {
        let (who, d, sig) = self.signed_digest();
        keys.verify_digest(who, &d, sig)
    }

    /// Adds this signature to `batch`, to be checked with the others.
    pub fn queue(&self, batch: &mut Batch) -> Result<(), SigError> {
        let (who, d, sig) = self.signed_digest();
        batch.queue(who, &d, sig)
    }

    /// The author, the digest the signature covers, and the signature.
    pub fn signed_digest(&self) -> (Principal, Digest, &Signature) {
        (self.body.author(), self.body.digest(), &self.sig)
    }
}

/// Verifies many signed bodies at once (ed25519 batch verification), falling
/// back to one-by-one to name the culprit when the batch fails.
pub fn verify_all<'a, T: Signable + 'a>(
    items: impl IntoIterator<Item = &'a Signed<T>>,
    keys: &Keyring,
) -> Result<(), SigError> {
    let items: Vec<&Signed<T>> = items.into_iter().collect();
    if items.len() < 2 {
        return items.iter().try_for_each(|s| s.verify(keys));
    }
    let mut batch = Batch::new(keys);
    for s in &items {
        s.queue(&mut batch)?;
    }
    if batch.verify() {
        return Ok(());
    }
    items.iter().try_for_each(|s| s.verify(keys))?;
    Err(SigError::BadBatch)
}

/// Signatures collected to be checked together: one multiscalar
/// multiplication, with the terms of each signer's key coalesced (a
/// deployment has few signers), is several times cheaper than checking
/// each alone.
///
/// Checks follow ZIP 215 alone and in batches (`zip215`), so a signature
/// passes in a batch exactly when it passes alone: a faulty principal
/// cannot craft one that some correct nodes accept and others reject.
pub struct Batch<'k> {
    keys: &'k Keyring,
    inner: BatchVerifier,
    /// Queued signatures, remembered as valid if the batch passes.
    queued: Vec<Checked>,
}

impl<'k> Batch<'k> {
    pub fn new(keys: &'k Keyring) -> Self {
        Batch {
            keys,
            inner: BatchVerifier::new(),
            queued: Vec::new(),
        }
    }

    /// Queues `who`'s signature over `d`; an unknown signer is refused now.
    pub fn queue(&mut self, who: Principal, d: &Digest, sig: &Signature) -> Result<(), SigError> {
        let key = self.keys.key(who).ok_or(SigError::UnknownKey(who))?;
        let checked = (key.public.0.to_bytes(), d.0, sig.to_bytes());
        if self.keys.memo.as_ref().is_some_and(|m| m.has(&checked)) {
            return Ok(());
        }
        self.inner.queue(&key.check, &checked.2, &d.0);
        if self.keys.memo.is_some() {
            self.queued.push(checked);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Whether every queued signature is valid (an empty batch is).
    pub fn verify(self) -> bool {
        let ok = self.inner.verify();
        if let (true, Some(m)) = (ok, &self.keys.memo) {
            self.queued.into_iter().for_each(|c| m.add(c));
        }
        ok
    }
}

/// A signature found valid: the signer's key, digest, signature bytes (the
/// key, not the principal: a replica's key changes with its generation).
type Checked = ([u8; 32], [u8; 32], [u8; 64]);

/// Signatures already found valid, shared by every clone of one keyring
/// made with [`Keyring::with_memo`]. The whole-system simulator runs every
/// principal in one process, where each would check the same signature
/// again. Validity is a function of (key, digest, signature), so a hit
/// cannot change an answer; only successes are kept.
#[derive(Debug, Default)]
struct Memo(Mutex<HashSet<Checked>>);

/// Entries past which the memo starts afresh (bounded memory).
const MEMO_MAX: usize = 1 << 20;

impl Memo {
    fn has(&self, c: &Checked) -> bool {
        self.0.lock().is_ok_and(|s| s.contains(c))
    }

    fn add(&self, c: Checked) {
        if let Ok(mut s) = self.0.lock() {
            if s.len() >= MEMO_MAX {
                s.clear();
            }
            s.insert(c);
        }
    }
}

/// Public keys of everyone in the deployment, and each replacement
/// replica's key since (see `ReplicaKey`). Clones share the replacements:
/// every part of a process that checks signatures sees a key change at once.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: HashMap<Principal, RingKey>,
    rotated: Arc<RwLock<HashMap<ReplicaId, Rotation>>>,
    memo: Option<Arc<Memo>>,
}

#[derive(Clone, Copy, Debug)]
struct RingKey {
    public: PublicKey,
    /// The same key, decoded once for checking.
    check: CheckKey,
}

impl RingKey {
    fn new(public: PublicKey) -> RingKey {
        // ed25519-dalek decoded the same bytes to a curve point already.
        let check = CheckKey::new(public.0.to_bytes()).expect("a decoded ed25519 public key is a curve point");
        RingKey { public, check }
    }
}

/// A replica's keys after its first replacement, by generation.
#[derive(Clone, Debug, Default)]
struct Rotation {
    keys: BTreeMap<u64, RingKey>,
    /// For each generation replaced, the last checkpoint seq it may have
    /// signed (from the announcement of the generation after it).
    through: BTreeMap<u64, u64>,
}

impl Rotation {
    fn current(&self) -> Option<(u64, RingKey)> {
        self.keys.last_key_value().map(|(g, k)| (*g, *k))
    }
}

/// Generations' keys kept per replica for checkpoint certificates.
const GENERATIONS_MAX: usize = 9;

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// This keyring, remembering the signatures it found valid, shared with
    /// its clones (see `Memo`): for simulations that run many principals
    /// in one process.
    pub fn with_memo(mut self) -> Self {
        self.memo = Some(Arc::default());
        self
    }

    pub fn insert(&mut self, who: Principal, key: PublicKey) {
        self.keys.insert(who, RingKey::new(key));
    }

    fn rotated(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ReplicaId, Rotation>> {
        // A poisoned lock only means a panic elsewhere; the map is still sound.
        self.rotated.read().unwrap_or_else(|e| e.into_inner())
    }

    /// `who`'s current key.
    fn key(&self, who: Principal) -> Option<RingKey> {
        if let Principal::Replica(r) = who {
            if let Some((_, k)) = self.rotated().get(&r).and_then(Rotation::current) {
                return Some(k);
            }
        }
        self.keys.get(&who).copied()
    }

    pub fn get(&self, who: &Principal) -> Option<PublicKey> {
        self.key(*who).map(|k| k.public)
    }

    pub fn contains(&self, who: &Principal) -> bool {
        self.keys.contains_key(who)
    }

    /// The generation whose key `replica` signs with now (1: the
    /// deployment file's).
    pub fn generation(&self, replica: ReplicaId) -> u64 {
        self.rotated()
            .get(&replica)
            .and_then(Rotation::current)
            .map_or(1, |(g, _)| g)
    }

    /// Records `key` as replica `r`'s key of `generation` (≥ 2), and that
    /// the generation before it may have signed checkpoints up to
    /// `retired_through`. Announcements may come in any order (a node
    /// passes on a replica's history when it links): the newest generation
    /// known is the one that counts. The caller has checked the
    /// orchestrator's word for it. Returns whether the current key changed;
    /// a replica the deployment does not have gets nothing.
    pub fn rotate(&self, r: ReplicaId, generation: u64, key: PublicKey, retired_through: u64) -> bool {
        let Some(first) = self.keys.get(&Principal::Replica(r)).copied() else {
            return false;
        };
        if generation < 2 {
            return false;
        }
        let mut rotated = self.rotated.write().unwrap_or_else(|e| e.into_inner());
        let rot = rotated.entry(r).or_default();
        rot.keys.entry(1).or_insert(first);
        let before = rot.current().map(|(g, _)| g);
        rot.keys.entry(generation).or_insert_with(|| RingKey::new(key));
        rot.through.insert(generation - 1, retired_through);
        while rot.keys.len() > GENERATIONS_MAX {
            rot.keys.pop_first();
        }
        let oldest = rot.keys.first_key_value().map_or(0, |(g, _)| *g);
        rot.through.retain(|g, _| *g >= oldest);
        rot.current().map(|(g, _)| g) != before
    }

    /// How many agreement nodes the ring holds keys for (n = 3f+1).
    pub fn node_count(&self) -> usize {
        self.keys.keys().filter(|p| matches!(p, Principal::Node(_))).count()
    }

    /// Verifies a raw signature over a digest by a named principal's
    /// current key.
    pub fn verify_digest(&self, who: Principal, d: &Digest, sig: &Signature) -> Result<(), SigError> {
        let key = self.key(who).ok_or(SigError::UnknownKey(who))?;
        if self.check(&key, d, sig) {
            Ok(())
        } else {
            Err(SigError::BadSignature(who))
        }
    }

    /// Verifies a replica's signature over its checkpoint at `seq`: by its
    /// current key, or by an earlier generation's that may have signed it
    /// before it was fenced.
    pub fn verify_checkpoint(&self, who: Principal, seq: u64, d: &Digest, sig: &Signature) -> Result<(), SigError> {
        if self.verify_digest(who, d, sig).is_ok() {
            return Ok(());
        }
        let retired: Vec<RingKey> = match who {
            Principal::Replica(r) => self.rotated().get(&r).map_or_else(Vec::new, |rot| {
                rot.keys
                    .iter()
                    .filter(|(g, _)| rot.through.get(g).is_some_and(|through| seq <= *through))
                    .map(|(_, k)| *k)
                    .collect()
            }),
            _ => Vec::new(),
        };
        if retired.iter().any(|k| self.check(k, d, sig)) {
            Ok(())
        } else {
            Err(SigError::BadSignature(who))
        }
    }

    fn check(&self, key: &RingKey, d: &Digest, sig: &Signature) -> bool {
        let checked = (key.public.0.to_bytes(), d.0, sig.to_bytes());
        if self.memo.as_ref().is_some_and(|m| m.has(&checked)) {
            return true;
        }
        let ok = key.check.verify(&checked.2, &d.0);
        if let (true, Some(m)) = (ok, &self.memo) {
            m.add(checked);
        }
        ok
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::digest::Hasher;
    use crate::ids::NodeId;

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Note {
        from: NodeId,
        text: String,
    }

    impl Signable for Note {
        fn author(&self) -> Principal {
            Principal::Node(self.from)
        }
        fn digest(&self) -> Digest {
            Hasher::new("zz/test/note").u16(self.from.0).str(&self.text).finish()
        }
    }

    fn setup() -> (Vec<Identity>, Keyring) {
        let ids: Vec<Identity> = (0..6)
            .map(|i| Identity::from_seed(Principal::Node(NodeId(i)), [i as u8 + 1; 32]))
            .collect();
        let mut ring = Keyring::new();
        for id in &ids {
            ring.insert(id.who, id.public());
        }
        (ids, ring)
    }

    #[test]
    fn signed_body_verifies_and_tampering_fails() {
        let (ids, ring) = setup();
        let mut s = ids[0].sign(Note {
            from: NodeId(0),
            text: "hi".into(),
        });
        assert_eq!(s.verify(&ring), Ok(()));
        s.body.text = "ho".into();
        assert_eq!(s.verify(&ring), Err(SigError::BadSignature(Principal::Node(NodeId(0)))));
    }

    #[test]
    fn claiming_another_author_fails() {
        let (ids, ring) = setup();
        let mut s = ids[0].sign(Note {
            from: NodeId(0),
            text: "hi".into(),
        });
        s.body.from = NodeId(1);
        assert!(s.verify(&ring).is_err());
    }

    #[test]
    fn unknown_author_is_rejected() {
        let (_, ring) = setup();
        let stranger = Identity::from_seed(Principal::Node(NodeId(9)), [42; 32]);
        let s = stranger.sign(Note {
            from: NodeId(9),
            text: "x".into(),
        });
        assert_eq!(s.verify(&ring), Err(SigError::UnknownKey(Principal::Node(NodeId(9)))));
    }

    #[test]
    fn batch_verification_names_the_bad_one() {
        let (ids, ring) = setup();
        let mut all: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                id.sign(Note {
                    from: NodeId(i as u16),
                    text: format!("m{i}"),
                })
            })
            .collect();
        assert_eq!(verify_all(&all, &ring), Ok(()));
        all[3].body.text = "forged".into();
        assert_eq!(
            verify_all(&all, &ring),
            Err(SigError::BadSignature(Principal::Node(NodeId(3))))
        );
    }

    #[test]
    fn a_batch_from_few_signers_verifies_and_one_forgery_fails_it() {
        let (ids, ring) = setup();
        // Many signatures from the same few keys: the case the checker
        // batches (terms of one key are coalesced).
        let notes: Vec<Signed<Note>> = (0..24)
            .map(|i| {
                let id = &ids[i % 3];
                let Principal::Node(from) = id.who else { unreachable!() };
                id.sign(Note {
                    from,
                    text: format!("n{i}"),
                })
            })
            .collect();
        let mut batch = Batch::new(&ring);
        notes
            .iter()
            .try_for_each(|n| n.queue(&mut batch))
            .expect("known signers");
        assert_eq!(batch.len(), 24);
        assert!(batch.verify());

        let mut forged = notes.clone();
        forged[17].body.text = "forged".into();
        let mut batch = Batch::new(&ring);
        forged
            .iter()
            .try_for_each(|n| n.queue(&mut batch))
            .expect("known signers");
        assert!(!batch.verify());
        assert!(forged[17].verify(&ring).is_err() && forged[16].verify(&ring).is_ok());
    }

    #[test]
    fn a_batch_refuses_an_unknown_signer_when_queued() {
        let (_, ring) = setup();
        let stranger = Identity::from_seed(Principal::Node(NodeId(9)), [42; 32]);
        let s = stranger.sign(Note {
            from: NodeId(9),
            text: "x".into(),
        });
        let mut batch = Batch::new(&ring);
        assert_eq!(
            s.queue(&mut batch),
            Err(SigError::UnknownKey(Principal::Node(NodeId(9))))
        );
        assert!(batch.is_empty() && batch.verify());
    }

    fn replica_ring() -> (Identity, Identity, Keyring, ReplicaId) {
        let r = ReplicaId {
            app: crate::ids::AppId(0),
            index: 1,
        };
        let first = Identity::from_seed(Principal::Replica(r), [7; 32]);
        let second = Identity::from_seed(Principal::Replica(r), [8; 32]);
        let mut ring = Keyring::new().with_memo();
        ring.insert(first.who, first.public());
        (first, second, ring, r)
    }

    #[test]
    fn a_vouching_identity_spares_the_check_of_its_own_signatures_only() {
        let (first, second, ring, r) = replica_ring();
        let first = first.vouching(&ring);
        let d = Digest([3; 32]);
        let sig = first.sign_digest(&d);
        let checked = (first.public().0.to_bytes(), d.0, sig.to_bytes());
        assert!(ring.memo.as_ref().is_some_and(|m| m.has(&checked)));
        assert_eq!(ring.verify_digest(first.who, &d, &sig), Ok(()));
        // Tampered bytes were never vouched for: they are checked and fail.
        let mut forged = sig.to_bytes();
        forged[0] ^= 1;
        let forged = Signature::from_bytes(&forged);
        assert!(ring.verify_digest(first.who, &d, &forged).is_err());
        assert!(ring.verify_digest(first.who, &Digest([4; 32]), &sig).is_err());
        // Under another key the same signature is not a memo hit.
        assert!(ring.rotate(r, 2, second.public(), 0));
        assert!(ring.verify_digest(first.who, &d, &sig).is_err());
        // Keys it derives vouch too; an identity made plainly does not.
        let derived = first.derive(first.who, &Digest([6; 32]));
        let dsig = derived.sign_digest(&d);
        assert!(ring
            .memo
            .as_ref()
            .is_some_and(|m| m.has(&(derived.public().0.to_bytes(), d.0, dsig.to_bytes()))));
        let plain = Identity::from_seed(first.who, [11; 32]);
        let psig = plain.sign_digest(&d);
        assert!(!ring
            .memo
            .as_ref()
            .is_some_and(|m| m.has(&(plain.public().0.to_bytes(), d.0, psig.to_bytes()))));
    }

    #[test]
    fn a_rotated_key_replaces_the_old_one_in_every_clone_and_only_forward() {
        let (first, second, ring, r) = replica_ring();
        let clone = ring.clone();
        let d = Digest([3; 32]);
        let old_sig = first.sign_digest(&d);
        assert_eq!(ring.verify_digest(first.who, &d, &old_sig), Ok(()));
        assert!(ring.rotate(r, 2, second.public(), 10));
        assert_eq!(clone.generation(r), 2);
        // Even a signature the memo already holds no longer counts.
        assert_eq!(
            clone.verify_digest(first.who, &d, &old_sig),
            Err(SigError::BadSignature(first.who))
        );
        assert_eq!(clone.verify_digest(first.who, &d, &second.sign_digest(&d)), Ok(()));
        // An older or equal generation changes nothing current.
        assert!(!ring.rotate(r, 2, first.public(), 10));
        assert!(!ring.rotate(r, 1, first.public(), 10));
        assert_eq!(ring.get(&first.who), Some(second.public()));
        // A later generation announced before an earlier one: the later counts.
        let third = Identity::from_seed(first.who, [9; 32]);
        let fourth = Identity::from_seed(first.who, [10; 32]);
        assert!(ring.rotate(r, 4, fourth.public(), 30));
        assert!(!ring.rotate(r, 3, third.public(), 20));
        assert_eq!((ring.generation(r), ring.get(&first.who)), (4, Some(fourth.public())));
        // And its retirement bound is known whatever the order.
        let d3 = Digest([5; 32]);
        assert_eq!(
            ring.verify_checkpoint(first.who, 30, &d3, &third.sign_digest(&d3)),
            Ok(())
        );
        assert!(ring
            .verify_checkpoint(first.who, 31, &d3, &third.sign_digest(&d3))
            .is_err());
        // A replica the deployment does not have gets no key.
        let stranger = ReplicaId { app: r.app, index: 9 };
        assert!(!ring.rotate(stranger, 2, second.public(), 10));
    }

    #[test]
    fn a_retired_key_counts_only_for_checkpoints_it_may_have_signed_before_it_was_fenced() {
        let (first, second, ring, r) = replica_ring();
        assert!(ring.rotate(r, 2, second.public(), 10));
        let d = Digest([4; 32]);
        let sig = first.sign_digest(&d);
        assert_eq!(ring.verify_checkpoint(first.who, 10, &d, &sig), Ok(()));
        assert_eq!(
            ring.verify_checkpoint(first.who, 11, &d, &sig),
            Err(SigError::BadSignature(first.who))
        );
        assert_eq!(
            ring.verify_checkpoint(first.who, 11, &d, &second.sign_digest(&d)),
            Ok(())
        );
    }
}
