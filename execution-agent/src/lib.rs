//! zz execution agent: runs one execution replica of one app.
//!
//! - `app`: the deterministic app runtime and the built-in apps (`kv`, `bank`);
//! - `merkle` and `state`: objects in a bucketed Merkle tree, with
//!   copy-on-write snapshots of recent checkpoints;
//! - `orders`: the f+1 rule for committed orders;
//! - `replica` and `catchup`: the replica state machine, including wake-up
//!   by on-demand, hash-verified state fetch;
//! - `source`: where fetched state comes from (network or in-memory peers);
//! - `faults`: the fault modes the orchestrator can switch on;
//! - `net`, `cli`: the TCP driver and the command line of `zz-agent`;
//! - `unreplicated`: `zz-agent serve`, one app alone, the benchmark ceiling.
//!
//! A replica executes only what f+1 agreement nodes ordered and accepts
//! fetched state only when it matches a certified checkpoint's Merkle
//! root; it decides nothing about its own life (the orchestrator does).

pub mod app;
pub mod catchup;
pub mod cli;
pub mod components;
pub mod faults;
pub mod merkle;
pub mod net;
pub mod orders;
pub mod replica;
pub mod source;
pub mod state;
pub mod unreplicated;

pub use replica::{Config, Out, Replica, Stats};
pub use source::{FetchError, LocalPeers, StateSource};
