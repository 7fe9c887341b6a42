//! How a client connection begins: the PROXY header, the TLS handshake on TLS listeners,
//! and which HTTP version serves it (ALPN, or the HTTP/2 preface in cleartext).

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::prefixed::Prefixed;
use super::{h2, proxy, read_more, serve_h1, Front};
use crate::config::HttpVersions;
use crate::http::request::Peer;
use crate::http::tls::TlsState;

/// Serves one cleartext client connection until it closes, times out, or the server
/// drains. `slot` is held while the connection serves (it counts against
/// `--max-connections`).
pub(crate) async fn serve_connection<S, T>(
    mut io: S,
    mut peer: Peer,
    front: Arc<Front>,
    draining: watch::Receiver<bool>,
    slot: T,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Send + 'static,
{
    let accepted = Instant::now();
    let mut rbuf = BytesMut::with_capacity(8 * 1024);
    if front.cfg.proxy_protocol && !proxy::read_header(&mut io, &mut peer, &front, &mut rbuf).await
    {
        return;
    }
    if front.cfg.http != HttpVersions::Http1 {
        let deadline = accepted + front.cfg.header_timeout;
        match sniff_h2c(&mut io, &mut rbuf, deadline).await {
            Some(true) => {
                h2::serve(Prefixed::new(rbuf.freeze(), io), peer, front, draining).await;
                drop(slot);
                return;
            }
            Some(false) if front.cfg.http == HttpVersions::Http2 => {
                tracing::debug!(client = %peer.label, "not the HTTP/2 preface and --http is 2; closing");
                return;
            }
            Some(false) => {}
            None => return,
        }
    }
    serve_h1(io, rbuf, peer, front, draining, accepted, slot).await;
}

/// Serves one connection to a TLS listener: the PROXY header (before the handshake, as
/// HAProxy sends it), the handshake within `--header-timeout`, then HTTP/2 if ALPN chose
/// it, else HTTP/1.1.
pub(crate) async fn serve_tls_connection<T: Send + 'static>(
    mut tcp: tokio::net::TcpStream,
    mut peer: Peer,
    front: Arc<Front>,
    draining: watch::Receiver<bool>,
    slot: T,
    tls: Arc<TlsState>,
) {
    let accepted = Instant::now();
    let mut rbuf = BytesMut::new();
    if front.cfg.proxy_protocol && !proxy::read_header(&mut tcp, &mut peer, &front, &mut rbuf).await
    {
        return;
    }
    let deadline = accepted + front.cfg.header_timeout;
    let handshake = tls.acceptor().accept(Prefixed::new(rbuf.freeze(), tcp));
    let stream = match tokio::time::timeout_at(deadline.into(), handshake).await {
        Ok(Ok(s)) => s,
        failed => {
            if let Some(m) = &front.metrics {
                m.tls_handshake_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "no handshake within --header-timeout".to_owned(),
            };
            tracing::debug!(client = %peer.label, error = %why, "TLS handshake failed");
            return;
        }
    };
    let session = crate::http::tls::session_of(stream.get_ref().1);
    let h2 = session.h2;
    peer.tls = Some(Arc::new(session));
    if h2 {
        // ALPN said h2: the preface too must come within --header-timeout.
        let mut stream = stream;
        let mut rbuf = BytesMut::new();
        if sniff_h2c(&mut stream, &mut rbuf, deadline).await == Some(true) {
            h2::serve(Prefixed::new(rbuf.freeze(), stream), peer, front, draining).await;
        } else {
            tracing::debug!(client = %peer.label, "no HTTP/2 preface within --header-timeout after ALPN h2; closing");
        }
        drop(slot);
    } else if front.cfg.http == HttpVersions::Http2 {
        tracing::debug!(client = %peer.label, "TLS client did not choose h2 and --http is 2; closing");
    } else {
        serve_h1(
            stream,
            BytesMut::new(),
            peer,
            front,
            draining,
            accepted,
            slot,
        )
        .await;
    }
}

/// Whether a cleartext connection starts with the HTTP/2 preface (prior knowledge, RFC
/// 9113 §3.3): reads until the bytes stop matching it or all of it is there. `None`: the
/// client left or stalled past `deadline`.
async fn sniff_h2c<S: AsyncRead + Unpin>(
    io: &mut S,
    rbuf: &mut BytesMut,
    deadline: Instant,
) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    loop {
        let n = rbuf.len().min(PREFACE.len());
        if rbuf[..n] != PREFACE[..n] {
            return Some(false);
        }
        if n == PREFACE.len() {
            return Some(true);
        }
        match tokio::time::timeout_at(deadline.into(), read_more(io, rbuf)).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
