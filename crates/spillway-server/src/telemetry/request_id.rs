//! `X-Request-Id`: the id that ties a request's access-log line, its error-log lines, the
//! application's own logs (`HTTP_X_REQUEST_ID`) and the client's view (the response
//! header) together. A trusted peer's id (a load balancer that already assigned one) is
//! kept, so the id follows the request across hops; anyone else gets a fresh one, since
//! a client must not be able to make its requests look like another's.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use spillway_proto::RequestHead;

/// The environ key of the id, last in every request head.
pub(crate) const REQUEST_ID_KEY: &[u8] = b"HTTP_X_REQUEST_ID";

/// Longest id taken from a peer.
const MAX_LEN: usize = 128;

/// The request id `build_head` gave a head.
pub(crate) fn request_id_of(head: &RequestHead) -> Bytes {
    match head.headers.last() {
        Some((k, v)) if k.as_ref() == REQUEST_ID_KEY => v.clone(),
        _ => Bytes::new(),
    }
}

/// The id of a request: `offered` (the `X-Request-Id` it carries) if the peer is trusted
/// and the id is plain, else a new one.
pub(crate) fn choose(offered: Option<&[u8]>, trusted: bool) -> Bytes {
    match offered {
        Some(v) if trusted && is_plain(v) => Bytes::copy_from_slice(v),
        _ => generate(),
    }
}

/// Visible ASCII other than quotes and backslashes, at most [`MAX_LEN`] bytes: safe in
/// every log format without escaping, and in a response header.
fn is_plain(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_LEN
        && v.iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// A new id: 128 bits in the UUID version 4 layout. Unique within the process (a counter
/// goes in) and not guessable from outside it (mixed with a per-process random key); not a
/// secret, so no system call per request.
pub(crate) fn generate() -> Bytes {
    static KEY: OnceLock<std::hash::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let key = KEY.get_or_init(std::hash::RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let half = |salt: u64| {
        let mut h = key.build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        h.finish()
    };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&half(0x5157_11ed).to_be_bytes());
    b[8..].copy_from_slice(&half(0xc0ff_ee00).to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[(byte >> 4) as usize]);
        out.push(HEX[(byte & 15) as usize]);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_peers_plain_id_is_kept_and_anything_else_replaced() {
        assert_eq!(&choose(Some(b"req-42"), true)[..], b"req-42");
        for (offered, trusted) in [
            (Some(&b"req-42"[..]), false),
            (Some(&b"has space"[..]), true),
            (Some(&b"quote\""[..]), true),
            (Some(&b""[..]), true),
            (Some(&[b'x'; 129][..]), true),
            (None, true),
        ] {
            let id = choose(offered, trusted);
            assert_eq!(id.len(), 36, "{offered:?} {trusted}");
            assert_ne!(Some(&id[..]), offered);
        }
    }

    #[test]
    fn generated_ids_are_uuid_shaped_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        let s = std::str::from_utf8(&a).unwrap();
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{s}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{s}");
    }
}
