//! HTTP/2 connections (ALPN `h2` on TLS listeners, prior knowledge on cleartext ones),
//! framed by hyper's h2 server. Every stream is one request through the same head rules,
//! admission queue, deadlines, metrics and access log as HTTP/1.1; what differs is only
//! the framing, which h2 owns.
//!
//! Floods: at most `--http2-max-streams` streams run at once per connection (more are
//! refused by the protocol itself), header lists are bounded like HTTP/1.1 heads, and a
//! client that opens streams and resets them before they are served (the rapid-reset
//! attack, CVE-2023-44487) has its connection closed with `ENHANCE_YOUR_CALM` after 20
//! such resets (h2's pending-accept limit), and after 1024 protocol-error resets over the
//! connection's life. A stream reset after it was admitted cancels its request on the
//! worker at once, like a client leaving an HTTP/1.1 connection.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use spillway_proto::Protocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

use super::Front;
use crate::access_log::AccessRecord;
use crate::dispatch::{Exchange, Reply};
use crate::error::Answer;
use crate::h1::head::Framing;
use crate::h1::response::is_hop_by_hop;
use crate::request::{build_head, request_id_of, HeadView, Peer};

/// Response-body chunks buffered per stream before the worker is made to wait.
const BODY_QUEUE: usize = 8;

/// What the streams of one connection share.
struct Shared {
    front: Arc<Front>,
    peer: Peer,
    /// Streams being served, and when the last one ended: for the idle timeout.
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// Counts a stream as active while it lives.
struct Active(Arc<Shared>);

impl Active {
    fn new(s: &Arc<Shared>) -> Active {
        s.active.fetch_add(1, Ordering::Relaxed);
        Active(s.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
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
        .max_header_list_size(front.limits.head_bytes().min(u32::MAX as usize) as u32)
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
    });
    let s = shared.clone();
    let svc = service_fn(move |req| {
        let s = s.clone();
        async move { Ok::<_, Infallible>(stream(req, s).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(client = %label, error = %e, "HTTP/2 connection ended");
                }
                return;
            }
            _ = draining.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick(), if !closing => {
                let idle = shared.active.load(Ordering::Relaxed) == 0
                    && shared.idle_since.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
                        >= front.cfg.keep_alive;
                if idle {
                    tracing::debug!(client = %label, "HTTP/2 connection idle past --keep-alive; closing");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The response body of a stream: the front's own answer, or chunks as the worker sends
/// them (an error resets the stream, so the client cannot take a cut body as complete).
enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Result<Bytes, io::Error>>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Stream(_) => http_body::SizeHint::default(),
        }
    }
}

/// The front's own answer as an HTTP/2 response.
fn answer_response(
    answer: Answer,
    retry_after: Option<u64>,
    request_id: &[u8],
    head: bool,
) -> Response<Body> {
    let body = answer.body();
    let mut r = Response::new(Body::Full(
        (!head).then(|| Bytes::from_static(body.as_bytes())),
    ));
    *r.status_mut() =
        StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(secs) = retry_after {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Ok(v) = HeaderValue::from_bytes(request_id) {
        if !request_id.is_empty() {
            h.insert(HeaderName::from_static("x-request-id"), v);
        }
    }
    r
}

/// The frame head of an HTTP/2 request, through the same rules as HTTP/1.1's.
fn head_of(
    parts: &http::request::Parts,
    end_stream: bool,
    shared: &Shared,
) -> Result<spillway_proto::RequestHead, Answer> {
    let mut fields: Vec<httparse::Header<'_>> = Vec::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        fields.push(httparse::Header {
            name: name.as_str(),
            value: value.as_bytes(),
        });
    }
    // `:authority` is HTTP/2's Host (RFC 9113 §8.3.1).
    let authority = parts.uri.authority().map(|a| a.as_str());
    if let Some(a) = authority {
        if !parts.headers.contains_key(http::header::HOST) {
            fields.push(httparse::Header {
                name: "host",
                value: a.as_bytes(),
            });
        }
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let framing = match parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None if end_stream => Framing::None,
        None => Framing::Chunked,
    };
    let limits = &shared.front.limits;
    if fields.len() > limits.fields {
        return Err(Answer::HeadersTooLarge);
    }
    if target.len() > limits.target {
        return Err(Answer::TargetTooLong);
    }
    let view = HeadView {
        method: parts.method.as_str(),
        target,
        version: Protocol::Http2,
        headers: &fields,
        framing,
        expect_continue: false,
    };
    build_head(&view, &shared.peer, &shared.front.policy)
}

/// Serves one stream: its response, once the head is known; the body follows from a task
/// of its own.
async fn stream(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let active = Active::new(&shared);
    let front = shared.front.clone();
    let (parts, body) = req.into_parts();
    let is_head = parts.method == http::Method::HEAD;
    let mut record = front.records().then(|| {
        let request_line = if front.access_log.is_some() {
            format!(
                "{} {} HTTP/2.0",
                parts.method,
                parts.uri.path_and_query().map_or("/", |p| p.as_str())
            )
        } else {
            String::new()
        };
        AccessRecord::begin(
            shared.peer.label.clone(),
            shared.peer.remote_addr.clone(),
            request_line,
            Bytes::new(),
            header_bytes(&parts, "referer", front.log_agents),
            header_bytes(&parts, "user-agent", front.log_agents),
        )
    });
    let head = match head_of(&parts, http_body::Body::is_end_stream(&body), &shared) {
        Ok(h) => h,
        Err(answer) => return finish_answer(&front, record, answer, b"", is_head),
    };
    let request_id = request_id_of(&head);
    if let Some(r) = record.as_mut() {
        r.request_id = request_id.clone();
        r.remote_addr = head.remote_addr.clone();
    }
    let admit_start = record.as_ref().map(|_| Instant::now());
    let ex = match Exchange::start(&front.workers, head).await {
        Ok(ex) => ex,
        Err(answer) => return finish_answer(&front, record, answer, &request_id, is_head),
    };
    if let (Some(r), Some(t)) = (record.as_mut(), admit_start) {
        let now = Instant::now();
        r.queued = now - t;
        r.dispatched = Some(now);
    }
    let st = StreamState {
        ex,
        body: Some(body),
        pending: None,
        deadline: Instant::now() + front.cfg.timeout,
        record,
        request_id,
        is_head,
        peer_ip: shared.peer.ip,
        front,
        _active: active,
    };
    st.until_head().await
}

fn header_bytes(parts: &http::request::Parts, name: &str, wanted: bool) -> Bytes {
    if !wanted {
        return Bytes::new();
    }
    parts
        .headers
        .get(name)
        .map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.as_bytes()))
}

