//! Length-delimited postcard frames with a maximum size, and the
//! authenticated handshake that opens every zz link.
//!
//! The handshake proves both ends' keys and agrees on fresh link keys (an
//! ephemeral X25519 exchange whose shares both ends sign). From then on
//! every frame is sealed with AES-256-GCM under its direction's key, the
//! frame counter as nonce: encrypted, since links cross a data
//! center's network with request bodies and state, and authenticated. So a
//! frame on an established link comes from the proven peer, unaltered, in
//! order, once — which is what lets messages that are never shown to a
//! third party (commits, orders, execution and client replies) go without
//! a signature of their own, as PBFT's MACs do.

use crate::crypto::{Identity, Keyring, Signature};
use crate::digest::Hasher;
use crate::ids::Principal;
use crate::msg::Msg;
use bytes::{BufMut, Bytes, BytesMut};
use curve25519_dalek::montgomery::MontgomeryPoint;
use futures::{SinkExt, StreamExt};
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite, LengthDelimitedCodec};

/// Frames larger than this are refused (a kv value is ≤ 1 MiB; batches and
/// state chunks are cut to fit).
pub const MAX_FRAME: usize = 16 << 20;

/// Bytes of the tag that ends every frame once a link is established.
pub const TAG_LEN: usize = 16;

/// 2: link keys and per-frame tags. 4: frames encrypted.
pub const PROTOCOL_VERSION: u32 = 4;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame does not decode: {0}")]
    Malformed(postcard::Error),
    #[error("frame of {0} bytes exceeds the maximum")]
    TooLarge(usize),
    #[error("frame tag does not verify (altered, replayed, reordered or forged)")]
    BadTag,
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
    #[error("peer {0} sent a key share that gives no shared secret")]
    BadShare(Principal),
}

pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .length_field_type::<u32>()
        .new_codec()
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    let mut v = postcard::to_stdvec(msg).map_err(FrameError::Malformed)?;
    if v.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(v.len()));
    }
    // The Vec grew by doubling and `Bytes` keeps its spare capacity: a large
    // frame waiting in a link queue would hold up to twice its size.
    if v.len() >= 4096 && v.capacity() - v.len() > v.len() / 4 {
        v.shrink_to_fit();
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

/// Length-delimited frames; once `set_key` is called, every frame is
/// sealed (AES-256-GCM, the frame counter as nonce) and opened on decode.
/// One codec per direction: the reader's and the writer's keys and
/// counters differ.
pub struct LinkCodec {
    inner: LengthDelimitedCodec,
    cipher: Option<LessSafeKey>,
    counter: u64,
}

/// Largest frame before the handshake completes: a hello or a proof is a
/// few dozen bytes, and a peer that proved nothing gets no big buffer.
const HANDSHAKE_MAX_FRAME: usize = 512;

impl LinkCodec {
    fn new() -> Self {
        LinkCodec {
            inner: LengthDelimitedCodec::builder()
                .max_frame_length(HANDSHAKE_MAX_FRAME)
                .length_field_type::<u32>()
                .new_codec(),
            cipher: None,
            counter: 0,
        }
    }

    /// Seals every frame from now on. `Err` only if the key does not fit
    /// the cipher (a 32-byte key always fits AES-256): the link is then
    /// dropped, never left in clear.
    fn set_key(&mut self, key: [u8; 32]) -> Result<(), ring::error::Unspecified> {
        self.cipher = Some(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key)?));
        self.counter = 0;
        self.inner.set_max_frame_length(MAX_FRAME + TAG_LEN);
        Ok(())
    }
}

/// The nonce of the next frame: its counter, which moves on. A key seals
/// one link direction's frames only, so no nonce repeats under a key.
fn next_nonce(counter: &mut u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    *counter += 1;
    Nonce::assume_unique_for_key(n)
}

impl Decoder for LinkCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(mut frame) = self.inner.decode(src).map_err(io_to_frame)? else {
            return Ok(None);
        };
        if let Some(cipher) = &self.cipher {
            let Some(body_len) = frame.len().checked_sub(TAG_LEN) else {
                return Err(FrameError::BadTag);
            };
            let tag = Tag::try_from(&frame.split_off(body_len)[..]).map_err(|_| FrameError::BadTag)?;
            cipher
                .open_in_place_separate_tag(next_nonce(&mut self.counter), Aad::empty(), tag, &mut frame, 0..)
                .map_err(|_| FrameError::BadTag)?;
        }
        if frame.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(frame.len()));
        }
        Ok(Some(frame))
    }
}

