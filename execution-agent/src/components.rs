//! Where a replica gets tenants' Wasm components: from the directory beside
//! its deployment file when it shares the orchestrator's disk (process
//! replicas), otherwise from the orchestrator over the replica's own link,
//! in `ComponentChunk`s, the whole checked against the hash the ordered
//! install named (VMs, other hosts). Nothing fetched is trusted before that
//! check, so the link needs no more trust than the directory.

use crate::app::tenant::{Components, DirComponents};
use crate::app::wasm::component_hash;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zz_wire::outbox::Outbox;
use zz_wire::{ComponentChunk, ComponentFetch, Identity, Msg};

/// How long a fetch may take before it is given up: the seq that needs the
/// component waits (this replica is behind) and fetches again when it is
/// tried again.
const FETCH_WITHIN: Duration = Duration::from_secs(30);
/// How long one chunk may take before it is asked for again.
const CHUNK_WAIT: Duration = Duration::from_secs(2);
/// Chunks queued for the replica thread; more are dropped (asked again).
const CHUNKS_QUEUED: usize = 4;
/// Larger than any component the admin API accepts.
const MAX_COMPONENT: u64 = 64 << 20;

/// The replica's end of component fetching: the link readers hand chunks
/// in, the replica thread asks and waits.
#[derive(Clone)]
pub struct ComponentLink(Arc<Inner>);

struct Inner {
    /// The orchestrator link's outbox, and who signs the requests; set when
    /// the links start.
    out: Mutex<Option<(Outbox, Identity)>>,
    tx: SyncSender<ComponentChunk>,
    rx: Mutex<Receiver<ComponentChunk>>,
}

impl Default for ComponentLink {
    fn default() -> Self {
        let (tx, rx) = mpsc::sync_channel(CHUNKS_QUEUED);
        ComponentLink(Arc::new(Inner {
            out: Mutex::new(None),
            tx,
            rx: Mutex::new(rx),
        }))
    }
}

impl ComponentLink {
    /// Requests go out through `out`, signed by `me`.
    pub fn connect(&self, out: Outbox, me: Identity) {
        if let Ok(mut o) = self.0.out.lock() {
            *o = Some((out, me));
        }
    }

    /// A chunk from the orchestrator's link; dropped if nobody is waiting
    /// for that many (the replica thread asks again).
    pub fn offer(&self, chunk: ComponentChunk) {
        let _ = self.0.tx.try_send(chunk);
    }

    fn ask(&self, hash: [u8; 32], offset: u64) -> bool {
        let Ok(out) = self.0.out.lock() else { return false };
        let Some((outbox, me)) = out.as_ref() else { return false };
        let zz_wire::Principal::Replica(replica) = me.who else {
            return false;
        };
        let msg = Msg::ComponentFetch(me.sign(ComponentFetch { replica, hash, offset }));
        zz_wire::frame::encode(&msg).is_ok_and(|b| outbox.try_send(b).is_ok())
    }

