//! Feeds arbitrary bytes to the PROXY protocol header parser: it must never panic, never
//! claim more bytes than it was given, never stay `Incomplete` past the spec's maximum
//! header length, and give the same answer for every longer buffer once it is `Done`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Included by path so the target fuzzes the server's own file without building the server
// crate (and its private module needs no `pub`). The module must keep depending on std and
// thiserror only.
#[path = "../../src/http/proxy_protocol.rs"]
#[allow(dead_code)]
mod proxy_protocol;

use proxy_protocol::{parse, Parsed, V1_MAX_LEN, V2_MAX_LEN};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Done { header, consumed }) => {
            assert!(consumed <= data.len());
            assert!(consumed <= V2_MAX_LEN);
            assert_eq!(header.source.is_some(), header.destination.is_some());
            // The header ends where it ends, whatever follows it.
            assert_eq!(
                parse(&data[..consumed]),
                Ok(Parsed::Done { header, consumed })
            );
        }
        Ok(Parsed::Incomplete) => {
            // A caller reading until Done or an error must never buffer past the maxima.
            let max = if data.first() == Some(&b'P') {
                V1_MAX_LEN
            } else {
                V2_MAX_LEN
            };
            assert!(data.len() < max);
        }
        Err(_) => {}
    }
});
