//! Identities of every participant in a deployment.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Index of an app in the deployment's app list; every app has its own ordered log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AppId(pub u16);

/// Agreement node `a{n}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u16);

/// Execution replica `e{index}` of one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId {
    pub app: AppId,
    pub index: u16,
}

/// A BFT client: a gateway or a benchmark client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u16);

/// Anyone holding a key listed in the deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Principal {
    Node(NodeId),
    Replica(ReplicaId),
    Client(ClientId),
    Orchestrator,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{}", self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl fmt::Display for ReplicaId {
    /// Without the deployment at hand the app shows as its index; use
    /// `Deployment::replica_name` for the `kv-e0` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "app{}-e{}", self.app.0, self.index)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Node(n) => n.fmt(f),
            Principal::Replica(r) => r.fmt(f),
            Principal::Client(c) => c.fmt(f),
            Principal::Orchestrator => f.write_str("orchestrator"),
        }
    }
}
