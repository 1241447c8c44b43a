//! ed25519 keys and signed envelopes.
//!
//! A `Signed<T>` carries a body and a signature over `T::digest()`, the
//! domain-separated digest of the body's named fields. The author is a field
//! of the body, so it is covered by the signature too.

use crate::digest::Digest;
use crate::ids::Principal;
use crate::zip215::{BatchVerifier, CheckKey};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

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
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.who)
    }
}

impl Identity {
    pub fn new(who: Principal, key: SigningKey) -> Self {
        Identity { who, key }
    }

    pub fn generate(who: Principal) -> Self {
        Identity {
            who,
            key: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// Deterministic key for simulations and tests.
    pub fn from_seed(who: Principal, seed: [u8; 32]) -> Self {
        Identity {
            who,
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
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
        self.key.sign(&d.0)
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
        let key = self.keys.keys.get(&who).ok_or(SigError::UnknownKey(who))?;
        let checked = (who, d.0, sig.to_bytes());
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

/// A signature found valid: signer, digest, signature bytes.
type Checked = (Principal, [u8; 32], [u8; 64]);

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

/// Public keys of everyone in the deployment.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: HashMap<Principal, RingKey>,
    memo: Option<Arc<Memo>>,
}

#[derive(Clone, Debug)]
struct RingKey {
    public: PublicKey,
    /// The same key, decoded once for checking.
    check: CheckKey,
}

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
        // ed25519-dalek decoded the same bytes to a curve point already.
        let check = CheckKey::new(key.0.to_bytes()).expect("a decoded ed25519 public key is a curve point");
        self.keys.insert(who, RingKey { public: key, check });
    }

    pub fn get(&self, who: &Principal) -> Option<&PublicKey> {
        self.keys.get(who).map(|k| &k.public)
    }

    pub fn contains(&self, who: &Principal) -> bool {
        self.keys.contains_key(who)
    }

    /// How many agreement nodes the ring holds keys for (n = 3f+1).
    pub fn node_count(&self) -> usize {
        self.keys.keys().filter(|p| matches!(p, Principal::Node(_))).count()
    }

    /// Verifies a raw signature over a digest by a named principal.
    pub fn verify_digest(&self, who: Principal, d: &Digest, sig: &Signature) -> Result<(), SigError> {
        let key = self.keys.get(&who).ok_or(SigError::UnknownKey(who))?;
        let checked = (who, d.0, sig.to_bytes());
        if self.memo.as_ref().is_some_and(|m| m.has(&checked)) {
            return Ok(());
        }
        if key.check.verify(&checked.2, &d.0) {
            if let Some(m) = &self.memo {
                m.add(checked);
            }
            Ok(())
        } else {
            Err(SigError::BadSignature(who))
        }
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
}