fn finish_answer(
    front: &Front,
    record: Option<AccessRecord>,
    answer: Answer,
    request_id: &[u8],
    is_head: bool,
) -> Response<Body> {
    front.finish_answer(record, answer, is_head);
    let retry_after = front.retry_after(answer);
    answer_response(answer, retry_after, request_id, is_head)
}

/// One admitted stream.
struct StreamState {
    ex: Exchange,
    /// The request body still to read (`None` once it ended).
    body: Option<Incoming>,
    /// Body bytes read that the worker has no credit for yet.
    pending: Option<Bytes>,
    /// When the response must start (or the next body chunk arrive) by.
    deadline: Instant,
    record: Option<AccessRecord>,
    request_id: Bytes,
    is_head: bool,
    /// The peer trust is decided on, for `Server-Timing`.
    peer_ip: Option<std::net::IpAddr>,
    front: Arc<Front>,
    _active: Active,
}

/// What happened next on a stream.
enum Step {
    Reply(Reply),
    /// A piece of the request body, or its end (`None`).
    Body(Option<Result<Bytes, ()>>),
    TimedOut,
    BodyTimedOut,
}

impl StreamState {
    /// Sends what credit allows of the request body read so far.
    fn pump(&mut self) {
        while self.ex.body_credit() > 0 {
            let Some(mut data) = self.pending.take() else {
                break;
            };
            let n = self.ex.send_body(&data);
            // Upload time is the client's: the response deadline counts from progress.
            self.deadline = Instant::now() + self.front.cfg.timeout;
            if n < data.len() {
                self.pending = Some(data.split_off(n));
                break;
            }
        }
    }

