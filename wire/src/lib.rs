//! Shared language of zz: identities, signed protocol messages, framing,
//! the link handshake and the deployment description.
//!
//! It holds types and their checks (signatures, frame bounds, config
//! validation) and no protocol logic: what a role does with a message
//! belongs to that role's crate.

pub mod app;
pub mod config;
pub mod crypto;
pub mod digest;
pub mod fdlimit;
pub mod frame;
pub mod ids;
pub mod msg;
pub mod outbox;
pub mod packed;
pub mod zip215;

pub use app::{AppRequest, AppResponse};
pub use config::{Deployment, GenerateOptions, Timing};
pub use crypto::{verify_all, Identity, Keyring, PublicKey, SigError, Signable, Signed};
pub use digest::{Digest, Hasher};
pub use ids::{AppId, ClientId, NodeId, Principal, ReplicaId};
pub use msg::*;
pub use packed::{PackError, Packed};