impl Encoder<Bytes> for LinkCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        if frame.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(frame.len()));
        }
        let Some(cipher) = &self.cipher else {
            return self.inner.encode(frame, dst).map_err(io_to_frame);
        };
        let len = u32::try_from(frame.len() + TAG_LEN).map_err(|_| FrameError::TooLarge(frame.len()))?;
        let nonce = next_nonce(&mut self.counter);
        dst.reserve(4 + frame.len() + TAG_LEN);
        dst.put_u32(len);
        let start = dst.len();
        dst.extend_from_slice(&frame);
        let tag = cipher
            .seal_in_place_separate_tag(nonce, Aad::empty(), &mut dst[start..])
            .map_err(|_| FrameError::TooLarge(frame.len()))?;
        dst.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// The receiving half of an established link.
pub struct LinkReader {
    inner: FramedRead<OwnedReadHalf, LinkCodec>,
}

/// The sending half of an established link.
pub struct LinkWriter {
    inner: FramedWrite<OwnedWriteHalf, LinkCodec>,
}

impl LinkReader {
    /// The next message; `Ok(None)` when the peer closed cleanly. Any error
    /// means the peer is at fault or gone: the caller closes the link.
    pub async fn recv(&mut self) -> Result<Option<Msg>, FrameError> {
        Ok(self.recv_sized().await?.map(|(m, _)| m))
    }

    /// As `recv`, with the frame's length (for per-link byte budgets).
    pub async fn recv_sized(&mut self) -> Result<Option<(Msg, usize)>, FrameError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(buf)) => decode(&buf).map(|m| Some((m, buf.len()))),
        }
    }

    async fn recv_raw<T: for<'a> Deserialize<'a>>(&mut self) -> Result<T, LinkError> {
        match self.inner.next().await {
            None => Err(LinkError::Closed),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(buf)) => Ok(decode(&buf)?),
        }
    }
}

impl LinkWriter {
    pub async fn send(&mut self, msg: &Msg) -> Result<(), FrameError> {
        let b = encode(msg)?;
        self.inner.send(b).await
    }

    /// Sends a frame already encoded with `encode` (to encode once, send to many).
    pub async fn send_encoded(&mut self, b: Bytes) -> Result<(), FrameError> {
        self.inner.send(b).await
    }

    /// Queues without flushing; call `flush` after a burst.
    pub async fn feed_encoded(&mut self, b: Bytes) -> Result<(), FrameError> {
        self.inner.feed(b).await
    }

    pub async fn flush(&mut self) -> Result<(), FrameError> {
        SinkExt::<Bytes>::flush(&mut self.inner).await
    }

