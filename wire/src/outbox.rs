//! A link's send queue: bounded in frames and in bytes, never waited on by
//! the sender, and shed when its reader has stopped taking frames.
//!
//! Every process sends to its peers through one of these per link; a writer
//! task drains it onto the socket. A frame for a full queue is refused at
//! once (the protocol re-sends or fetches whatever matters). A link whose
//! peer stopped reading (a paused standby, a faulty or wedged replica) would
//! otherwise keep a full queue for as long as the peer stays away. So when
//! the writer has been stuck on one frame for the stall period (it took a
//! frame and has not come back for another) and a queue of at least
//! [`SHED_MIN_BYTES`] (or a full one) is refused another frame, the queue
//! drops everything it holds and refuses frames until the writer asks for
//! more. A writer with no connection (one it has not made yet, or one that
//! broke: a crashed peer, a peer whose impersonator dialled in instead) says
//! so with [`OutboxRx::disconnected`] and counts as stuck from then on. A
//! writer that waits for frames is never stalled, and a few small frames
//! queued behind a stuck or unconnected writer (a link's first messages,
//! queued before its peer is up) are kept.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a writer may be stuck on one frame before its queue is shed.
pub const STALL: Duration = Duration::from_secs(1);
/// A stalled queue holding less than this (and not full) is kept.
pub const SHED_MIN_BYTES: usize = 1 << 20;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the link's queue is full")]
    Full,
    /// This frame and the `frames` the queue held were dropped: its writer
    /// has been stuck on one frame for the stall period.
    #[error("the link's writer is stalled; its queue of {frames} frames was shed")]
    Shed { frames: usize },
    /// The queue was shed and its writer has not asked for more since.
    #[error("the link's writer is stalled")]
    Stalled,
    #[error("the link's writer is gone")]
    Closed,
}

/// The sending side of a link's queue; clone it freely.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The writer's side of a link's queue.
#[derive(Debug)]
pub struct OutboxRx {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_frames: usize,
    max_bytes: usize,
    stall: Duration,
    shed_min_bytes: usize,
    state: Mutex<State>,
    /// Wakes the writer: a frame was queued, or the last sender went away.
    ready: Notify,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// Since when the writer has been writing the frame it last took;
    /// `None` while it waits for one (or has not started).
    busy_since: Option<Instant>,
    /// Shed: refuse frames until the writer asks for more.
    stalled: bool,
    senders: usize,
    writer: bool,
    /// Frames dropped by shedding, over the queue's life.
    shed_frames: u64,
}

/// A queue of at most `max_frames` frames and `max_bytes` bytes (one frame
/// is always let through onto an empty queue, whatever its size), shed
/// when its writer stalls ([`STALL`], [`SHED_MIN_BYTES`]).
pub fn outbox(max_frames: usize, max_bytes: usize) -> (Outbox, OutboxRx) {
    outbox_with_stall(max_frames, max_bytes, STALL, SHED_MIN_BYTES)
}

/// [`outbox`] with another stall period and shedding threshold.
pub fn outbox_with_stall(
    max_frames: usize,
    max_bytes: usize,
    stall: Duration,
    shed_min_bytes: usize,
) -> (Outbox, OutboxRx) {
    let shared = Arc::new(Shared {
        max_frames: max_frames.max(1),
        max_bytes,
        stall,
        shed_min_bytes,
        state: Mutex::new(State {
            frames: VecDeque::new(),
            bytes: 0,
            busy_since: None,
            stalled: false,
            senders: 1,
            writer: true,
            shed_frames: 0,
        }),
        ready: Notify::new(),
    });
    (Outbox { shared: shared.clone() }, OutboxRx { shared })
}

impl Shared {
    /// The state stays consistent under every panic point (each update is a
    /// few plain assignments), so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// The writer takes the next frame, and is busy writing it from now.
    fn take(&mut self) -> Option<Bytes> {
        let b = self.frames.pop_front()?;
        self.bytes -= b.len();
        self.busy_since = Some(Instant::now());
        Some(b)
    }
}

