//! The HTTP-shaped request and response that apps execute.

use crate::digest::Hasher;
use serde::{Deserialize, Serialize};

/// Largest body an app request may carry (a kv value is at most 1 MiB).
pub const MAX_BODY: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRequest {
    pub method: String,
    pub path: String,
    /// A few headers that matter to the app (e.g. content-type), sorted by name.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl AppRequest {
    pub fn new(method: &str, path: &str, body: impl Into<Vec<u8>>) -> Self {
        AppRequest {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn hash_into(&self, mut h: Hasher) -> Hasher {
        h = h.str(&self.method).str(&self.path).u64(self.headers.len() as u64);
        for (k, v) in &self.headers {
            h = h.str(k).str(v);
        }
        h.bytes(&self.body)
    }
}

impl AppResponse {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        AppResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, v: &impl Serialize) -> Self {
        AppResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    pub fn hash_into(&self, mut h: Hasher) -> Hasher {
        h = h.u16(self.status).u64(self.headers.len() as u64);
        for (k, v) in &self.headers {
            h = h.str(k).str(v);
        }
        h.bytes(&self.body)
    }
}
