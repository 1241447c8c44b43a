//! The frame decoder under random, truncated and bit-flipped input: an error
//! or a message, never a panic. (The libFuzzer target in wire/fuzz digs deeper.)
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use proptest::prelude::*;
use zz_wire::frame::{decode, encode};
use zz_wire::{AppId, AppRequest, ClientBatch, ClientId, Identity, Keyring, Msg, Principal};

fn sample() -> Vec<u8> {
    let id = Identity::from_seed(Principal::Client(ClientId(0)), [3; 32]);
    let batch = id.sign(
        ClientBatch::new(
            ClientId(0),
            AppId(0),
            7,
            &[AppRequest::new("PUT", "/kv/a", b"value".to_vec())],
        )
        .expect("pack"),
    );
    encode(&Msg::Request(batch)).expect("encode").to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = decode::<Msg>(&data) {
            let _ = m.verify(&Keyring::new());
        }
    }

    #[test]
    fn truncated_frames_are_errors(cut in 0usize..1000) {
        let full = sample();
        let cut = cut % full.len();
        prop_assert!(decode::<Msg>(&full[..cut]).is_err());
    }

    #[test]
    fn flipped_bits_never_yield_a_verifying_forgery(pos in 0usize..1000, bit in 0u8..8) {
        let mut data = sample();
        let pos = pos % data.len();
        data[pos] ^= 1 << bit;
        let id = Identity::from_seed(Principal::Client(ClientId(0)), [3; 32]);
        let mut ring = Keyring::new();
        ring.insert(id.who, id.public());
        if let Ok(m) = decode::<Msg>(&data) {
            let original = decode::<Msg>(&sample()).expect("sample");
            // An altered message either fails its signature or names another
            // author than the sender (an unsigned kind, which only the
            // sender's own link could deliver: its frame tag and author check
            // refuse it, see frame.rs).
            if m != original {
                prop_assert!(m.verify(&ring).is_err() || m.author() != original.author());
            }
        }
    }

    #[test]
    fn a_packed_list_of_random_bytes_is_refused_or_yields_exactly_its_count(
        data in proptest::collection::vec(any::<u8>(), 0..256)
    ) {
        if let Ok(p) = zz_wire::Packed::<AppRequest>::from_bytes(bytes::Bytes::from(data)) {
            prop_assert_eq!(p.iter().count(), p.len());
            prop_assert_eq!(p.raw_items().map(<[u8]>::len).sum::<usize>() <= p.as_bytes().len(), true);
        }
    }
}