impl Outbox {
    /// Queues `frame`, or refuses it at once.
    pub fn try_send(&self, frame: Bytes) -> Result<(), Refused> {
        let s = &self.shared;
        let mut st = s.lock();
        if !st.writer {
            return Err(Refused::Closed);
        }
        if st.stalled {
            return Err(Refused::Stalled);
        }
        let len = frame.len();
        let full = st.frames.len() >= s.max_frames || (!st.frames.is_empty() && st.bytes + len > s.max_bytes);
        let stuck = st.busy_since.is_some_and(|t| t.elapsed() >= s.stall);
        if stuck && (full || st.bytes + len >= s.shed_min_bytes) {
            let n = st.frames.len();
            st.shed_frames += n as u64 + 1;
            st.stalled = true;
            st.bytes = 0;
            let shed = std::mem::take(&mut st.frames);
            drop(st);
            drop(shed); // freed outside the lock
            tracing::warn!(
                frames = n,
                "link writer stuck on one frame for {:?}; its queue is shed",
                s.stall
            );
            return Err(Refused::Shed { frames: n });
        }
        if full {
            return Err(Refused::Full);
        }
        st.bytes += len;
        st.frames.push_back(frame);
        drop(st);
        s.ready.notify_one();
        Ok(())
    }

    /// Whether the writer is gone.
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().writer
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.shared.lock().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames dropped by shedding so far.
    pub fn shed_frames(&self) -> u64 {
        self.shared.lock().shed_frames
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let last = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.shared.ready.notify_one();
        }
    }
}

impl OutboxRx {
    /// The next frame; `None` once the queue is empty and every sender is
    /// gone. Asking for a frame is progress: it ends a stall.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            {
                let mut st = self.shared.lock();
                st.stalled = false;
                if let Some(b) = st.take() {
                    return Some(b);
                }
                st.busy_since = None;
                if st.senders == 0 {
                    return None;
                }
            }
            // A frame queued since the check left a permit: no lost wake-up.
            self.shared.ready.notified().await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.shared.lock().take()
    }

    /// The writer has no connection to write to (not yet, or no longer):
    /// until it asks for a frame again, it counts as stuck since now (or
    /// since it got stuck on a frame, if earlier). Without this, a link to
    /// a peer that is down would hold its whole bound for as long as the
    /// peer stays away.
    pub fn disconnected(&mut self) {
        self.shared.lock().busy_since.get_or_insert_with(Instant::now);
    }
}

