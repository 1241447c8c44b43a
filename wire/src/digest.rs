//! Domain-separated sha2-256 digests over explicit fields.
//!
//! Every signature and every Merkle hash in zz covers a digest built here:
//! a domain tag, then each field in a fixed order with lengths prefixed, so
//! two different messages can never hash the same bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub const ZERO: Digest = Digest([0; 32]);

    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Builds a digest field by field. The domain names the message kind and version.
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new(domain: &str) -> Self {
        let mut h = Sha256::new();
        h.update((domain.len() as u64).to_le_bytes());
        h.update(domain.as_bytes());
        Hasher(h)
    }

    pub fn u8(mut self, v: u8) -> Self {
        self.0.update([v]);
        self
    }

    pub fn u16(mut self, v: u16) -> Self {
        self.0.update(v.to_le_bytes());
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.0.update(v.to_le_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.0.update(v.to_le_bytes());
        self
    }

    pub fn bool(self, v: bool) -> Self {
        self.u8(u8::from(v))
    }

    /// Length-prefixed bytes.
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.update((v.len() as u64).to_le_bytes());
        self.0.update(v);
        self
    }

    pub fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }

    pub fn digest(mut self, d: &Digest) -> Self {
        self.0.update(d.0);
        self
    }

    /// An optional field: a presence byte, then the value.
    pub fn opt_digest(self, d: Option<&Digest>) -> Self {
        match d {
            Some(d) => self.u8(1).digest(d),
            None => self.u8(0),
        }
    }

    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate_equal_fields() {
        let a = Hasher::new("zz/a").u64(1).finish();
        let b = Hasher::new("zz/b").u64(1).finish();
        assert_ne!(a, b);
    }

    #[test]
    fn length_prefix_separates_field_boundaries() {
        let a = Hasher::new("t").bytes(b"ab").bytes(b"c").finish();
        let b = Hasher::new("t").bytes(b"a").bytes(b"bc").finish();
        assert_ne!(a, b);
    }
}
