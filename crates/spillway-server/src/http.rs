//! Client connections: HTTP/1.1 through hyper, request limits, the translation of a request
//! into a frame for a worker, and of the worker's frames back into a streamed response.
//!
//! Connection timing is ours, not hyper's: hyper's header-read timer also runs on an idle
//! keep-alive connection and closes it abruptly, which is exactly the proxy race
//! (`502 error reading status line`) we exist to avoid. Here an idle connection lives for
//! `--keep-alive` (announced in `Keep-Alive: timeout=N`), a started request head must
//! complete within `--header-timeout`, and every close lingers so that unread request bytes
//! do not turn our FIN into a RST that destroys the response.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame as BodyFrame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use spillway_proto::{
    BodyKind, Frame, Protocol, RequestHead, Scheme, INITIAL_REQUEST_WINDOW, INITIAL_RESPONSE_WINDOW,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch, Notify};

use crate::access_log::{AccessLogger, AccessRecord};
use crate::admission::{AdmissionError, Pool};
use crate::config::ServerConfig;
use crate::worker::{CreditGate, Event, WorkerLink};

/// What every connection shares: configuration, the pool, the access log.
pub(crate) struct Front {
    pub cfg: ServerConfig,
    pub pool: Arc<Pool>,
    pub access_log: Option<AccessLogger>,
    pub keep_alive_value: HeaderValue,
}

/// The two ends of a client connection, as environ strings.
pub(crate) struct Peer {
    /// The TCP peer's address (None for unix sockets): what trust is decided on, also
    /// when a PROXY header named another client address.
    pub ip: Option<std::net::IpAddr>,
    pub remote_addr: Bytes,
    pub remote_port: Bytes,
    pub server_name: Bytes,
    pub server_port: Bytes,
    /// `addr:port` for logs.
    pub label: String,
}

// ---------------------------------------------------------------------------------------
// Connection timing

struct ConnTimes {
    in_flight: u32,
    idle_since: Instant,
    /// First byte of a request head that has not completed yet.
    head_started: Option<Instant>,
    /// Bytes of a next request arrived since the connection went idle.
    bytes_pending: bool,
}

const HEADER_TIMEOUT: &str = "header timeout";

/// Timing state of one connection, updated by its IO and its requests.
pub(crate) struct ConnShared {
    times: Mutex<ConnTimes>,
    changed: Notify,
}