    async fn send_raw<T: Serialize>(&mut self, v: &T) -> Result<(), FrameError> {
        let b = encode(v)?;
        self.inner.send(b).await
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Hello {
    version: u32,
    who: Principal,
    nonce: [u8; 32],
    /// Ephemeral X25519 share for this link's keys.
    share: [u8; 32],
}

#[derive(Debug, Serialize, Deserialize)]
struct Proof {
    sig: Signature,
}

/// What a side signs: both identities, both nonces and both key shares, so
/// the link keys are bound to the two proven identities and to this
/// connection. Naming the verifier keeps a principal from relaying a proof
/// made for it to a third party (an unknown key share, as SIGMA and Noise's
/// XX pattern prevent by the same binding).
fn proof_digest(prover: &Hello, verifier: &Hello) -> crate::Digest {
    fn who(h: Hasher, p: Principal) -> Hasher {
        match p {
            Principal::Node(n) => h.u8(0).u16(n.0),
            Principal::Replica(r) => h.u8(1).u16(r.app.0).u16(r.index),
            Principal::Client(c) => h.u8(2).u16(c.0),
            Principal::Orchestrator => h.u8(3),
        }
    }
    let h = who(who(Hasher::new("zz/handshake/v3"), prover.who), verifier.who);
    h.bytes(&prover.nonce)
        .bytes(&verifier.nonce)
        .bytes(&prover.share)
        .bytes(&verifier.share)
        .finish()
}

/// Each direction's frame key: from the shared secret and both hellos, the
/// side with the lower nonce being "a". `None` when the shares give no
/// secret (a low-order share) or the nonces collide.
fn link_keys(mine: &Hello, theirs: &Hello, secret: [u8; 32]) -> Option<([u8; 32], [u8; 32])> {
    let shared = MontgomeryPoint(theirs.share).mul_clamped(secret).to_bytes();
    if shared == [0; 32] || mine.nonce == theirs.nonce {
        return None;
    }
    let (a, b) = if mine.nonce < theirs.nonce {
        (mine, theirs)
    } else {
        (theirs, mine)
    };
    let mut material = Vec::with_capacity(160);
    material.extend_from_slice(&shared);
    for h in [a, b] {
        material.extend_from_slice(&h.nonce);
        material.extend_from_slice(&h.share);
    }
    let from_a = blake3::derive_key("zz link frames a->b v2 aes-256-gcm", &material);
    let from_b = blake3::derive_key("zz link frames b->a v2 aes-256-gcm", &material);
    Some(if mine.nonce < theirs.nonce {
        (from_a, from_b)
    } else {
        (from_b, from_a)
    })
}

/// Runs the mutual handshake on a fresh connection: each side names itself
/// with a fresh nonce and key share, then signs both. Returns the proven
/// peer identity and the link's halves, keyed. `expect`, when given, is the
/// only peer accepted (the dialling side knows whom it called).
pub async fn handshake(
    stream: TcpStream,
    me: &Identity,
    keys: &Keyring,
    expect: Option<Principal>,
) -> Result<(Principal, LinkReader, LinkWriter), LinkError> {
    stream.set_nodelay(true).ok();
    let (r, w) = stream.into_split();
    let mut reader = LinkReader {
        inner: FramedRead::new(r, LinkCodec::new()),
    };
    let mut writer = LinkWriter {
        inner: FramedWrite::new(w, LinkCodec::new()),
    };
    let run = async {
        let mut nonce = [0u8; 32];
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        rand::thread_rng().fill_bytes(&mut secret);
        let mine = Hello {
            version: PROTOCOL_VERSION,
            who: me.who,
            nonce,
            share: MontgomeryPoint::mul_base_clamped(secret).to_bytes(),
        };
        writer.send_raw(&mine).await?;
        let theirs: Hello = reader.recv_raw().await?;
        if theirs.version != PROTOCOL_VERSION {
            return Err(LinkError::Version(theirs.version));
        }
        if let Some(expected) = expect {
            if expected != theirs.who {
                return Err(LinkError::WrongPeer {
                    got: theirs.who,
                    expected,
                });
            }
        }
        if !keys.contains(&theirs.who) {
            return Err(LinkError::UnknownPeer(theirs.who));
        }
        let (send_key, recv_key) = link_keys(&mine, &theirs, secret).ok_or(LinkError::BadShare(theirs.who))?;
        let sig = me.sign_digest(&proof_digest(&mine, &theirs));
        writer.send_raw(&Proof { sig }).await?;
        let proof: Proof = reader.recv_raw().await?;
        keys.verify_digest(theirs.who, &proof_digest(&theirs, &mine), &proof.sig)
            .map_err(|_| LinkError::BadProof(theirs.who))?;
        // Frames after the proofs are tagged; any already buffered are
        // decoded only from here on, with the key.
        let keyed = writer.inner.encoder_mut().set_key(send_key);
        keyed
            .and(reader.inner.decoder_mut().set_key(recv_key))
            .map_err(|_| LinkError::BadShare(theirs.who))?;
        Ok(theirs.who)
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

    /// Unknown key share (issue 25, item 12): m, a principal of the
    /// deployment, takes a's call and relays it to b, renaming b's hello as
    /// its own towards a and signing its own proof. a must not end up on a
    /// link that b takes for a's: each proof names whom it is for.
    #[tokio::test]
    async fn a_relayed_handshake_is_refused() {
        let a = Identity::from_seed(Principal::Node(NodeId(0)), [1; 32]);
        let b = Identity::from_seed(Principal::Node(NodeId(1)), [2; 32]);
        let m = Identity::from_seed(Principal::Node(NodeId(2)), [3; 32]);
        let mut ring = Keyring::new();
        for id in [&a, &b, &m] {
            ring.insert(id.who, id.public());
        }
        let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b_addr = lb.local_addr().unwrap();
        let ring_b = ring.clone();
        let at_b = tokio::spawn(async move {
            let (s, _) = lb.accept().await.unwrap();
            handshake(s, &b, &ring_b, None).await.map(|x| x.0)
        });
        let lm = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let m_addr = lm.local_addr().unwrap();
        let relay = tokio::spawn(async move {
            let (from_a, _) = lm.accept().await.unwrap();
            let (ra, wa) = from_a.into_split();
            let mut ra = LinkReader {
                inner: FramedRead::new(ra, LinkCodec::new()),
            };
            let mut wa = LinkWriter {
                inner: FramedWrite::new(wa, LinkCodec::new()),
            };
            let (rb, wb) = TcpStream::connect(b_addr).await.unwrap().into_split();
            let mut rb = LinkReader {
                inner: FramedRead::new(rb, LinkCodec::new()),
            };
            let mut wb = LinkWriter {
                inner: FramedWrite::new(wb, LinkCodec::new()),
            };
            let hello_a: Hello = ra.recv_raw().await.unwrap();
            wb.send_raw(&hello_a).await.unwrap();
            let hello_b: Hello = rb.recv_raw().await.unwrap();
            let renamed = Hello { who: m.who, ..hello_b };
            wa.send_raw(&renamed).await.unwrap();
            let proof_a: Proof = ra.recv_raw().await.unwrap();
            wb.send_raw(&proof_a).await.unwrap();
            let _ = rb.recv_raw::<Proof>().await;
            let sig = m.sign_digest(&proof_digest(&renamed, &hello_a));
            let _ = wa.send_raw(&Proof { sig }).await;
            // Keep both connections open until the ends have decided.
            tokio::time::sleep(Duration::from_millis(500)).await;
        });
        let s = TcpStream::connect(m_addr).await.unwrap();
        let _ = handshake(s, &a, &ring, Some(Principal::Node(NodeId(2)))).await;
        let b_saw = at_b.await.unwrap();
        assert!(
            matches!(b_saw, Err(LinkError::BadProof(_))),
            "b took the relayed link for a's: {b_saw:?}"
        );
        relay.abort();
    }

    /// Before the peer has proven anything a frame is a hello or a proof,
    /// a few dozen bytes: a length prefix of megabytes is refused at once
    /// instead of being buffered.
    #[tokio::test]
    async fn a_large_frame_before_the_handshake_is_refused() {
        let (_, b, ring) = pair();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            handshake(s, &b, &ring, None).await.map(|x| x.0)
        });
        let mut s = TcpStream::connect(addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
        s.write_all(&[0u8; 1024]).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), server).await;
        assert!(
            matches!(got, Ok(Ok(Err(LinkError::Frame(FrameError::TooLarge(_)))))),
            "{got:?}"
        );
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
        let mut raw = ((MAX_FRAME + TAG_LEN + 1) as u32).to_be_bytes().to_vec();
        raw.extend_from_slice(&[0u8; 64]);
        w.inner.get_mut().try_write(&raw).ok();
        assert!(matches!(server.await.unwrap(), Err(FrameError::TooLarge(_))));
    }

