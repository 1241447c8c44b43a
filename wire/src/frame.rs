//! Length-delimited postcard frames with a maximum size, and the
//! authenticated handshake that opens every zz link.

use crate::crypto::{Identity, Keyring, Signature};
use crate::digest::Hasher;
use crate::ids::Principal;
use crate::msg::Msg;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Frames larger than this are refused (a kv value is ≤ 1 MiB; batches and
/// state chunks are cut to fit).
pub const MAX_FRAME: usize = 16 << 20;

pub const PROTOCOL_VERSION: u32 = 1;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame does not decode: {0}")]
    Malformed(postcard::Error),
    #[error("frame of {0} bytes exceeds the maximum")]
    TooLarge(usize),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("handshake timed out")]
    Timeout,
    #[error("peer speaks protocol version {0}, we speak {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("peer claims to be {0}, whose key is not in the deployment")]
    UnknownPeer(Principal),
    #[error("peer claims to be {got}, expected {expected}")]
    WrongPeer { got: Principal, expected: Principal },
    #[error("peer {0} failed to prove its key")]
    BadProof(Principal),
}

pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .length_field_type::<u32>()
        .new_codec()
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    let v = postcard::to_stdvec(msg).map_err(FrameError::Malformed)?;
    if v.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(v.len()));
    }
    Ok(Bytes::from(v))
}

pub fn decode<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> Result<T, FrameError> {
    if buf.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(buf.len()));
    }
    postcard::from_bytes(buf).map_err(FrameError::Malformed)
}

fn io_to_frame(e: std::io::Error) -> FrameError {
    // LengthDelimitedCodec reports an oversized length prefix as InvalidData.
    if e.kind() == std::io::ErrorKind::InvalidData {
        FrameError::TooLarge(0)
    } else {
        FrameError::Io(e)
    }
}

/// The receiving half of an established link.
pub struct LinkReader {
    inner: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
}

/// The sending half of an established link.
pub struct LinkWriter {
    inner: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
}

impl LinkReader {
    /// The next message; `Ok(None)` when the peer closed cleanly. Any error
    /// means the peer is at fault or gone: the caller closes the link.
    pub async fn recv(&mut self) -> Result<Option<Msg>, FrameError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(io_to_frame(e)),
            Some(Ok(buf)) => decode(&buf).map(Some),
        }
    }

    async fn recv_raw<T: for<'a> Deserialize<'a>>(&mut self) -> Result<T, LinkError> {
        match self.inner.next().await {
            None => Err(LinkError::Closed),
            Some(Err(e)) => Err(io_to_frame(e).into()),
            Some(Ok(buf)) => Ok(decode(&buf)?),
        }
    }
}

impl LinkWriter {
    pub async fn send(&mut self, msg: &Msg) -> Result<(), FrameError> {
        let b = encode(msg)?;
        self.inner.send(b).await.map_err(io_to_frame)
    }

    /// Sends a frame already encoded with `encode` (to encode once, send to many).
    pub async fn send_encoded(&mut self, b: Bytes) -> Result<(), FrameError> {
        self.inner.send(b).await.map_err(io_to_frame)
    }

    /// Queues without flushing; call `flush` after a burst.
    pub async fn feed_encoded(&mut self, b: Bytes) -> Result<(), FrameError> {
        self.inner.feed(b).await.map_err(io_to_frame)
    }

    pub async fn flush(&mut self) -> Result<(), FrameError> {
        SinkExt::<Bytes>::flush(&mut self.inner).await.map_err(io_to_frame)
    }

    async fn send_raw<T: Serialize>(&mut self, v: &T) -> Result<(), FrameError> {
        let b = encode(v)?;
        self.inner.send(b).await.map_err(io_to_frame)
    }
}

