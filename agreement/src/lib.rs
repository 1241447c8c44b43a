//! zz agreement cluster: the pure PBFT core, reply voting, and the TCP driver.

pub mod client;
pub mod core;
pub mod node;
pub mod sim;
pub mod voting;