    #[tokio::test]
    async fn an_established_link_carries_messages_and_refuses_an_injected_frame() {
        let (a, b, ring) = pair();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ring2 = ring.clone();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (_, mut r, _) = handshake(s, &b, &ring2, None).await.unwrap();
            let first = r.recv().await;
            let second = r.recv().await;
            (first, second)
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let (_, _, mut w) = handshake(s, &a, &ring, None).await.unwrap();
        let hb = heartbeat(&a);
        w.send(&hb).await.unwrap();
        // A well-formed frame written past the codec, as an on-path attacker
        // could: it has no valid tag.
        let body = encode(&hb).unwrap();
        let mut raw = ((body.len() + TAG_LEN) as u32).to_be_bytes().to_vec();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(&[0u8; TAG_LEN]);
        w.inner.get_mut().try_write(&raw).ok();
        let (first, second) = server.await.unwrap();
        assert_eq!(first.unwrap().unwrap(), hb);
        assert!(matches!(second, Err(FrameError::BadTag)));
    }

    fn heartbeat(id: &Identity) -> Msg {
        Msg::Heartbeat(id.sign(crate::Heartbeat {
            from: id.who,
            app: crate::AppId(0),
            view: 1,
            last_executed: 2,
            last_checkpoint: 0,
            fetched_objects: 0,
            stale_objects: 0,
            time_ms: 3,
        }))
    }

