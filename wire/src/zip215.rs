//! Ed25519 signature checks by the rules of ZIP 215, alone and in batches,
//! on curve25519-dalek (whose AVX2 backend is picked at run time).
//!
//! Why not ed25519-dalek's own checks: its batch equation is cofactorless
//! with random weights, so a signature carrying a small-order component
//! (which only its signer can make) passes or fails a batch by chance and
//! fails a single check. In a BFT system correct nodes would then disagree
//! about a faulty principal's message. ZIP 215 makes every check
//! cofactored, so a batch passes exactly when each of its signatures passes
//! alone. The rules (as in ed25519-consensus, which the tests compare
//! against): `A` and `R` are any point encodings, non-canonical included;
//! `s` must be canonical (below the group order); the equation is
//! `[8]([s]B - R - [k]A) = 0` with `k = SHA-512(R || A || M)`.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest as _, Sha512};

/// A public key, decoded once for checking.
#[derive(Clone, Copy, Debug)]
pub struct CheckKey {
    bytes: [u8; 32],
    point: EdwardsPoint,
    minus: EdwardsPoint,
}

impl CheckKey {
    /// `None` when the bytes encode no curve point.
    pub fn new(bytes: [u8; 32]) -> Option<CheckKey> {
        let point = CompressedEdwardsY(bytes).decompress()?;
        Some(CheckKey {
            bytes,
            point,
            minus: -point,
        })
    }

    fn challenge(&self, r: &[u8; 32], msg: &[u8]) -> Scalar {
        let h = Sha512::new()
            .chain_update(r)
            .chain_update(self.bytes)
            .chain_update(msg)
            .finalize();
        Scalar::from_bytes_mod_order_wide(&h.into())
    }

    /// Whether `sig` is this key's signature over `msg`.
    pub fn verify(&self, sig: &[u8; 64], msg: &[u8]) -> bool {
        let Some((r_bytes, r, s)) = parse(sig) else {
            return false;
        };
        let k = self.challenge(&r_bytes, msg);
        // R' = [s]B - [k]A; valid when [8](R - R') is the identity.
        let r_prime = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus, &s);
        (r - r_prime).mul_by_cofactor().is_identity()
    }
}