    async fn next(&mut self) -> Step {
        let want_body = self.body.is_some() && self.pending.is_none() && self.ex.body_credit() > 0;
        let body_deadline = Instant::now() + self.front.cfg.body_timeout;
        tokio::select! {
            biased;
            r = self.ex.next() => Step::Reply(r),
            f = async {
                match self.body.as_mut() {
                    Some(b) => b.frame().await,
                    None => std::future::pending().await,
                }
            }, if want_body => Step::Body(match f {
                None => None,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => Some(Ok(d)),
                    // Trailers: the body is over.
                    Err(_) => None,
                },
                Some(Err(_)) => Some(Err(())),
            }),
            _ = tokio::time::sleep_until(self.deadline.into()) => Step::TimedOut,
            _ = tokio::time::sleep_until(body_deadline.into()), if want_body => Step::BodyTimedOut,
        }
    }

    /// Runs the stream until the response head (the response is returned then, and the
    /// body continues in a task of its own) or an answer from the front.
    async fn until_head(mut self) -> Response<Body> {
        loop {
            match self.next().await {
                Step::Body(Some(Ok(data))) => self.request_body(Some(data)),
                Step::Body(None) => self.request_body(None),
                Step::Body(Some(Err(()))) => {
                    // The client reset the stream or broke its framing: nobody is left
                    // to answer; dropping the exchange stops the application.
                    return self.answer(Answer::Malformed("Bad Request: broken request body\n"));
                }
                Step::BodyTimedOut => return self.answer(Answer::BodyTimeout),
                Step::TimedOut => {
                    self.ex.time_out();
                    let w = self.ex.worker();
                    tracing::warn!(client = %self.record.as_ref().map_or("", |r| r.client.as_str()), worker = w.pid, generation = w.generation, timeout_s = self.front.cfg.timeout.as_secs(), origin = %Answer::TimedOut.origin(), request_id = %String::from_utf8_lossy(&self.request_id), "request timed out; 504; its worker thread is marked stuck");
                    return self.answer(Answer::TimedOut);
                }
                Step::Reply(Reply::Credit) => self.pump(),
                Step::Reply(Reply::Failed(f)) => return self.answer(f.answer()),
                Step::Reply(Reply::Body(_)) | Step::Reply(Reply::End) => {
                    let w = self.ex.worker();
                    tracing::error!(
                        worker = w.pid,
                        generation = w.generation,
                        "the worker sent a body before a head; the request fails"
                    );
                    self.ex.time_out();
                    return self.answer(Answer::WorkerBroken);
                }
                Step::Reply(Reply::Head(head)) => return self.respond(*head),
            }
        }
    }

    /// A piece of the request body from the client (`None`: it is complete), passed on as
    /// credit allows.
    fn request_body(&mut self, chunk: Option<Bytes>) {
        match chunk {
            Some(data) => {
                self.pending = Some(data);
                self.pump();
            }
            None => {
                self.body = None;
                self.ex.end_body();
            }
        }
    }

    fn answer(mut self, answer: Answer) -> Response<Body> {
        let record = self.record.take();
        let w = self.ex.worker();
        let record = record.map(|mut r| {
            r.worker = w.pid;
            r.generation = w.generation;
            r
        });
        finish_answer(&self.front, record, answer, &self.request_id, self.is_head)
    }

    /// The response head; the body streams from a task that owns the exchange.
    fn respond(mut self, mut head: spillway_proto::ResponseHead) -> Response<Body> {
        head.headers.extend(crate::server_timing::field(
            &self.front.cfg,
            self.peer_ip,
            self.record.as_ref(),
        ));
        let status = StatusCode::from_u16(head.status)
            .ok()
            .filter(|s| (200..=599).contains(&s.as_u16()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (tx, rx) = mpsc::channel(BODY_QUEUE);
        let mut r = Response::new(if self.is_head {
            Body::Full(None)
        } else {
            Body::Stream(rx)
        });
        *r.status_mut() = status;
        let h = r.headers_mut();
        let mut has_request_id = self.request_id.is_empty();
        for (name, value) in &head.headers {
            if is_hop_by_hop(name) {
                continue;
            }
            match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                (Ok(n), Ok(v)) => {
                    has_request_id |= n.as_str() == "x-request-id";
                    h.append(n, v);
                }
                _ => tracing::warn!(
                    header = %String::from_utf8_lossy(name).escape_debug(),
                    "the worker passed an invalid response header; dropped"
                ),
            }
        }
        if !has_request_id {
            if let Ok(v) = HeaderValue::from_bytes(&self.request_id) {
                h.insert(HeaderName::from_static("x-request-id"), v);
            }
        }
        if let Some(rec) = self.record.as_mut() {
            rec.status = status.as_u16();
            rec.application = rec.dispatched.map(|d| d.elapsed());
        }
        self.deadline = Instant::now() + self.front.cfg.timeout;
        tokio::spawn(self.stream_body(tx));
        r
    }

    /// Forwards the response body to the client's stream, and what is left of the request
    /// body to the worker.
    async fn stream_body(mut self, tx: mpsc::Sender<Result<Bytes, io::Error>>) {
        let mut bytes = 0u64;
        let complete = loop {
            match self.next().await {
                Step::Reply(Reply::Body(data)) => {
                    self.deadline = Instant::now() + self.front.cfg.timeout;
                    if !self.is_head {
                        bytes += data.len() as u64;
                        if tx.send(Ok(data)).await.is_err() {
                            // The client reset the stream: dropping the exchange stops
                            // the application.
                            break false;
                        }
                    }
                    self.ex.delivered();
                }
                Step::Reply(Reply::End) => break true,
                Step::Reply(Reply::Credit) => self.pump(),
                Step::Reply(Reply::Failed(_)) | Step::Reply(Reply::Head(_)) => {
                    let _ = tx
                        .send(Err(io::Error::other("the response failed midway")))
                        .await;
                    break false;
                }
                Step::Body(Some(Ok(data))) => self.request_body(Some(data)),
                Step::Body(None) => self.request_body(None),
                Step::Body(Some(Err(()))) | Step::BodyTimedOut => break false,
                Step::TimedOut => {
                    self.ex.time_out();
                    let w = self.ex.worker();
                    tracing::warn!(worker = w.pid, generation = w.generation, timeout_s = self.front.cfg.timeout.as_secs(), request_id = %String::from_utf8_lossy(&self.request_id), "response body stalled past the request timeout; resetting the stream; worker thread marked stuck");
                    let _ = tx.send(Err(io::Error::other("the response stalled"))).await;
                    break false;
                }
            }
        };
        if let Some(mut r) = self.record.take() {
            let w = self.ex.worker();
            r.worker = w.pid;
            r.generation = w.generation;
            r.bytes = bytes;
            if !complete && r.status < 400 {
                // What the client got was cut; the log says what was sent.
                tracing::debug!(request_id = %String::from_utf8_lossy(&self.request_id), "HTTP/2 response cut");
            }
            self.front.finish(r);
        }
    }
}