    /// Two codecs with one key, as the two ends of one direction.
    fn keyed_pair() -> (LinkCodec, LinkCodec) {
        let (mut tx, mut rx) = (LinkCodec::new(), LinkCodec::new());
        tx.set_key([7; 32]).unwrap();
        rx.set_key([7; 32]).unwrap();
        (tx, rx)
    }

    #[test]
    fn tagged_frames_decode_in_order_only() {
        let (mut tx, mut rx) = keyed_pair();
        let (mut f1, mut f2) = (BytesMut::new(), BytesMut::new());
        tx.encode(Bytes::from_static(b"one"), &mut f1).unwrap();
        tx.encode(Bytes::from_static(b"two"), &mut f2).unwrap();
        // In order: both decode.
        let mut wire = f1.clone();
        wire.extend_from_slice(&f2);
        assert_eq!(&rx.decode(&mut wire).unwrap().unwrap()[..], b"one");
        assert_eq!(&rx.decode(&mut wire).unwrap().unwrap()[..], b"two");
        // Replayed: the counter has moved on.
        let mut again = f2.clone();
        assert!(matches!(rx.decode(&mut again), Err(FrameError::BadTag)));
        // Reordered, on a fresh pair.
        let (_, mut rx) = keyed_pair();
        let mut swapped = f2.clone();
        assert!(matches!(rx.decode(&mut swapped), Err(FrameError::BadTag)));
        // One flipped bit, on a fresh pair.
        let (_, mut rx) = keyed_pair();
        let mut flipped = f1.clone();
        let last = flipped.len() - TAG_LEN - 1;
        flipped[last] ^= 1;
        assert!(matches!(rx.decode(&mut flipped), Err(FrameError::BadTag)));
        // Another key.
        let mut rx = LinkCodec::new();
        rx.set_key([8; 32]).unwrap();
        let mut other = f1;
        assert!(matches!(rx.decode(&mut other), Err(FrameError::BadTag)));
    }

    /// Links cross a data center's network: what a frame carries (request
    /// bodies, state) must not be readable on the way (issue 24, item 4).
    #[test]
    fn a_keyed_frame_does_not_carry_its_bytes_in_clear() {
        let (mut tx, mut rx) = keyed_pair();
        let secret = b"the tenant's private value, twice: the tenant's private value";
        let mut wire = BytesMut::new();
        tx.encode(Bytes::from_static(secret), &mut wire).unwrap();
        assert!(
            !wire.windows(16).any(|w| secret.windows(16).any(|s| s == w)),
            "the frame's bytes appear on the wire"
        );
        assert_eq!(&rx.decode(&mut wire).unwrap().unwrap()[..], &secret[..]);
    }

    #[test]
    fn both_ends_derive_crossed_keys_and_a_low_order_share_gives_none() {
        let hello = |n: u8, secret: [u8; 32]| Hello {
            version: PROTOCOL_VERSION,
            who: Principal::Node(NodeId(u16::from(n))),
            nonce: [n; 32],
            share: MontgomeryPoint::mul_base_clamped(secret).to_bytes(),
        };
        let (sa, sb) = ([1u8; 32], [2u8; 32]);
        let (ha, hb) = (hello(1, sa), hello(2, sb));
        let (a_send, a_recv) = link_keys(&ha, &hb, sa).unwrap();
        let (b_send, b_recv) = link_keys(&hb, &ha, sb).unwrap();
        assert_eq!(a_send, b_recv);
        assert_eq!(b_send, a_recv);
        assert_ne!(a_send, a_recv);
        // The identity point as a share: every secret gives zero.
        let mut bad = hello(3, sa);
        bad.share = [0; 32];
        assert!(link_keys(&ha, &bad, sa).is_none());
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