#[derive(Serialize, Deserialize)]
struct Hello {
    version: u32,
    who: Principal,
    nonce: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Proof {
    sig: Signature,
}

fn proof_digest(prover: Principal, prover_nonce: &[u8; 32], verifier_nonce: &[u8; 32]) -> crate::Digest {
    let h = Hasher::new("zz/handshake/v1");
    let h = match prover {
        Principal::Node(n) => h.u8(0).u16(n.0),
        Principal::Replica(r) => h.u8(1).u16(r.app.0).u16(r.index),
        Principal::Client(c) => h.u8(2).u16(c.0),
        Principal::Orchestrator => h.u8(3),
    };
    h.bytes(prover_nonce).bytes(verifier_nonce).finish()
}

/// Runs the mutual handshake on a fresh connection: each side names itself,
/// then signs the other's fresh nonce. Returns the proven peer identity.
/// `expect`, when given, is the only peer accepted (the dialling side knows
/// whom it called).
pub async fn handshake(
    stream: TcpStream,
    me: &Identity,
    keys: &Keyring,
    expect: Option<Principal>,
) -> Result<(Principal, LinkReader, LinkWriter), LinkError> {
    stream.set_nodelay(true).ok();
    let (r, w) = stream.into_split();
    let mut reader = LinkReader {
        inner: FramedRead::new(r, codec()),
    };
    let mut writer = LinkWriter {
        inner: FramedWrite::new(w, codec()),
    };
    let run = async {
        let mut nonce = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        writer
            .send_raw(&Hello {
                version: PROTOCOL_VERSION,
                who: me.who,
                nonce,
            })
            .await?;
        let hello: Hello = reader.recv_raw().await?;
        if hello.version != PROTOCOL_VERSION {
            return Err(LinkError::Version(hello.version));
        }
        if let Some(expected) = expect {
            if expected != hello.who {
                return Err(LinkError::WrongPeer {
                    got: hello.who,
                    expected,
                });
            }
        }
        if !keys.contains(&hello.who) {
            return Err(LinkError::UnknownPeer(hello.who));
        }
        let sig = me.sign_digest(&proof_digest(me.who, &nonce, &hello.nonce));
        writer.send_raw(&Proof { sig }).await?;
        let proof: Proof = reader.recv_raw().await?;
        keys.verify_digest(hello.who, &proof_digest(hello.who, &hello.nonce, &nonce), &proof.sig)
            .map_err(|_| LinkError::BadProof(hello.who))?;
        Ok(hello.who)
    };
    let peer = tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| LinkError::Timeout)??;
    Ok((peer, reader, writer))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use tokio::net::TcpListener;

    fn pair() -> (Identity, Identity, Keyring) {
        let a = Identity::from_seed(Principal::Node(NodeId(0)), [1; 32]);
        let b = Identity::from_seed(Principal::Node(NodeId(1)), [2; 32]);
        let mut ring = Keyring::new();
        ring.insert(a.who, a.public());
        ring.insert(b.who, b.public());
        (a, b, ring)
    }

    #[tokio::test]
    async fn handshake_proves_both_sides() {
        let (a, b, ring) = pair();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ring2 = ring.clone();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            handshake(s, &b, &ring2, None).await.map(|x| x.0)
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let (peer, _, _) = handshake(s, &a, &ring, Some(Principal::Node(NodeId(1)))).await.unwrap();
        assert_eq!(peer, Principal::Node(NodeId(1)));
        assert_eq!(server.await.unwrap().unwrap(), Principal::Node(NodeId(0)));
    }

    #[tokio::test]
    async fn impostor_without_the_key_fails() {
        let (a, b, ring) = pair();
        // Claims to be a0 but holds another key.
        let impostor = Identity::from_seed(a.who, [9; 32]);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ring2 = ring.clone();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            handshake(s, &b, &ring2, None).await.map(|x| x.0)
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let _ = handshake(s, &impostor, &ring, None).await;
        assert!(matches!(server.await.unwrap(), Err(LinkError::BadProof(_))));
    }

    #[tokio::test]
    async fn oversized_frame_is_refused() {
        let (a, b, ring) = pair();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ring2 = ring.clone();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (_, mut r, _) = handshake(s, &b, &ring2, None).await.unwrap();
            r.recv().await
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let (_, _, mut w) = handshake(s, &a, &ring, None).await.unwrap();
        // A raw length prefix past the maximum, then garbage.
        let mut raw = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        raw.extend_from_slice(&[0u8; 64]);
        w.inner.get_mut().try_write(&raw).ok();
        assert!(matches!(server.await.unwrap(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(matches!(
            decode::<Msg>(&[0xff, 0xff, 0xff]),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(decode::<Msg>(&[]), Err(FrameError::Malformed(_))));
    }
}
