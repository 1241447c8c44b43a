//! What a correct kv may answer a reader, given what the reader's own
//! writes were told. A write that got no answer (a 503 after the gateway's
//! deadline, a dropped connection) may still have been ordered, then or
//! later, so it is "maybe applied": a read may show it or not.

use std::collections::{BTreeMap, BTreeSet};

/// The writes one client made to its own keys (no one else writes them).
#[derive(Debug, Default)]
pub struct KvOracle {
    keys: BTreeMap<String, KeyModel>,
}

#[derive(Debug, Default)]
struct KeyModel {
    /// The value a read must show unless a maybe-applied write overtook it;
    /// `None`: the key may still be absent.
    current: Option<String>,
    /// Values of unanswered writes. They stay possible for good: a request
    /// the gateway gave up on may still be ordered after later writes.
    maybe: BTreeSet<String>,
}

impl KvOracle {
    /// PUT `value` was answered 200.
    pub fn written(&mut self, key: &str, value: &str) {
        let k = self.keys.entry(key.to_string()).or_default();
        k.maybe.remove(value);
        k.current = Some(value.to_string());
    }

    /// PUT `value` got no answer: it may or may not have been applied.
    pub fn maybe_written(&mut self, key: &str, value: &str) {
        let k = self.keys.entry(key.to_string()).or_default();
        if k.current.as_deref() != Some(value) {
            k.maybe.insert(value.to_string());
        }
    }

    /// Keys worth reading (written, or maybe written).
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether a GET of `key` may answer `got` (`None`: 404). A maybe
    /// value seen once was applied, and what it overwrote cannot return.
    pub fn read(&mut self, key: &str, got: Option<&str>) -> bool {
        let Some(k) = self.keys.get_mut(key) else {
            return got.is_none();
        };
        match got {
            None => k.current.is_none(),
            Some(v) if k.current.as_deref() == Some(v) => true,
            Some(v) if k.maybe.contains(v) => {
                k.current = Some(v.to_string());
                true
            }
            Some(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KvOracle;

    #[test]
    fn an_answered_write_must_be_read_back() {
        let mut o = KvOracle::default();
        o.written("k", "v1");
        assert!(o.read("k", Some("v1")));
        assert!(!o.read("k", Some("v0")));
        assert!(!o.read("k", None), "written, so not absent");
    }

    #[test]
    fn an_unanswered_write_may_or_may_not_be_applied() {
        let mut o = KvOracle::default();
        o.maybe_written("k", "v1");
        assert!(o.read("k", None), "never applied");
        o.written("k", "v2");
        o.maybe_written("k", "v3");
        assert!(o.read("k", Some("v2")), "v3 not applied");
        assert!(o.read("k", Some("v3")), "v3 applied");
        // Ordered late, after v2 was answered: still a correct history.
        assert!(o.read("k", Some("v1")));
        assert!(!o.read("k", Some("v4")), "never written");
    }

    #[test]
    fn a_maybe_value_seen_once_was_applied() {
        let mut o = KvOracle::default();
        o.written("k", "v1");
        o.maybe_written("k", "v2");
        assert!(o.read("k", Some("v2")));
        assert!(!o.read("k", Some("v1")), "v2 overwrote v1, which cannot come back");
        assert!(!o.read("k", None));
    }
}
