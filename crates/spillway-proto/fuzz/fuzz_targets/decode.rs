//! Feeds arbitrary bytes to the frame decoder: it must never panic, and every frame it
//! accepts must re-encode to exactly the bytes it came from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use spillway_proto::decode;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut consumed = 0usize;
    while let Ok(Some(frame)) = decode(&mut buf) {
        let frame_len = data.len() - consumed - buf.len();
        let mut again = BytesMut::new();
        frame
            .encode(&mut again)
            .expect("a decoded frame fits the wire format");
        assert_eq!(&again[..], &data[consumed..consumed + frame_len]);
        consumed += frame_len;
    }
});
