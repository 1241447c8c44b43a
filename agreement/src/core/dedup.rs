//! Which client batches are already in the committed log.
//!
//! Client ids grow per (client, app), so each client keeps a window of the
//! last [`WINDOW`] committed `first_id`s; anything at or below the highest
//! id evicted from the window counts as committed too. A client that sends
//! more than `WINDOW` batches out of order would see the oldest refused as
//! duplicates, which a real client never does.

use std::collections::{BTreeSet, HashMap};
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
    clients: HashMap<ClientId, ClientWindow>,
}

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
}
