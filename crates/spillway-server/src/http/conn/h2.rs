//! HTTP/2 connections (ALPN `h2` on TLS listeners, prior knowledge on cleartext ones),
//! framed by hyper's h2 server. Every stream is one request through the same head rules,
//! body holding, admission queue, exchange rules and deadlines, metrics and access log as
//! HTTP/1.1 (its wire is in `h2_stream`); what differs is only the framing, which h2 owns.
//!
//! Floods: at most `--http2-max-streams` streams run at once per connection (more are
//! refused by the protocol itself); a header list is at most [`HEADER_LIST`] bytes
//! decoded (HPACK makes a few bytes on the wire into many, and each queued stream holds
//! its head), a client that opens streams and resets them before they are served (the
//! rapid-reset attack, CVE-2023-44487) has its connection closed with `ENHANCE_YOUR_CALM`
//! after 20 such resets (h2's pending-accept limit), and after 1024 protocol-error resets
//! over the connection's life; one that resets them once accepted gets GOAWAY after
//! [`PREMATURE_RESETS`] resets of streams younger than [`PREMATURE`], if they are most of
//! its streams. A stream reset after it was admitted cancels its request on the worker at
//! once, like a client leaving an HTTP/1.1 connection.
//!
//! Quiet connections: the preface must come within `--header-timeout` (checked before
//! this module, for TLS and cleartext alike), a connection with no stream for
//! `--keep-alive` is closed with GOAWAY, and one that does not go within
//! `--header-timeout` of that (a client that never acknowledges the closing PING) is
//! dropped.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::h2_stream::stream;
use super::Front;
use crate::http::request::Peer;
/// Largest decoded header list (names, values and 32 bytes a field, RFC 9113 §6.5.2),
/// unless the HTTP/1.1 head limits are smaller.
pub(crate) const HEADER_LIST: usize = 32 * 1024;
/// A stream the client resets younger than this counts toward [`PREMATURE_RESETS`].
const PREMATURE: Duration = Duration::from_secs(1);
/// Premature resets that close a connection (when they are most of its streams).
const PREMATURE_RESETS: usize = 32;

/// What the streams of one connection share.
pub(super) struct Shared {
    pub front: Arc<Front>,
    pub peer: Peer,
    /// Streams being served, and when the last one ended: for the idle timeout.
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// Streams so far, and those the client reset young.
    streams: AtomicUsize,
    premature: AtomicUsize,
    /// Told when the premature resets are too many.
    calm: tokio::sync::Notify,
}

/// Counts a stream as active while it lives, and as reset young if it goes unfinished
/// (hyper drops a stream's task when the client resets it).
pub(super) struct Active {
    shared: Arc<Shared>,
    started: Instant,
    /// The stream ended as the protocol meant it to (not reset by the client).
    pub finished: bool,
}

impl Active {
    pub fn new(s: &Arc<Shared>) -> Active {
        s.active.fetch_add(1, Ordering::Relaxed);
        s.streams.fetch_add(1, Ordering::Relaxed);
        Active {
            shared: s.clone(),
            started: Instant::now(),
            finished: false,
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let s = &self.shared;
        if !self.finished && self.started.elapsed() < PREMATURE {
            let premature = s.premature.fetch_add(1, Ordering::Relaxed) + 1;
            if premature >= PREMATURE_RESETS && premature * 2 > s.streams.load(Ordering::Relaxed) {
                s.calm.notify_one();
            }
        }
        if s.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            *s.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

/// Serves one HTTP/2 connection until the client closes it, it idles past
/// `--keep-alive`, or the server drains (GOAWAY, then the open streams finish).
pub(crate) async fn serve<S>(
    io: S,
    peer: Peer,
    front: Arc<Front>,
    mut draining: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(front.cfg.http2_max_streams)
        .max_header_list_size(header_list_limit(&front.limits) as u32)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        // A peer that vanished without a FIN is found within a minute.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let label = peer.label.clone();
    let shared = Arc::new(Shared {
        front: front.clone(),
        peer,
        active: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
        streams: AtomicUsize::new(0),
        premature: AtomicUsize::new(0),
        calm: tokio::sync::Notify::new(),
    });
    let s = shared.clone();
    let svc = service_fn(move |req| {
        let s = s.clone();
        async move { Ok::<_, Infallible>(stream(req, s).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Since when the connection is told to go (GOAWAY sent).
    let mut closing: Option<Instant> = None;
    loop {
        let idle_for = || {
            (shared.active.load(Ordering::Relaxed) == 0).then(|| {
                shared
                    .idle_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed()
            })
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(client = %label, error = %e, "HTTP/2 connection ended");
                }
                return;
            }
            _ = draining.changed(), if closing.is_none() => {
                closing = Some(Instant::now());
                conn.as_mut().graceful_shutdown();
            }
            _ = shared.calm.notified(), if closing.is_none() => {
                tracing::warn!(client = %label, resets = shared.premature.load(Ordering::Relaxed), "HTTP/2 client resets most of its streams as soon as they start (rapid reset); GOAWAY");
                closing = Some(Instant::now());
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => match closing {
                None => {
                    if idle_for().is_some_and(|d| d >= front.cfg.keep_alive) {
                        tracing::debug!(client = %label, "HTTP/2 connection idle past --keep-alive; closing");
                        closing = Some(Instant::now());
                        conn.as_mut().graceful_shutdown();
                    }
                }
                // Its streams are done, and the client does not close: it never
                // acknowledged the GOAWAY's PING, or ignores the GOAWAY.
                Some(since) => {
                    if idle_for().is_some() && since.elapsed() >= front.cfg.header_timeout {
                        tracing::debug!(client = %label, "HTTP/2 client did not close after GOAWAY; dropping the connection");
                        return;
                    }
                }
            }
        }
    }
}

/// The largest decoded header list taken: [`HEADER_LIST`], or room for one field of
/// `--limit-request-field-size` if that is larger, and never more than an HTTP/1.1 head.
pub(crate) fn header_list_limit(limits: &crate::h1::head::HeadLimits) -> usize {
    HEADER_LIST
        .max(limits.field_size + 1024)
        .min(limits.head_bytes())
        .min(u32::MAX as usize)
}
