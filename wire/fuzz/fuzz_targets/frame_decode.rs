#![no_main]
//! Any bytes a peer sends must decode to a message or an error, never a panic;
//! a decoded message must re-encode and verify without panicking.

use libfuzzer_sys::fuzz_target;
use zz_wire::frame::{decode, encode};
use zz_wire::{Keyring, Msg};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode::<Msg>(data) {
        let _ = encode(&msg);
        let _ = msg.verify(&Keyring::new());
        let _ = msg.kind();
    }
});
