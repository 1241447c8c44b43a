//! PBFT's last-reply cache (§4.1): the certified answers each node sent a
//! client, kept for a while, so a batch the client re-sends after losing its
//! answers is answered again. The core drops such a batch as already
//! committed; without the cache the client would wait out its deadline and
//! report a failure for a request that was applied.

use std::collections::{BTreeMap, VecDeque};
use zz_wire::{AppId, BatchResult, ClientId};

/// Batches remembered per client and app, and their response bytes.
const PER_CLIENT_BATCHES: usize = 1024;
const PER_CLIENT_BYTES: usize = 2 << 20;

#[derive(Default)]
struct Recent {
    by_id: BTreeMap<u64, BatchResult>,
    order: VecDeque<u64>,
    bytes: usize,
}

#[derive(Default)]
pub struct ReplyCache {
    clients: BTreeMap<(AppId, ClientId), Recent>,
}

fn size(r: &BatchResult) -> usize {
    32 + r.responses.as_bytes().len()
}

impl ReplyCache {
    pub fn insert(&mut self, app: AppId, results: &[BatchResult]) {
        for r in results {
            let recent = self.clients.entry((app, r.client)).or_default();
            if let Some(old) = recent.by_id.insert(r.first_id, r.clone()) {
                recent.bytes -= size(&old);
            } else {
                recent.order.push_back(r.first_id);
            }
            recent.bytes += size(r);
            while recent.order.len() > PER_CLIENT_BATCHES || recent.bytes > PER_CLIENT_BYTES {
                let Some(id) = recent.order.pop_front() else { break };
                if let Some(old) = recent.by_id.remove(&id) {
                    recent.bytes -= size(&old);
                }
            }
        }
    }

    pub fn get(&self, app: AppId, client: ClientId, first_id: u64) -> Option<&BatchResult> {
        self.clients.get(&(app, client))?.by_id.get(&first_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zz_wire::{AppResponse, Packed};

    fn result(first_id: u64, body: usize) -> BatchResult {
        BatchResult {
            client: ClientId(1),
            first_id,
            responses: Packed::pack(&[AppResponse::new(200, vec![1; body])]).expect("packs"),
        }
    }

    #[test]
    fn answers_are_kept_per_client_and_app() {
        let mut c = ReplyCache::default();
        c.insert(AppId(0), &[result(1, 10), result(2, 10)]);
        assert!(c.get(AppId(0), ClientId(1), 2).is_some());
        assert!(c.get(AppId(1), ClientId(1), 2).is_none());
        assert!(c.get(AppId(0), ClientId(2), 2).is_none());
    }

    #[test]
    fn the_oldest_answers_go_first_past_either_bound() {
        let mut c = ReplyCache::default();
        for id in 0..(PER_CLIENT_BATCHES as u64 + 10) {
            c.insert(AppId(0), &[result(id, 1)]);
        }
        assert!(c.get(AppId(0), ClientId(1), 9).is_none());
        assert!(c.get(AppId(0), ClientId(1), 10).is_some());
        c.insert(AppId(0), &[result(5000, PER_CLIENT_BYTES)]);
        assert!(c.get(AppId(0), ClientId(1), 10).is_none(), "bytes bound");
    }
}