    /// Fetches the component `hash` whole and checks it.
    pub fn fetch(&self, hash: &[u8; 32]) -> Result<Vec<u8>, String> {
        let rx = self.0.rx.lock().map_err(|_| "component channel poisoned".to_string())?;
        while rx.try_recv().is_ok() {} // answers to an earlier fetch
        let deadline = Instant::now() + FETCH_WITHIN;
        let mut bytes = Vec::new();
        loop {
            if Instant::now() >= deadline {
                return Err(format!(
                    "no answer from the orchestrator within {} s ({} bytes fetched)",
                    FETCH_WITHIN.as_secs(),
                    bytes.len()
                ));
            }
            let offset = bytes.len() as u64;
            if !self.ask(*hash, offset) {
                // The link is not up yet, or its queue is full.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let asked = Instant::now();
            let chunk = loop {
                match rx.recv_timeout(CHUNK_WAIT.saturating_sub(asked.elapsed())) {
                    Ok(c) if c.hash == *hash && c.offset == offset => break Some(c),
                    Ok(_) => continue, // a late answer to an earlier request
                    Err(RecvTimeoutError::Timeout) => break None,
                    Err(RecvTimeoutError::Disconnected) => return Err("the links are gone".into()),
                }
            };
            let Some(c) = chunk else { continue };
            if c.total == 0 {
                return Err("the orchestrator does not hold it".into());
            }
            if c.total > MAX_COMPONENT || c.bytes.is_empty() || offset + c.bytes.len() as u64 > c.total {
                return Err(format!(
                    "a malformed chunk: {} bytes at {offset} of {}",
                    c.bytes.len(),
                    c.total
                ));
            }
            bytes.extend_from_slice(&c.bytes);
            if bytes.len() as u64 == c.total {
                break;
            }
        }
        if component_hash(&bytes) != *hash {
            return Err("the fetched bytes do not match the hash".into());
        }
        Ok(bytes)
    }
}

/// The directory first, then the orchestrator.
pub struct LinkComponents {
    pub dir: PathBuf,
    pub link: ComponentLink,
}

impl Components for LinkComponents {
    fn get(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        if let Some(b) = DirComponents(self.dir.clone()).read(hash) {
            return Some(b);
        }
        let t = Instant::now();
        match self.link.fetch(hash) {
            Ok(b) => {
                tracing::info!(
                    hash = %hex::encode(hash),
                    bytes = b.len(),
                    ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "component fetched from the orchestrator"
                );
                Some(b)
            }
            Err(e) => {
                tracing::warn!(hash = %hex::encode(hash), "component fetch failed: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

    use super::*;
    use zz_wire::frame::decode;
    use zz_wire::outbox::outbox;
    use zz_wire::{AppId, Principal, ReplicaId};

    /// An orchestrator on a thread: answers each `ComponentFetch` from
    /// `component` in chunks of `chunk` bytes (the real one sends 4 MiB),
    /// after dropping the first `lose` requests.
    fn serve(
        link: ComponentLink,
        component: Option<Vec<u8>>,
        chunk: usize,
        lose: usize,
    ) -> std::thread::JoinHandle<usize> {
        let (out, mut rx) = outbox(16, 1 << 20);
        let me = Identity::from_seed(
            Principal::Replica(ReplicaId {
                app: AppId(2),
                index: 1,
            }),
            [3; 32],
        );
        link.connect(out, me);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut asked = 0;
            while let Some(frame) = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .ok()
                    .flatten()
            }) {
                let Ok(Msg::ComponentFetch(f)) = decode::<Msg>(&frame) else {
                    panic!("not a fetch")
                };
                asked += 1;
                if asked <= lose {
                    continue;
                }
                let f = f.body;
                let reply = match &component {
                    Some(b) => {
                        let start = usize::try_from(f.offset).unwrap();
                        ComponentChunk {
                            hash: f.hash,
                            offset: f.offset,
                            total: b.len() as u64,
                            bytes: b[start..(start + chunk).min(b.len())].to_vec(),
                        }
                    }
                    None => ComponentChunk {
                        hash: f.hash,
                        offset: f.offset,
                        total: 0,
                        bytes: Vec::new(),
                    },
                };
                link.offer(reply);
            }
            asked
        })
    }

    #[test]
    fn a_component_arrives_in_chunks_and_is_checked_against_its_hash() {
        let component: Vec<u8> = (0..10_000u32).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let hash = component_hash(&component);
        let link = ComponentLink::default();
        let server = serve(link.clone(), Some(component.clone()), 3000, 0);
        assert_eq!(link.fetch(&hash).unwrap(), component);
        drop(link);
        assert_eq!(server.join().unwrap(), 4, "10,000 bytes in chunks of 3,000");
    }

    #[test]
    fn a_lost_request_is_asked_again() {
        let component = vec![7u8; 100];
        let hash = component_hash(&component);
        let link = ComponentLink::default();
        let _server = serve(link.clone(), Some(component.clone()), 4096, 1);
        assert_eq!(link.fetch(&hash).unwrap(), component);
    }

    #[test]
    fn bytes_that_do_not_match_the_hash_are_refused() {
        let link = ComponentLink::default();
        let _server = serve(link.clone(), Some(vec![1, 2, 3]), 4096, 0);
        let err = link.fetch(&component_hash(b"something else")).unwrap_err();
        assert!(err.contains("do not match"), "{err}");
    }

    #[test]
    fn a_component_the_orchestrator_lacks_fails_at_once() {
        let link = ComponentLink::default();
        let _server = serve(link.clone(), None, 4096, 0);
        // Told so, not timed out.
        let err = link.fetch(&[9; 32]).unwrap_err();
        assert!(err.contains("does not hold"), "{err}");
    }
}
