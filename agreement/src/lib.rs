//! zz agreement cluster: orders every app's requests and vouches for the
//! execution replicas' answers.
//!
//! - `core`: the PBFT state machine, `step(now, Input) -> Vec<Action>`, pure
//!   (no clock, no I/O): normal case, checkpoints, view change, the
//!   throughput monitor, durable-state records;
//! - `voting`: the reply voter (f+1 matching replies, incidents, WAKE and
//!   FAULT votes);
//! - `node`: the driver that runs the cores and voters of every app over
//!   TCP links, timers and the redb store (`NodeMachine` is its pure part);
//! - `client`: the BFT client (signed batches to the primary, to every
//!   node when late; a result once f+1 nodes vouch for it);
//! - `sim`: the agreement-only deterministic simulator (the whole-system one
//!   is the `zz-sim` crate).
//!
//! It must not know how replicas run (processes or VMs: the orchestrator's
//! business) nor execute any app; it never trusts a single replica's or
//! node's word where the protocol needs f+1 or 2f+1.

pub mod client;
pub mod core;
pub mod node;
pub mod sim;
pub mod voting;
