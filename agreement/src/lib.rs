//! zz agreement cluster: the pure PBFT core, reply voting, and the TCP driver.

pub mod core;
