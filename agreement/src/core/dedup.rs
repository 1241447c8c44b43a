//! Which client batches are already in the committed log.
//!
//! Client ids grow per (client, app), so each client keeps a window of the
//! last [`WINDOW`] committed `first_id`s; anything at or below the highest
//! id evicted from the window counts as committed too. A client that sends
//! more than `WINDOW` batches out of order would see the oldest refused as
//! duplicates, which a real client never does.

use std::collections::{BTreeMap, BTreeSet};
use zz_wire::ClientId;

/// Committed `first_id`s remembered per client.
pub const WINDOW: usize = 1 << 16;

/// A client batch is known by its author and first request id.
pub type ReqKey = (ClientId, u64);

#[derive(Clone, Debug, Default)]
struct ClientWindow {
    /// Every id at or below this is treated as committed.
    floor: Option<u64>,
    ids: BTreeSet<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct Dedup {
    clients: BTreeMap<ClientId, ClientWindow>,
}

/// `Dedup` as stored: per client its floor and its ids as gaps from the
/// previous one (ids grow, so each gap is a varint of a byte or two).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DedupRecord(Vec<(ClientId, Option<u64>, Vec<u64>)>);

impl Dedup {
    pub fn contains(&self, (client, id): ReqKey) -> bool {
        self.clients
            .get(&client)
            .is_some_and(|w| w.floor.is_some_and(|f| id <= f) || w.ids.contains(&id))
    }

    pub fn insert(&mut self, (client, id): ReqKey) {
        let w = self.clients.entry(client).or_default();
        w.ids.insert(id);
        if w.ids.len() > WINDOW {
            if let Some(lowest) = w.ids.pop_first() {
                w.floor = Some(w.floor.map_or(lowest, |f| f.max(lowest)));
            }
        }
    }
}

impl Dedup {
    pub fn record(&self) -> DedupRecord {
        DedupRecord(
            self.clients
                .iter()
                .map(|(c, w)| {
                    let mut prev = 0;
                    let gaps = w
                        .ids
                        .iter()
                        .map(|id| {
                            let gap = id - prev;
                            prev = *id;
                            gap
                        })
                        .collect();
                    (*c, w.floor, gaps)
                })
                .collect(),
        )
    }
}

impl DedupRecord {
    pub fn restore(&self) -> Dedup {
        let clients = self
            .0
            .iter()
            .map(|(c, floor, gaps)| {
                let mut id = 0u64;
                let ids = gaps
                    .iter()
                    .map(|g| {
                        id = id.saturating_add(*g);
                        id
                    })
                    .collect();
                (*c, ClientWindow { floor: *floor, ids })
            })
            .collect();
        Dedup { clients }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_batches_are_remembered() {
        let mut d = Dedup::default();
        d.insert((ClientId(1), 10));
        assert!(d.contains((ClientId(1), 10)));
        assert!(!d.contains((ClientId(1), 11)));
        assert!(!d.contains((ClientId(2), 10)));
    }

    #[test]
    fn ids_below_the_window_count_as_committed() {
        let mut d = Dedup::default();
        for id in 0..=WINDOW as u64 {
            d.insert((ClientId(1), id * 2));
        }
        // id 0 was evicted: it and everything below the floor stays known.
        assert!(d.contains((ClientId(1), 0)));
        assert!(!d.contains((ClientId(1), 3)));
    }

    #[test]
    fn the_stored_record_restores_the_same_set() {
        let mut d = Dedup::default();
        for id in [3, 7, 8, 1000] {
            d.insert((ClientId(2), id));
        }
        d.insert((ClientId(1), 5));
        let bytes = postcard::to_stdvec(&d.record()).unwrap();
        let back: DedupRecord = postcard::from_bytes(&bytes).unwrap();
        let r = back.restore();
        for id in [3, 7, 8, 1000] {
            assert!(r.contains((ClientId(2), id)));
        }
        assert!(r.contains((ClientId(1), 5)));
        assert!(!r.contains((ClientId(2), 4)));
        assert_eq!(r.record(), d.record());
    }
}