impl Drop for OutboxRx {
    fn drop(&mut self) {
        let shed = {
            let mut st = self.shared.lock();
            st.writer = false;
            st.bytes = 0;
            std::mem::take(&mut st.frames)
        };
        drop(shed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[tokio::test]
    async fn a_queue_is_bounded_in_frames() {
        let (tx, mut rx) = outbox(3, 1 << 20);
        for _ in 0..3 {
            tx.try_send(frame(10)).expect("room");
        }
        assert_eq!(tx.try_send(frame(10)), Err(Refused::Full));
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(10));
        tx.try_send(frame(10)).expect("room again");
        assert_eq!(tx.len(), 3);
    }

    #[tokio::test]
    async fn a_queue_is_bounded_in_bytes_but_always_takes_one_frame() {
        let (tx, mut rx) = outbox(8192, 1000);
        tx.try_send(frame(600)).expect("room");
        assert_eq!(tx.try_send(frame(600)), Err(Refused::Full), "1200 bytes > 1000");
        tx.try_send(frame(400)).expect("exactly 1000 bytes fits");
        assert_eq!(tx.try_send(frame(1)), Err(Refused::Full));
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(600));
        assert_eq!(rx.try_recv().map(|b| b.len()), Some(400));
        assert!(rx.try_recv().is_none());
        // A frame larger than the whole bound still goes onto an empty queue.
        tx.try_send(frame(5000)).expect("one frame always fits");
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(5000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_queue_is_shed_and_refuses_frames_until_its_writer_asks_again() {
        let (tx, mut rx) = outbox(5, 1 << 20);
        for _ in 0..5 {
            tx.try_send(frame(100)).expect("room");
        }
        // The writer takes one frame and gets stuck writing it.
        assert!(rx.try_recv().is_some());
        tx.try_send(frame(100)).expect("room for one more");
        // Full, but the writer took its frame just now: refused, nothing shed.
        assert_eq!(tx.try_send(frame(100)), Err(Refused::Full));
        assert_eq!(tx.len(), 5);
        tokio::time::advance(STALL).await;
        assert_eq!(tx.try_send(frame(100)), Err(Refused::Shed { frames: 5 }));
        assert_eq!(tx.len(), 0, "the queue is shed");
        assert_eq!(tx.shed_frames(), 6);
        // Empty now, yet still refusing: the writer has not come back.
        assert_eq!(tx.try_send(frame(100)), Err(Refused::Stalled));
        assert!(rx.try_recv().is_none());
        // The writer asks for more (its peer reads again): frames flow.
        let next = tokio::spawn(async move { rx.recv().await.map(|b| b.len()) });
        tokio::task::yield_now().await;
        tx.try_send(frame(7)).expect("writer is back");
        assert_eq!(next.await.expect("join"), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_writer_sheds_a_queue_past_shed_min_bytes_before_it_is_full() {
        let (tx, mut rx) = outbox_with_stall(8192, 32 << 20, STALL, 1000);
        tx.try_send(frame(10)).expect("room");
        assert!(rx.try_recv().is_some(), "the writer takes a frame and gets stuck");
        tokio::time::advance(STALL * 2).await;
        // Small frames behind a stuck writer are kept (a link's first
        // messages, queued before its peer reads)...
        for _ in 0..9 {
            tx.try_send(frame(100)).expect("under shed_min_bytes");
        }
        // ...until they reach shed_min_bytes.
        assert_eq!(tx.try_send(frame(100)), Err(Refused::Shed { frames: 9 }));
        assert_eq!(tx.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_waits_or_never_started_is_never_stalled() {
        // Never started (a link not connected yet): bounded, never shed.
        let (tx, _rx) = outbox_with_stall(4, 1 << 20, STALL, 1);
        for _ in 0..4 {
            tx.try_send(frame(100)).expect("room");
        }
        tokio::time::advance(STALL * 10).await;
        assert_eq!(tx.try_send(frame(100)), Err(Refused::Full));
        assert_eq!(tx.len(), 4);
        // Waiting for frames for a long time is not being stuck.
        let (tx, mut rx) = outbox_with_stall(4, 1 << 20, STALL, 1);
        tx.try_send(frame(1)).expect("room");
        let writer = tokio::spawn(async move {
            let mut n = 0;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        tokio::task::yield_now().await;
        tokio::time::advance(STALL * 10).await;
        tx.try_send(frame(100)).expect("a waiting writer takes it");
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(writer.await.expect("join"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unconnected_writer_counts_as_stuck_until_it_asks_again() {
        let (tx, mut rx) = outbox_with_stall(8192, 32 << 20, STALL, 1000);
        rx.disconnected();
        for _ in 0..20 {
            tx.try_send(frame(100)).expect("kept: the stall period has not passed");
        }
        tokio::time::advance(STALL).await;
        rx.disconnected(); // a failed reconnect does not restart the clock
        assert_eq!(tx.try_send(frame(100)), Err(Refused::Shed { frames: 20 }));
        assert_eq!(tx.try_send(frame(100)), Err(Refused::Stalled));
        // Connected again: the writer asks for frames and they flow.
        let next = tokio::spawn(async move { rx.recv().await.map(|b| b.len()) });
        tokio::task::yield_now().await;
        tx.try_send(frame(7)).expect("writer is back");
        assert_eq!(next.await.expect("join"), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_whose_writer_keeps_taking_is_never_shed() {
        let (tx, mut rx) = outbox(2, 1 << 20);
        for _ in 0..10 {
            while tx.try_send(frame(1)).is_ok() {}
            tokio::time::advance(STALL / 2).await;
            assert!(rx.try_recv().is_some());
        }
        assert_eq!(tx.shed_frames(), 0);
        assert_eq!(tx.len(), 1);
    }

    #[tokio::test]
    async fn the_writer_ends_when_every_sender_is_gone_and_senders_see_a_gone_writer() {
        let (tx, mut rx) = outbox(8, 1 << 20);
        let tx2 = tx.clone();
        tx.try_send(frame(1)).expect("room");
        drop(tx);
        tx2.try_send(frame(2)).expect("room");
        drop(tx2);
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(1));
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(2));
        assert_eq!(rx.recv().await, None);

        let (tx, rx) = outbox(8, 1 << 20);
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(frame(1)), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_frame_and_for_the_last_sender_leaving() {
        let (tx, mut rx) = outbox(8, 1 << 20);
        let writer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(b) = rx.recv().await {
                got.push(b.len());
            }
            got
        });
        for len in 1..=5 {
            tokio::task::yield_now().await;
            tx.try_send(frame(len)).expect("room");
        }
        tokio::task::yield_now().await;
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("writer ended")
            .expect("join");
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
    }
}
