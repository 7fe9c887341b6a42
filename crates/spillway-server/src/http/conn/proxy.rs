//! The PROXY protocol header a trusted balancer sends before the first request
//! (`--proxy-protocol`): the client address in it replaces the balancer's as the peer.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Front;
use crate::http::proxy_protocol::{parse, Parsed};
use crate::http::request::Peer;
use crate::telemetry::throttle::Throttle;

/// Any client can repeat an untrusted connection at will: one line per period.
static UNTRUSTED_LOG: Throttle = Throttle::new(std::time::Duration::from_secs(10));

/// Reads the header and takes the client's address from it; bytes read past the header
/// are left in `rest`. False means: drop the connection (untrusted peer, malformed
/// header, timeout).
pub(super) async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: &mut Peer,
    front: &Front,
    rest: &mut BytesMut,
) -> bool {
    let trusted = peer
        .ip
        .is_none_or(|ip| front.cfg.forwarded_allow_ips.contains(ip));
    if !trusted {
        if let Some(suppressed) = UNTRUSTED_LOG.allow() {
            tracing::warn!(client = %peer.label, suppressed, "PROXY protocol header from an untrusted peer (see --forwarded-allow-ips); closing (at most one such line per 10 s; suppressed: how many were left out before this one)");
        }
        return false;
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + front.cfg.header_timeout;
    loop {
        match parse(&buf) {
            Ok(Parsed::Done { header, consumed }) => {
                if let Some(src) = header.source {
                    // From here on the client is this address, for every decision: a
                    // client behind the balancer is not trusted because the balancer is.
                    peer.ip = Some(src.ip().to_canonical());
                    peer.remote_addr = src.ip().to_string().into();
                    peer.remote_port = src.port().to_string().into();
                    peer.label = src.to_string();
                }
                rest.extend_from_slice(&buf[consumed..]);
                return true;
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => {
                tracing::warn!(client = %peer.label, error = %e, "bad PROXY protocol header; closing");
                return false;
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
}
