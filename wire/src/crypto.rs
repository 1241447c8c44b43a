//! ed25519 keys and signed envelopes.
//!
//! A `Signed<T>` carries a body and a signature over `T::digest()`, the
//! domain-separated digest of the body's named fields. The author is a field
//! of the body, so it is covered by the signature too.

use crate::digest::Digest;
use crate::ids::Principal;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

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
        let who = self.body.author();
        let key = keys.get(&who).ok_or(SigError::UnknownKey(who))?;
        key.0
            .verify(&self.body.digest().0, &self.sig)
            .map_err(|_| SigError::BadSignature(who))
    }
}

/// Verifies many signed bodies at once (ed25519 batch verification), falling
/// back to one-by-one to name the culprit when the batch fails.
pub fn verify_all<'a, T: Signable + 'a>(
    items: impl IntoIterator<Item = &'a Signed<T>>,
    keys: &Keyring,
) -> Result<(), SigError> {
    let items: Vec<&Signed<T>> = items.into_iter().collect();
    if items.len() < 4 {
        return items.iter().try_for_each(|s| s.verify(keys));
    }
    let mut digests = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    let mut vks = Vec::with_capacity(items.len());
    for s in &items {
        let who = s.body.author();
        let key = keys.get(&who).ok_or(SigError::UnknownKey(who))?;
        digests.push(s.body.digest());
        sigs.push(s.sig);
        vks.push(key.0);
    }
    let msgs: Vec<&[u8]> = digests.iter().map(|d| &d.0[..]).collect();
    if ed25519_dalek::verify_batch(&msgs, &sigs, &vks).is_ok() {
        return Ok(());
    }
    items.iter().try_for_each(|s| s.verify(keys))?;
    Err(SigError::BadBatch)
}

/// Public keys of everyone in the deployment.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: HashMap<Principal, PublicKey>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, who: Principal, key: PublicKey) {
        self.keys.insert(who, key);
    }

    pub fn get(&self, who: &Principal) -> Option<&PublicKey> {
        self.keys.get(who)
    }

    pub fn contains(&self, who: &Principal) -> bool {
        self.keys.contains_key(who)
    }

    /// Verifies a raw signature over a digest by a named principal.
    pub fn verify_digest(&self, who: Principal, d: &Digest, sig: &Signature) -> Result<(), SigError> {
        let key = self.get(&who).ok_or(SigError::UnknownKey(who))?;
        key.0.verify(&d.0, sig).map_err(|_| SigError::BadSignature(who))
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
}