/// `R` decoded and `s` canonical, or `None`.
fn parse(sig: &[u8; 64]) -> Option<([u8; 32], EdwardsPoint, Scalar)> {
    let mut r_bytes = [0u8; 32];
    let mut s_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&sig[..32]);
    s_bytes.copy_from_slice(&sig[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    Some((r_bytes, r, s))
}

/// Signatures checked together: with random 128-bit weights `z_i`,
/// `[8]([-Σ z_i s_i]B + Σ [z_i]R_i + Σ_keys [Σ_{i of key} z_i k_i]A) = 0`,
/// one multiscalar multiplication in which each signer's key appears once.
#[derive(Default)]
pub struct BatchVerifier {
    /// Each signer's key and the sum of its `z_i k_i`.
    keys: Vec<(CheckKey, Scalar)>,
    b_coeff: Scalar,
    r_coeffs: Vec<Scalar>,
    rs: Vec<EdwardsPoint>,
    /// False once a queued signature could not even be parsed.
    parsed: bool,
    len: usize,
}

impl BatchVerifier {
    pub fn new() -> Self {
        BatchVerifier {
            parsed: true,
            ..Default::default()
        }
    }

    pub fn queue(&mut self, key: &CheckKey, sig: &[u8; 64], msg: &[u8]) {
        self.len += 1;
        let Some((r_bytes, r, s)) = parse(sig) else {
            self.parsed = false;
            return;
        };
        let k = key.challenge(&r_bytes, msg);
        let z = Scalar::from(rand::random::<u128>());
        self.b_coeff -= z * s;
        self.rs.push(r);
        self.r_coeffs.push(z);
        // A deployment has few signers: a linear search beats hashing.
        match self.keys.iter_mut().find(|(k2, _)| k2.bytes == key.bytes) {
            Some((_, c)) => *c += z * k,
            None => self.keys.push((*key, z * k)),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every queued signature is valid (an empty batch is).
    pub fn verify(self) -> bool {
        if !self.parsed {
            return false;
        }
        if self.rs.is_empty() {
            return true;
        }
        let scalars = std::iter::once(&self.b_coeff)
            .chain(self.keys.iter().map(|(_, c)| c))
            .chain(self.r_coeffs.iter());
        let points = std::iter::once(&ED25519_BASEPOINT_POINT)
            .chain(self.keys.iter().map(|(k, _)| &k.point))
            .chain(self.rs.iter());
        EdwardsPoint::vartime_multiscalar_mul(scalars, points)
            .mul_by_cofactor()
            .is_identity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
    use rand::{Rng, SeedableRng};

    /// A signature whose `R` carries a small-order component: valid under
    /// the cofactored equation, invalid under the cofactorless one. Only the
    /// holder of the secret key can make it.
    fn torsioned(key: &SigningKey, msg: &[u8], t: usize, nonce: u64) -> [u8; 64] {
        let a = key.to_scalar();
        let a_bytes = key.verifying_key().to_bytes();
        let r_scalar = Scalar::from(nonce + 7);
        let big_r = ED25519_BASEPOINT_POINT * r_scalar + EIGHT_TORSION[t];
        let r_bytes = big_r.compress().to_bytes();
        let h = Sha512::new()
            .chain_update(r_bytes)
            .chain_update(a_bytes)
            .chain_update(msg)
            .finalize();
        let k = Scalar::from_bytes_mod_order_wide(&h.into());
        let s = r_scalar + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }

    fn consensus_accepts(key: &SigningKey, sig: &[u8; 64], msg: &[u8]) -> bool {
        let vk = ed25519_consensus::VerificationKey::try_from(key.verifying_key().to_bytes()).expect("key");
        vk.verify(&ed25519_consensus::Signature::from(*sig), msg).is_ok()
    }

    #[test]
    fn single_and_batch_checks_agree_with_ed25519_consensus_on_good_forged_and_torsioned_signatures() {
        let seed: u64 = 0x215;
        println!("seed {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let keys: Vec<SigningKey> = (0..4).map(|_| SigningKey::from_bytes(&rng.gen())).collect();
        let checks: Vec<CheckKey> = keys
            .iter()
            .map(|k| CheckKey::new(k.verifying_key().to_bytes()).expect("point"))
            .collect();
        let mut good = BatchVerifier::new();
        let mut torsion = BatchVerifier::new();
        for i in 0..48usize {
            let j = i % 4;
            let msg = (i as u64).to_le_bytes();
            let sig = keys[j].sign(&msg).to_bytes();
            assert!(checks[j].verify(&sig, &msg) && consensus_accepts(&keys[j], &sig, &msg));
            good.queue(&checks[j], &sig, &msg);
            // Another message, another key, a flipped bit of s or of R: rejected.
            let mut flipped = sig;
            flipped[(i * 7) % 64] ^= 1 << (i % 8);
            for (k, s, m) in [
                (j, sig, &(i as u64 + 1).to_le_bytes()),
                ((j + 1) % 4, sig, &msg),
                (j, flipped, &msg),
            ] {
                assert_eq!(checks[k].verify(&s, m), consensus_accepts(&keys[k], &s, m), "sig {i}");
                assert!(!checks[k].verify(&s, m), "sig {i} forged");
            }
            // Small-order component in R: accepted alone and in a batch, by both.
            let t = 1 + i % 7;
            let ts = torsioned(&keys[j], &msg, t, i as u64);
            assert!(
                checks[j].verify(&ts, &msg) && consensus_accepts(&keys[j], &ts, &msg),
                "torsion {t}"
            );
            // ed25519-dalek's cofactorless check rejects it: the disagreement
            // its batch check would have left to chance.
            let dalek = keys[j].verifying_key();
            assert!(dalek.verify(&msg, &ed25519_dalek::Signature::from_bytes(&ts)).is_err());
            torsion.queue(&checks[j], &ts, &msg);
        }
        assert_eq!(good.len(), 48);
        assert!(good.verify());
        assert!(torsion.verify());
    }

    #[test]
    fn one_bad_signature_fails_the_batch_and_a_non_canonical_s_is_rejected() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let check = CheckKey::new(key.verifying_key().to_bytes()).expect("point");
        let mut batch = BatchVerifier::new();
        for i in 0..10u8 {
            let sig = key.sign(&[i]).to_bytes();
            batch.queue(&check, &sig, &[if i == 6 { 99 } else { i }]);
        }
        assert!(!batch.verify());
        // s + l encodes the same scalar non-canonically: ZIP 215 rejects it.
        let mut sig = key.sign(b"m").to_bytes();
        let s = Scalar::from_canonical_bytes(sig[32..].try_into().expect("32")).expect("canonical");
        // The group order l, little-endian.
        let l_bytes: [u8; 32] = hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        let mut sum = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s.as_bytes()[i]) + u16::from(l_bytes[i]) + carry;
            sum[i] = (v & 0xff) as u8;
            carry = v >> 8;
        }
        assert!(carry == 0 && sum[31] < 0x80, "s + l < 2^254 fits");
        sig[32..].copy_from_slice(&sum);
        assert!(!check.verify(&sig, b"m"));
        assert!(!consensus_accepts(&key, &sig, b"m"));
        let mut batch = BatchVerifier::new();
        batch.queue(&check, &sig, b"m");
        assert_eq!(batch.verify(), check.verify(&sig, b"m"));
    }
}