impl ConnShared {
    fn new() -> Arc<ConnShared> {
        let now = Instant::now();
        Arc::new(ConnShared {
            times: Mutex::new(ConnTimes {
                in_flight: 0,
                idle_since: now,
                // A new connection must send its first head within the header timeout.
                head_started: Some(now),
                bytes_pending: false,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ConnTimes> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_read(&self) {
        let mut t = self.lock();
        if t.in_flight == 0 {
            t.bytes_pending = true;
            if t.head_started.is_none() {
                t.head_started = Some(Instant::now());
                drop(t);
                self.changed.notify_one();
            }
        }
    }

    /// Safe to close now: no request in flight and no bytes of a next one received.
    /// (With a request in flight, hyper finishes it with `Connection: close` first.)
    fn may_close(&self) -> bool {
        let t = self.lock();
        t.in_flight > 0 || !t.bytes_pending
    }

    fn request_started(&self) {
        let mut t = self.lock();
        t.in_flight += 1;
        t.head_started = None;
        t.bytes_pending = false;
    }

    fn request_finished(&self) {
        let mut t = self.lock();
        t.in_flight -= 1;
        if t.in_flight == 0 {
            t.idle_since = Instant::now();
            drop(t);
            self.changed.notify_one();
        }
    }

    /// When the connection should be closed if nothing changes, and why.
    fn deadline(
        &self,
        keep_alive: Duration,
        header_timeout: Duration,
    ) -> Option<(Instant, &'static str)> {
        let t = self.lock();
        if t.in_flight > 0 {
            None
        } else if let Some(start) = t.head_started {
            Some((start + header_timeout, HEADER_TIMEOUT))
        } else {
            Some((t.idle_since + keep_alive, "keep-alive idle"))
        }
    }
}

/// Decrements the connection's in-flight count when the response is over.
struct InFlight(Arc<ConnShared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A client stream that reports reads to the connection timer and lingers on close.
struct ClientIo<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<S>,
    shared: Arc<ConnShared>,
    /// Bytes read past a PROXY header, replayed to hyper first.
    prefix: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            self.shared.on_read();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let r = Pin::new(inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.shared.on_read();
        }
        r
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, data),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// How long a closing connection keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for ClientIo<S> {
    fn drop(&mut self) {
        if let Some(mut s) = self.inner.take() {
            // Closing a socket with unread input makes the kernel send RST, which can
            // discard the response the client has not read yet. Send FIN, then drain.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = s.shutdown().await;
                    let mut sink = [0u8; 4096];
                    let _ = tokio::time::timeout(LINGER, async {
                        let mut total = 0usize;
                        while let Ok(n) = s.read(&mut sink).await {
                            total += n;
                            if n == 0 || total > 1 << 20 {
                                break;
                            }
                        }
                    })
                    .await;
                });
            }
        }
    }
}

/// Serves one client connection until it closes, times out, or the server drains.
/// `slot` is held for the life of the connection (it counts against `--max-connections`).
pub(crate) async fn serve_connection<S, T>(
    stream: S,
    peer: Peer,
    front: Arc<Front>,
    mut draining_rx: watch::Receiver<bool>,
    slot: T,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Send + 'static,
{
    let _slot = slot;
    let mut stream = stream;
    let mut peer = peer;
    let mut prefix = Bytes::new();
    if front.cfg.proxy_protocol {
        match read_proxy_header(&mut stream, &mut peer, &front).await {
            Some(rest) => prefix = rest,
            None => return,
        }
    }
    let shared = ConnShared::new();
    let io = ClientIo {
        inner: Some(stream),
        shared: shared.clone(),
        prefix,
    };
    let peer = Arc::new(peer);
    let svc = {
        let front = front.clone();
        let peer = peer.clone();
        let shared = shared.clone();
        service_fn(move |req| handle(req, front.clone(), peer.clone(), shared.clone()))
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .half_close(false)
        .header_read_timeout(None)
        .max_headers(front.cfg.limit_request_fields)
        // Pipelined requests are still served in order; but hyper's batched pipeline
        // flush loses its own 400/431 answers to malformed requests (seen with 1.12).
        .pipeline_flush(false);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let (keep_alive, header_timeout) = (front.cfg.keep_alive, front.cfg.header_timeout);
    let mut closing = false;
    let mut draining = false;
    loop {
        if draining && !closing && shared.may_close() {
            conn.as_mut().graceful_shutdown();
            closing = true;
        }
        let deadline = if closing {
            None
        } else if draining {
            // Bytes of a request are arriving: wait for its head, then close after it.
            let soon = Instant::now() + Duration::from_millis(20);
            Some(
                shared
                    .deadline(keep_alive, header_timeout)
                    .map_or((soon, "drain"), |(at, why)| (at.min(soon), why)),
            )
        } else {
            shared.deadline(keep_alive, header_timeout)
        };
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(client = %peer.label, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shared.changed.notified() => {}
            _ = sleep => {
                // Re-check: a request may have started while the timer was armed.
                if let Some((at, why)) = shared.deadline(keep_alive, header_timeout) {
                    if Instant::now() >= at {
                        tracing::debug!(client = %peer.label, reason = why, "closing connection");
                        if why == HEADER_TIMEOUT {
                            // A started head will not finish: hyper's graceful shutdown
                            // would wait for it forever. Drop the connection (lingering).
                            return;
                        }
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            changed = draining_rx.changed(), if !draining => {
                if changed.is_err() || *draining_rx.borrow() {
                    draining = true;
                }
            }
        }
    }
}

/// Reads the PROXY protocol header a trusted balancer sends first, and takes the client's
/// address from it. Returns the bytes read past the header, or `None` to drop the
/// connection (untrusted peer, malformed header, timeout).
async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: &mut Peer,
    front: &Front,
) -> Option<Bytes> {
    use crate::proxy_protocol::{parse, Parsed};
    let trusted = peer
        .ip
        .is_none_or(|ip| front.cfg.forwarded_allow_ips.contains(ip));
    if !trusted {
        tracing::warn!(client = %peer.label, "PROXY protocol header from an untrusted peer (see --forwarded-allow-ips); closing");
        return None;
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + front.cfg.header_timeout;
    loop {
        match parse(&buf) {
            Ok(Parsed::Done { header, consumed }) => {
                if let Some(src) = header.source {
                    peer.remote_addr = Bytes::from(src.ip().to_string());
                    peer.remote_port = Bytes::from(src.port().to_string());
                    peer.label = src.to_string();
                }
                // Trust for X-Forwarded-* stays with the balancer that connected.
                return Some(Bytes::copy_from_slice(&buf[consumed..]));
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => {
                tracing::warn!(client = %peer.label, error = %e, "bad PROXY protocol header; closing");
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests

/// A response body: fixed bytes from the front, or a stream from a worker.
pub(crate) struct Body {
    kind: Content,
    bytes_sent: u64,
    record: Option<AccessRecord>,
    front: Arc<Front>,
    _in_flight: InFlight,
}

enum Content {
    Full(Option<Bytes>),
    Stream(StreamBody),
}

struct StreamBody {
    events: mpsc::UnboundedReceiver<Event>,
    worker: Arc<WorkerLink>,
    stream: u32,
    done: bool,
    unacked: u64,
    /// The response failed; the error is reported on the next poll.
    failed: Option<&'static str>,
    /// `--timeout` as the longest silence between body chunks.
    timeout: Duration,
    /// Armed only while waiting, so a response that arrives whole never creates a timer.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The response body failed midway (application error or worker loss): hyper must cut
/// the connection so the client cannot mistake a partial body for a whole one.
#[derive(Debug, thiserror::Error)]
#[error("response aborted: {0}")]
pub(crate) struct BodyError(&'static str);

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Content::Full(b) => Poll::Ready(b.take().map(|b| Ok(BodyFrame::data(b)))),
            Content::Stream(s) => s.poll(cx),
        };
        if let Poll::Ready(Some(Ok(f))) = &polled {
            if let Some(d) = f.data_ref() {
                this.bytes_sent += d.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Content::Full(b) => b.is_none(),
            // A pending failure is not an end: hyper would close the chunked body cleanly.
            Content::Stream(s) => s.done && s.failed.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Content::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Content::Full(None) => SizeHint::with_exact(0),
            Content::Stream(_) => SizeHint::default(),
        }
    }
}

impl StreamBody {
    fn fail(
        &mut self,
        cx: &mut Context<'_>,
        why: &'static str,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, BodyError>>> {
        self.done = true;
        self.failed = Some(why);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<BodyFrame<Bytes>, BodyError>>> {
        if let Some(why) = self.failed.take() {
            return Poll::Ready(Some(Err(BodyError(why))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        // An error makes hyper drop the connection at once, losing what it has buffered.
        // Report Pending once first: hyper flushes on Pending, so the client receives
        // everything the application produced, then sees the cut.
        match self.events.poll_recv(cx) {
            Poll::Pending => {
                let timeout = self.timeout;
                let idle = self
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    self.idle = None;
                    self.worker.mark_stuck(self.stream);
                    self.worker.cancel(self.stream);
                    tracing::warn!(
                        worker = self.worker.pid,
                        timeout_s = timeout.as_secs(),
                        "response body stalled past the request timeout; cutting it; worker thread marked stuck"
                    );
                    return self.fail(cx, "the application stopped producing the body");
                }
                Poll::Pending
            }
            Poll::Ready(Some(Event::Body(b))) => {
                self.idle = None;
                // Replenish the worker's send window in batches, not per chunk: a credit
                // frame per chunk would cost the worker a wake-up per chunk.
                self.unacked += b.len() as u64;
                if self.unacked >= INITIAL_RESPONSE_WINDOW as u64 / 2 {
                    self.worker.send(&Frame::ResponseCredit {
                        stream: self.stream,
                        bytes: self.unacked as u32,
                    });
                    self.unacked = 0;
                }
                Poll::Ready(Some(Ok(BodyFrame::data(b))))
            }
            Poll::Ready(Some(Event::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Event::Abort)) => {
                self.fail(cx, "the application failed while streaming")
            }
            Poll::Ready(Some(Event::WorkerLost)) | Poll::Ready(None) => {
                self.fail(cx, "the worker died while streaming")
            }
            Poll::Ready(Some(Event::Head(_))) => {
                self.fail(cx, "the worker sent a second response head")
            }
        }
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        if !self.done {
            // The client went away (or hyper stopped at Content-Length): stop the app.
            self.worker.cancel(self.stream);
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let (Some(log), Some(rec)) = (&self.front.access_log, self.record.take()) {
            log.write(&rec, self.bytes_sent);
        }
    }
}

/// Cancels the worker's stream if the request future is dropped before a response head.
struct StreamGuard {
    worker: Arc<WorkerLink>,
    stream: u32,
    armed: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.armed {
            self.worker.cancel(self.stream);
        }
    }
}

fn simple(
    front: &Arc<Front>,
    in_flight: InFlight,
    status: StatusCode,
    msg: &'static str,
    close: bool,
    record: Option<AccessRecord>,
) -> Response<Body> {
    let mut r = Response::new(Body {
        kind: Content::Full(Some(Bytes::from_static(msg.as_bytes()))),
        bytes_sent: 0,
        record: record.map(|mut r| {
            r.status = status.as_u16();
            r
        }),
        front: front.clone(),
        _in_flight: in_flight,
    });
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else {
        h.insert(
            HeaderName::from_static("keep-alive"),
            front.keep_alive_value.clone(),
        );
    }
    r
}

/// Hop-by-hop headers are the server's business (PEP 3333 forbids them to applications).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// The environ key for a header name, or `None` for headers never passed to the app.
fn environ_key(name: &HeaderName) -> Option<Bytes> {
    let n = name.as_str();
    // Headers with `_` would collide with their `-` twin in the environ (X_Auth vs
    // X-Auth): a spoofing vector, dropped as nginx and gunicorn do. `Proxy` would become
    // HTTP_PROXY, which many HTTP clients read as their proxy setting (httpoxy).
    if n.contains('_') || n == "proxy" {
        return None;
    }
    let fixed: &'static [u8] = match n {
        "host" => b"HTTP_HOST",
        "content-type" => b"CONTENT_TYPE",
        "content-length" => b"CONTENT_LENGTH",
        "user-agent" => b"HTTP_USER_AGENT",
        "accept" => b"HTTP_ACCEPT",
        "accept-encoding" => b"HTTP_ACCEPT_ENCODING",
        "accept-language" => b"HTTP_ACCEPT_LANGUAGE",
        "connection" => b"HTTP_CONNECTION",
        "cookie" => b"HTTP_COOKIE",
        "authorization" => b"HTTP_AUTHORIZATION",
        "x-auth-token" => b"HTTP_X_AUTH_TOKEN",
        "x-forwarded-for" => b"HTTP_X_FORWARDED_FOR",
        "x-forwarded-proto" => b"HTTP_X_FORWARDED_PROTO",
        _ => {
            let mut k = Vec::with_capacity(5 + n.len());
            k.extend_from_slice(b"HTTP_");
            k.extend(n.bytes().map(|b| {
                if b == b'-' {
                    b'_'
                } else {
                    b.to_ascii_uppercase()
                }
            }));
            return Some(Bytes::from(k));
        }
    };
    Some(Bytes::from_static(fixed))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Repeated header lines joined with a comma, as one list.
fn join_values<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, x) in values.enumerate() {
        if i > 0 {
            v.push(b',');
        }
        v.extend_from_slice(x.as_bytes());
    }
    v
}

/// Why a request is refused before it reaches a worker.
struct Reject(StatusCode, &'static str);

fn build_head(
    req: &Request<Incoming>,
    front: &Front,
    peer: &Peer,
) -> Result<Box<RequestHead>, Reject> {
    let cfg = &front.cfg;
    let uri = req.uri();
    // RFC 9112 §3.2: authority-form is only for CONNECT (a tunnel no WSGI application can
    // serve), asterisk-form only for OPTIONS.
    if req.method() == http::Method::CONNECT {
        return Err(Reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed: CONNECT\n",
        ));
    }
    if uri.authority().is_some() && uri.scheme().is_none() {
        return Err(Reject(
            StatusCode::BAD_REQUEST,
            "Bad Request: authority-form target outside CONNECT\n",
        ));
    }
    if uri.path() == "*" && req.method() != http::Method::OPTIONS {
        return Err(Reject(
            StatusCode::BAD_REQUEST,
            "Bad Request: * target outside OPTIONS\n",
        ));
    }
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    if target.len() > cfg.limit_request_line {
        return Err(Reject(StatusCode::URI_TOO_LONG, "Request-URI Too Long\n"));
    }
    let protocol = match req.version() {
        Version::HTTP_10 => Protocol::Http10,
        Version::HTTP_11 => Protocol::Http11,
        _ => {
            return Err(Reject(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "HTTP Version Not Supported\n",
            ))
        }
    };
    let headers = req.headers();
    // RFC 9112 §3.2: a server MUST reject an HTTP/1.1 request without exactly one Host.
    match headers.get_all(header::HOST).iter().count() {
        0 if protocol == Protocol::Http11 => {
            return Err(Reject(
                StatusCode::BAD_REQUEST,
                "Bad Request: HTTP/1.1 requires a Host header\n",
            ))
        }
        0 | 1 => {}
        _ => {
            return Err(Reject(
                StatusCode::BAD_REQUEST,
                "Bad Request: more than one Host header\n",
            ))
        }
    }
    let mut pairs = Vec::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        if name.as_str().len() + first.len() + 2 > cfg.limit_request_field_size {
            return Err(Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request Header Fields Too Large\n",
            ));
        }
        let Some(key) = environ_key(name) else {
            continue;
        };
        let value = match values.next() {
            None => Bytes::copy_from_slice(first.as_bytes()),
            Some(second) => {
                // RFC 9110 §5.3 joins with a comma; Cookie is the exception (RFC 6265 uses "; ").
                let sep: &[u8] = if name == header::COOKIE { b"; " } else { b"," };
                let mut v = Vec::with_capacity(first.len() * 2 + 2);
                v.extend_from_slice(first.as_bytes());
                for more in std::iter::once(second).chain(values) {
                    if name.as_str().len() + more.len() + 2 > cfg.limit_request_field_size {
                        return Err(Reject(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "Request Header Fields Too Large\n",
                        ));
                    }
                    v.extend_from_slice(sep);
                    v.extend_from_slice(more.as_bytes());
                }
                Bytes::from(v)
            }
        };
        pairs.push((key, value));
    }
    let body = if headers.contains_key(header::TRANSFER_ENCODING) {
        BodyKind::Chunked
    } else {
        match req.body().size_hint().exact() {
            Some(0) | None => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
        }
    };
    let expect_continue = protocol == Protocol::Http11
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let raw_path = uri.path();
    let decoded: Bytes = if raw_path.contains('%') {
        Bytes::from(percent_encoding::percent_decode_str(raw_path).collect::<Vec<u8>>())
    } else {
        Bytes::copy_from_slice(raw_path.as_bytes())
    };
    let root = cfg.root_path.as_bytes();
    let (script_name, path_info) = if !root.is_empty()
        && decoded.starts_with(root)
        && (decoded.len() == root.len() || decoded[root.len()] == b'/')
    {
        (Bytes::copy_from_slice(root), decoded.slice(root.len()..))
    } else {
        (Bytes::copy_from_slice(root), decoded)
    };
    let mut remote_addr = peer.remote_addr.clone();
    let mut remote_port = peer.remote_port.clone();
    let mut scheme = Scheme::Http;
    let xff = headers.get(X_FORWARDED_FOR);
    let xfp = headers.get(X_FORWARDED_PROTO);
    if xff.is_some() || xfp.is_some() {
        // Only a trusted proxy may say who the client is; everyone else's claim is
        // passed to the app as the plain HTTP_X_FORWARDED_* header it is.
        if let Some(ip) = peer.ip.filter(|ip| cfg.forwarded_allow_ips.contains(*ip)) {
            let xff_joined = join_values(headers.get_all(X_FORWARDED_FOR).iter());
            let f = crate::trusted::forwarded_client(
                xff.map(|_| xff_joined.as_slice()),
                xfp.map(|v| v.as_bytes()),
                ip,
                &cfg.forwarded_allow_ips,
            );
            if let Some(client) = f.remote_addr {
                remote_addr = Bytes::from(client.to_string());
                remote_port = Bytes::new();
            }
            if f.https == Some(true) {
                scheme = Scheme::Https;
            }
        }
    }
    Ok(Box::new(RequestHead {
        method: Bytes::copy_from_slice(req.method().as_str().as_bytes()),
        script_name,
        path_info,
        query_string: Bytes::copy_from_slice(uri.query().unwrap_or("").as_bytes()),
        protocol,
        scheme,
        server_name: peer.server_name.clone(),
        server_port: peer.server_port.clone(),
        remote_addr,
        remote_port,
        body,
        expect_continue,
        headers: pairs,
    }))
}

async fn handle(
    req: Request<Incoming>,
    front: Arc<Front>,
    peer: Arc<Peer>,
    conn: Arc<ConnShared>,
) -> Result<Response<Body>, Infallible> {
    conn.request_started();
    let in_flight = InFlight(conn);
    // Timing is only needed for the access log: no clock read without one.
    let record = front
        .access_log
        .as_ref()
        .map(|_| AccessRecord::new(&req, &peer.label, Instant::now()));
    let head = match build_head(&req, &front, &peer) {
        Ok(h) => h,
        Err(Reject(status, msg)) => {
            tracing::debug!(client = %peer.label, status = status.as_u16(), "request rejected");
            return Ok(simple(&front, in_flight, status, msg, true, record));
        }
    };
    let wants_body = !matches!(head.body, BodyKind::Empty);
    let initial_credit = if head.expect_continue {
        0
    } else {
        INITIAL_REQUEST_WINDOW as u64
    };

    // A worker that just died may still have free slots in the pool until its supervisor
    // removes it: skip those (forgetting the lease, so the slot is not handed on) rather
    // than fail a request that never reached it. Only requests in flight on a dead worker
    // get 502.
    let mut head = head;
    // Queue time covers the whole admission step (also a retry past a worker that just
    // died); it is only needed for the access log.
    let admit_start = record.as_ref().map(|_| Instant::now());
    let queued_for = || admit_start.map_or(Duration::ZERO, |t| t.elapsed());
    let (queued, worker, stream, mut events, gate) = loop {
        let lease = match front.pool.acquire().await {
            Ok(l) => l,
            Err(e) => {
                let (msg, close) = match e {
                    AdmissionError::Closed => ("Service Unavailable: shutting down\n", true),
                    AdmissionError::QueueFull => {
                        ("Service Unavailable: too many requests waiting\n", false)
                    }
                    AdmissionError::QueueTimeout => {
                        ("Service Unavailable: no worker was free in time\n", false)
                    }
                };
                // Refused, not failed: the connection stays usable for the retry.
                let record = record.map(|mut r| {
                    r.queued = queued_for();
                    r
                });
                let mut r = simple(
                    &front,
                    in_flight,
                    StatusCode::SERVICE_UNAVAILABLE,
                    msg,
                    close,
                    record,
                );
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(front.pool.retry_after_secs()),
                );
                return Ok(r);
            }
        };
        let queued = queued_for();
        let worker = lease.worker.clone();
        match worker.open(lease, head, initial_credit) {
            Ok(o) => break (queued, worker, o.stream, o.events, o.gate),
            Err((mut lease, returned)) => {
                lease.forget();
                head = returned;
            }
        }
    };
    let mut guard = StreamGuard {
        worker: worker.clone(),
        stream,
        armed: true,
    };
    if wants_body {
        tokio::spawn(pump_body(req.into_body(), worker.clone(), stream, gate));
    }

    let deadline = tokio::time::Instant::now() + front.cfg.timeout;
    let first = match tokio::time::timeout_at(deadline, events.recv()).await {
        Ok(ev) => ev,
        Err(_) => {
            // The Python thread cannot be interrupted: mark it stuck (the supervisor
            // replaces the worker if it stays stuck) and answer the client now.
            guard.armed = false;
            worker.mark_stuck(stream);
            worker.cancel(stream);
            tracing::warn!(
                client = %peer.label,
                worker = worker.pid,
                generation = worker.generation,
                timeout_s = front.cfg.timeout.as_secs(),
                "request timed out; 504; its worker thread is marked stuck"
            );
            return Ok(simple(
                &front,
                in_flight,
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway Timeout\n",
                false,
                record,
            ));
        }
    };
    let head = match first {
        Some(Event::Head(h)) => h,
        Some(Event::WorkerLost) | None => {
            guard.armed = false;
            tracing::warn!(client = %peer.label, worker = worker.pid, generation = worker.generation, "worker died before answering; 502");
            return Ok(simple(
                &front,
                in_flight,
                StatusCode::BAD_GATEWAY,
                "Bad Gateway: the worker died\n",
                false,
                record,
            ));
        }
        Some(other) => {
            guard.armed = false;
            tracing::error!(worker = worker.pid, event = ?other, "worker sent a response without a head; 502");
            return Ok(simple(
                &front,
                in_flight,
                StatusCode::BAD_GATEWAY,
                "Bad Gateway\n",
                false,
                record,
            ));
        }
    };
    guard.armed = false;

    let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let record = record.map(|mut r| {
        r.status = status.as_u16();
        r.queued = queued;
        r.worker = worker.pid;
        r.generation = worker.generation;
        r
    });
    let mut resp = Response::new(Body {
        kind: Content::Stream(StreamBody {
            events,
            worker: worker.clone(),
            stream,
            done: false,
            unacked: 0,
            failed: None,
            timeout: front.cfg.timeout,
            idle: None,
        }),
        bytes_sent: 0,
        record,
        front: front.clone(),
        _in_flight: in_flight,
    });
    *resp.status_mut() = status;
    let mut close = false;
    let hdrs = resp.headers_mut();
    for (k, v) in head.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&k),
            HeaderValue::from_maybe_shared(v),
        ) else {
            tracing::warn!(
                worker = worker.pid,
                "application sent an invalid header; dropped"
            );
            continue;
        };
        if is_hop_by_hop(&name) {
            if name == header::CONNECTION && value.as_bytes().eq_ignore_ascii_case(b"close") {
                close = true;
            }
            continue;
        }
        hdrs.append(name, value);
    }
    if close {
        hdrs.insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else {
        hdrs.insert(
            HeaderName::from_static("keep-alive"),
            front.keep_alive_value.clone(),
        );
    }
    Ok(resp)
}

/// Streams the request body to the worker as its credit allows. The first poll of the
/// body is what makes hyper send `100 Continue`, so with `Expect: 100-continue` nothing
/// is polled until the application reads `wsgi.input`.
async fn pump_body(
    mut body: Incoming,
    worker: Arc<WorkerLink>,
    stream: u32,
    gate: Arc<CreditGate>,
) {
    loop {
        // Wait for credit before polling: polling is what asks the client for more.
        let Some(mut credit) = gate.take(u64::MAX).await else {
            return;
        };
        let frame = match body.frame().await {
            None => {
                worker.send(&Frame::RequestEnd { stream });
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(stream, error = %e, "client request body failed");
                worker.cancel(stream);
                return;
            }
            Some(Ok(f)) => f,
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        }; // trailers: not passed on
        while !data.is_empty() {
            if credit == 0 {
                match gate.take(u64::MAX).await {
                    Some(c) => credit = c,
                    None => return,
                }
            }
            let n = (data.len() as u64)
                .min(credit)
                .min(spillway_proto::MAX_CHUNK as u64) as usize;
            worker.send_body(stream, &data.split_to(n));
            credit -= n as u64;
        }
        // Credit not used by this chunk goes back for the next one.
        if credit > 0 {
            gate.give_back(credit);
        }
        if !worker.is_open(stream) {
            return;
        }
    }
}
