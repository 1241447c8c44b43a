//! Simulated BFT clients: submit signed batches, count a batch done once
//! f+1 nodes delivered it, and re-send to every node when late.

use std::collections::{BTreeMap, BTreeSet};
use zz_wire::{AppId, AppRequest, ClientBatch, ClientId, Identity, Signed, View};

pub(super) struct InFlight {
    pub batch: Signed<ClientBatch>,
    pub sent_ms: u64,
    pub replies: BTreeSet<usize>,
}

pub(super) struct SimClient {
    pub id: Identity,
    pub client: ClientId,
    pub next_id: u64,
    pub submitted: u64,
    pub done: u64,
    pub inflight: BTreeMap<u64, InFlight>,
    /// Highest view a replying node was in: whom to ask first.
    pub view_hint: View,
    pub retries: u64,
}

impl SimClient {
    pub fn new(id: Identity, client: ClientId) -> Self {
        SimClient {
            id,
            client,
            next_id: 1,
            submitted: 0,
            done: 0,
            inflight: BTreeMap::new(),
            view_hint: 0,
            retries: 0,
        }
    }

    pub fn make_batch(&mut self, app: AppId, ops: usize) -> Signed<ClientBatch> {
        let first_id = self.next_id;
        self.next_id += ops as u64;
        let ops: Vec<AppRequest> = (0..ops as u64)
            .map(|i| {
                let id = first_id + i;
                AppRequest::new("PUT", &format!("/kv/{}-{id}", self.client), id.to_le_bytes().to_vec())
            })
            .collect();
        self.submitted += 1;
        self.id
            .sign(ClientBatch::new(self.client, app, first_id, &ops).expect("small requests always pack"))
    }

    /// Node `node` (in `view`) delivered our batch `first_id`; done at `need` nodes.
    pub fn on_delivered(&mut self, first_id: u64, node: usize, view: View, need: usize) {
        self.view_hint = self.view_hint.max(view);
        let Some(f) = self.inflight.get_mut(&first_id) else {
            return;
        };
        f.replies.insert(node);
        if f.replies.len() >= need {
            self.inflight.remove(&first_id);
            self.done += 1;
        }
    }
}
