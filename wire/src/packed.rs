//! A list of values encoded once, by whoever made them, and carried as bytes.
//!
//! A client packs its batch's requests, a replica its batch's responses.
//! Agreement nodes order, hash, store and forward the bytes without ever
//! decoding an item: per request they touch no allocator and no serde, which
//! was most of a node's per-request cost when batches travelled as
//! `Vec<AppRequest>`. Only the ends decode (replicas the requests, the
//! client the responses).
//!
//! Layout: each item is a LEB128 length followed by that many bytes of its
//! postcard encoding. Decoding a `Packed` off the wire checks the framing
//! (every length fits in what follows, nothing trails), so a received list
//! always has a definite item count; an item whose bytes are not a valid
//! `T` is only found out when it is unpacked, by every correct replica alike.

use bytes::Bytes;
use serde::de::{DeserializeOwned, Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// Most items one packed list may hold.
pub const MAX_ITEMS: usize = 1 << 20;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PackError {
    #[error("an item length runs past the end of the list")]
    Truncated,
    #[error("more than {MAX_ITEMS} items")]
    TooMany,
    #[error("an item does not decode: {0}")]
    Item(String),
}

pub struct Packed<T> {
    bytes: Bytes,
    count: usize,
    _item: PhantomData<fn() -> T>,
}

impl<T> Clone for Packed<T> {
    fn clone(&self) -> Self {
        Packed {
            bytes: self.bytes.clone(),
            count: self.count,
            _item: PhantomData,
        }
    }
}

impl<T> PartialEq for Packed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Packed<T> {}

impl<T> Default for Packed<T> {
    fn default() -> Self {
        Packed {
            bytes: Bytes::new(),
            count: 0,
            _item: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Packed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Packed({} items, {} bytes)", self.count, self.bytes.len())
    }
}

impl<T: Serialize> Packed<T> {
    /// Encodes `items` in order.
    pub fn pack<'a>(items: impl IntoIterator<Item = &'a T>) -> Result<Self, PackError>
    where
        T: 'a,
    {
        let mut buf = Vec::new();
        let mut item = Vec::new();
        let mut count = 0;
        for v in items {
            item.clear();
            item = postcard::to_extend(v, item).map_err(|e| PackError::Item(e.to_string()))?;
            put_len(&mut buf, item.len());
            buf.extend_from_slice(&item);
            count += 1;
        }
        if count > MAX_ITEMS {
            return Err(PackError::TooMany);
        }
        Ok(Packed {
            bytes: Bytes::from(buf),
            count,
            _item: PhantomData,
        })
    }
}

impl<T> Packed<T> {
    /// Takes encoded bytes, checking their framing.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, PackError> {
        let count = frames(&bytes).try_fold(0usize, |n, f| f.map(|_| n + 1))?;
        if count > MAX_ITEMS {
            return Err(PackError::TooMany);
        }
        Ok(Packed {
            bytes,
            count,
            _item: PhantomData,
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded list, as it travels and as digests cover it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Each item's encoded bytes.
    pub fn raw_items(&self) -> impl Iterator<Item = &[u8]> {
        // The framing was checked when the list was made or received.
        frames(&self.bytes).map_while(Result::ok)
    }
}

impl<T: DeserializeOwned> Packed<T> {
    /// Each item decoded; an undecodable item is an `Err` in its place.
    pub fn iter(&self) -> impl Iterator<Item = Result<T, PackError>> + '_ {
        self.raw_items()
            .map(|b| postcard::from_bytes(b).map_err(|e| PackError::Item(e.to_string())))
    }

    /// Every item, or the first that does not decode.
    pub fn unpack(&self) -> Result<Vec<T>, PackError> {
        self.iter().collect()
    }
}

fn put_len(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = u8::try_from(n & 0x7f).unwrap_or(0);
        n >>= 7;
        if n == 0 {
            buf.push(b);
            return;
        }
        buf.push(b | 0x80);
    }
}

/// Splits `bytes` into its items' encodings, failing at the first length
/// that is malformed or runs past the end.
fn frames(mut bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], PackError>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let mut len = 0usize;
        let mut shift = 0;
        let mut i = 0;
        loop {
            let Some(&b) = bytes.get(i) else {
                bytes = &[];
                return Some(Err(PackError::Truncated));
            };
            i += 1;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            // A length needs at most five groups (items are far below 4 GiB).
            if shift > 28 {
                bytes = &[];
                return Some(Err(PackError::Truncated));
            }
        }
        let Some(item) = bytes.get(i..i + len) else {
            bytes = &[];
            return Some(Err(PackError::Truncated));
        };
        bytes = &bytes[i + len..];
        Some(Ok(item))
    })
}

impl<T> Serialize for Packed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.bytes)
    }
}

impl<'de, T> Deserialize<'de> for Packed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a packed list")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
        }
        let bytes = d.deserialize_bytes(V)?;
        Packed::from_bytes(bytes).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppRequest, AppResponse};

    #[test]
    fn packed_items_come_back_in_order_through_the_wire() {
        let reqs: Vec<AppRequest> = (0..300)
            .map(|i| AppRequest::new("PUT", &format!("/kv/k{i}"), vec![b'x'; i]))
            .collect();
        let p = Packed::pack(&reqs).expect("pack");
        assert_eq!(p.len(), 300);
        let wire = postcard::to_stdvec(&p).expect("encode");
        let back: Packed<AppRequest> = postcard::from_bytes(&wire).expect("decode");
        assert_eq!(back, p);
        assert_eq!(back.len(), 300);
        assert_eq!(back.unpack().expect("unpack"), reqs);
    }

    #[test]
    fn bad_framing_is_refused_when_received() {
        let p = Packed::pack(&[AppResponse::new(200, b"ok".to_vec())]).expect("pack");
        let mut bytes = p.as_bytes().to_vec();
        bytes.push(5); // an item of five bytes, none of which follow
        assert_eq!(
            Packed::<AppResponse>::from_bytes(Bytes::from(bytes)).err(),
            Some(PackError::Truncated)
        );
        // A length that never ends.
        let endless = Bytes::from(vec![0xffu8; 8]);
        assert_eq!(
            Packed::<AppResponse>::from_bytes(endless).err(),
            Some(PackError::Truncated)
        );
        let wire = postcard::to_stdvec(&vec![3u8, 1]).expect("encode");
        assert!(postcard::from_bytes::<Packed<AppResponse>>(&wire).is_err());
    }

    #[test]
    fn an_item_that_does_not_decode_fails_alone() {
        // Two well-framed items: a response, then one byte that is no response.
        let good = Packed::pack(&[AppResponse::new(404, Vec::new())]).expect("pack");
        let mut bytes = good.as_bytes().to_vec();
        bytes.extend_from_slice(&[1, 0xff]);
        let p = Packed::<AppResponse>::from_bytes(Bytes::from(bytes)).expect("framing is fine");
        assert_eq!(p.len(), 2);
        let items: Vec<_> = p.iter().collect();
        assert_eq!(items[0], Ok(AppResponse::new(404, Vec::new())));
        assert!(matches!(items[1], Err(PackError::Item(_))));
        assert!(p.unpack().is_err());
    }
}
