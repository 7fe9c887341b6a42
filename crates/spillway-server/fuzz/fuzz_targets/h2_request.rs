//! Feeds arbitrary HPACK header blocks to the HTTP/2 request path: the h2 server decodes
//! each (under the front's header-list limit) as one request's HEADERS frame, and what it
//! accepts goes through the front's head rules to the frame a worker gets. Nothing may
//! panic; an accepted head's frame must decode back to itself, with `:authority` as its
//! `HTTP_HOST`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// h2's default SETTINGS_MAX_FRAME_SIZE: a longer block would be a framing error.
const MAX_FRAME: usize = 16_384;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte: whether the HEADERS frame ends the stream (no body), and whether the
    // block starts with a valid request's pseudo-headers (`GET http://x/`), so that the
    // fuzzer spends its time on the fields.
    let Some((&knob, rest)) = data.split_first() else {
        return;
    };
    let end_stream = knob & 1 == 1;
    let mut block = Vec::with_capacity(rest.len() + 8);
    if knob & 2 == 2 {
        // Indexed :method GET, :scheme http, :path /; literal :authority "x".
        block.extend_from_slice(b"\x82\x86\x84\x01\x01x");
    }
    block.extend_from_slice(rest);
    block.truncate(MAX_FRAME);
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(0x4, 0, 0, &[]));
    wire.extend(frame(0x1, 0x4 | if end_stream { 0x1 } else { 0 }, 1, &block));
    runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        if client.write_all(&wire).await.is_err() {
            return;
        }
        // The client says nothing more: the server reads to the end and stops (its own
        // frames go into the duplex buffer, unread).
        if client.shutdown().await.is_err() {
            return;
        }
        let mut builder = h2::server::Builder::new();
        builder.max_header_list_size(spillway_server::fuzzing::h2_header_list());
        let Ok(mut conn) = builder.handshake::<_, bytes::Bytes>(server).await else {
            return;
        };
        let accepted = conn.accept().await;
        drop(client);
        if let Some(Ok((req, _respond))) = accepted {
            let (parts, body) = req.into_parts();
            let _ = spillway_server::fuzzing::h2_request(&parts, body.is_end_stream());
        }
    });
});
