//! One HTTP/2 stream: its head through the same rules as an HTTP/1.1 head, its body held
//! before admission (`hold`), then the [`Exchange`] with a worker, whose replies become
//! h2's response head and a body hyper sends as the client's window allows.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::buffer::Buffered;
use super::h2::{Active, Shared};
use super::h2_head::{head_of, header_bytes};
use super::hold::{self, BodySource};
use super::Front;
use crate::admission::dispatch::{declared_length, Exchange, Reply, Stalled};
use crate::error::Answer;
use crate::h1::head::Framing;
use crate::h1::response::is_hop_by_hop;
use crate::telemetry::access_log::AccessRecord;
use crate::telemetry::request_id::request_id_of;

/// Response-body chunks buffered per stream before the worker is made to wait.
const BODY_QUEUE: usize = 8;

/// The response body of a stream: the front's own answer, or chunks as the worker sends
/// them. A body that does not end well (an error, or the sender gone before `complete`
/// was set) resets the stream, so the client cannot take a cut body as complete.
pub(super) enum Body {
    Full(Option<Bytes>),
    Stream {
        rx: mpsc::Receiver<Result<Bytes, io::Error>>,
        complete: Arc<AtomicBool>,
    },
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
            Body::Stream { rx, complete } => rx.poll_recv(cx).map(|o| match o {
                Some(r) => Some(r.map(Frame::data)),
                None if complete.load(Ordering::Acquire) => None,
                None => Some(Err(io::Error::other("the response was cut"))),
            }),
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
            Body::Stream { .. } => http_body::SizeHint::default(),
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

/// An HTTP/2 request body: its DATA frames, as they come.
struct H2Body {
    body: Incoming,
    /// The body ended (its last frame, or trailers).
    done: bool,
}

impl BodySource for H2Body {
    async fn piece(&mut self, _max: usize) -> Result<Option<Bytes>, Option<Answer>> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) if d.is_empty() => {}
                    Ok(d) => return Ok(Some(d)),
                    // Trailers: the body is over.
                    Err(_) => self.done = true,
                },
                Some(Err(_)) => {
                    return Err(Some(Answer::Malformed(
                        "Bad Request: broken request body\n",
                    )))
                }
            }
        }
    }
}

/// Serves one stream: its response, once the head is known; the body follows from a task
/// of its own.
pub(super) async fn stream(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let mut active = Active::new(&shared);
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
    let end_stream = http_body::Body::is_end_stream(&body);
    let (head, framing) = match head_of(
        &parts,
        end_stream,
        &front.limits,
        &shared.peer,
        &front.policy,
    ) {
        Ok(h) => h,
        Err(answer) => {
            active.finished = true;
            return finish_answer(&front, record, answer, b"", is_head);
        }
    };
    drop(parts);
    let request_id = request_id_of(&head);
    if let Some(r) = record.as_mut() {
        r.request_id = request_id.clone();
        r.remote_addr = head.remote_addr.clone();
    }
    let mut body = H2Body {
        body,
        done: end_stream,
    };
    // The body first, while no Python thread waits for it, as over HTTP/1.1.
    let held = if hold::buffers(framing, front.cfg.body_buffer) {
        let (limit, timeout) = (front.cfg.body_buffer, front.cfg.body_timeout);
        match hold::hold(&mut body, limit, timeout, &shared.peer.label).await {
            Ok(b) => Some(b),
            Err(answer) => {
                // A client that left has reset the stream: nobody reads an answer.
                let answer =
                    answer.unwrap_or(Answer::Malformed("Bad Request: broken request body\n"));
                active.finished = true;
                return finish_answer(&front, record, answer, &request_id, is_head);
            }
        }
    } else {
        None
    };
    let admit_start = record.as_ref().map(|_| Instant::now());
    let ex = match Exchange::start(&front.workers, head, front.deadlines()).await {
        Ok(ex) => ex,
        Err(answer) => {
            active.finished = true;
            return finish_answer(&front, record, answer, &request_id, is_head);
        }
    };
    if let (Some(r), Some(t)) = (record.as_mut(), admit_start) {
        let now = Instant::now();
        r.queued = now - t;
        r.dispatched = Some(now);
    }
    let mut st = StreamState {
        ex,
        body: (!body.done).then_some(body),
        held,
        pending: None,
        // A head without a body tells the worker so: no `RequestEnd` (as over HTTP/1.1).
        body_ended: framing == Framing::None,
        record,
        request_id,
        is_head,
        front,
        client: shared.peer.label.clone(),
        peer_ip: shared.peer.ip,
        active,
    };
    st.end_body_if_done();
    st.until_head().await
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
    body: Option<H2Body>,
    /// Body bytes the front held before admission, sent first.
    held: Option<Buffered>,
    /// Body bytes read that the worker has no credit for yet.
    pending: Option<Bytes>,
    /// `RequestEnd` was sent.
    body_ended: bool,
    record: Option<AccessRecord>,
    request_id: Bytes,
    is_head: bool,
    front: Arc<Front>,
    client: String,
    /// The peer trust is decided on, for `Server-Timing`.
    peer_ip: Option<std::net::IpAddr>,
    active: Active,
}

/// What happened next on a stream.
enum Step {
    Reply(Reply),
    /// A piece of the request body, or its end (`None`).
    Body(Option<Bytes>),
    /// The request body broke the framing.
    BodyBroken,
    TimedOut,
    BodyStalled,
}

impl StreamState {
    /// Sends what credit allows of the request body: what the front held, then what was
    /// read since.
    fn pump(&mut self) -> Result<(), Answer> {
        let mut progressed = hold::send_held(&mut self.ex, &mut self.held, &self.client)?;
        while self.held.is_none() && self.ex.body_credit() > 0 {
            let Some(mut data) = self.pending.take() else {
                break;
            };
            let n = self.ex.send_body(&data);
            progressed |= n > 0;
            if n < data.len() {
                self.pending = Some(data.split_off(n));
                break;
            }
        }
        if progressed {
            self.ex.upload_progress();
        }
        self.end_body_if_done();
        Ok(())
    }

    /// Ends the request body for the worker once all of it went out.
    fn end_body_if_done(&mut self) {
        if self.body.is_none() && self.held.is_none() && self.pending.is_none() && !self.body_ended
        {
            self.body_ended = true;
            self.ex.end_body();
        }
    }

    async fn next(&mut self) -> Step {
        if let Some(held) = self.held.as_mut() {
            // The held body's file is read off the event loop, ahead of the credit.
            held.fill(self.ex.body_credit()).await;
        }
        let want_body = self.body.is_some()
            && self.pending.is_none()
            && self.held.is_none()
            && self.ex.body_credit() > 0;
        let body_due = self.ex.awaiting_body(want_body);
        let due = body_due.map_or(self.ex.due(), |b| b.min(self.ex.due()));
        tokio::select! {
            biased;
            r = self.ex.next() => Step::Reply(r),
            p = async {
                match self.body.as_mut() {
                    Some(b) => b.piece(usize::MAX).await,
                    None => std::future::pending().await,
                }
            }, if want_body => match p {
                Ok(p) => Step::Body(p),
                Err(_) => Step::BodyBroken,
            },
            _ = tokio::time::sleep_until(due.into()) => {
                if body_due.is_some_and(|b| b <= Instant::now()) {
                    Step::BodyStalled
                } else {
                    Step::TimedOut
                }
            }
        }
    }

    /// A piece of the request body from the client (`None`: it is complete), passed on as
    /// credit allows.
    fn request_body(&mut self, chunk: Option<Bytes>) -> Result<(), Answer> {
        match chunk {
            Some(data) => {
                self.ex.body_arrived(data.len());
                self.pending = Some(data);
            }
            None => self.body = None,
        }
        self.pump()
    }

    /// Runs the stream until the response head (the response is returned then, and the
    /// body continues in a task of its own) or an answer from the front.
    async fn until_head(mut self) -> Response<Body> {
        if let Err(answer) = self.pump() {
            return self.answer(answer);
        }
        loop {
            let step = match self.next().await {
                Step::Body(piece) => self.request_body(piece),
                Step::Reply(Reply::Credit) => self.pump(),
                // The client broke its body's framing: nobody is left to answer; dropping
                // the exchange stops the application.
                Step::BodyBroken => Err(Answer::Malformed("Bad Request: broken request body\n")),
                Step::BodyStalled => Err(self.ex.body_stalled(&self.client)),
                Step::TimedOut => Err(self
                    .ex
                    .time_out(&self.client, Stalled::Application)
                    .unwrap_or(Answer::TimedOut)),
                Step::Reply(Reply::Failed(f)) => Err(f.answer()),
                // The exchange lets no body or end through before a head.
                Step::Reply(Reply::Body(_) | Reply::End) => Err(Answer::WorkerBroken),
                Step::Reply(Reply::Head(head)) => return self.respond(*head),
            };
            if let Err(answer) = step {
                return self.answer(answer);
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
        self.active.finished = true;
        finish_answer(&self.front, record, answer, &self.request_id, self.is_head)
    }

    /// The response head; the body streams from a task that owns the exchange.
    fn respond(mut self, mut head: spillway_proto::ResponseHead) -> Response<Body> {
        head.headers.extend(crate::telemetry::server_timing::field(
            &self.front.cfg,
            self.peer_ip,
            self.record.as_ref(),
        ));
        let status = StatusCode::from_u16(head.status)
            .ok()
            .filter(|s| (200..=599).contains(&s.as_u16()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (tx, rx) = mpsc::channel(BODY_QUEUE);
        let complete = Arc::new(AtomicBool::new(false));
        let mut r = Response::new(if self.is_head {
            Body::Full(None)
        } else {
            Body::Stream {
                rx,
                complete: complete.clone(),
            }
        });
        *r.status_mut() = status;
        let h = r.headers_mut();
        let mut has_request_id = self.request_id.is_empty();
        for (name, value) in &head.headers {
            // The declared length goes once, as the exchange enforces it.
            if is_hop_by_hop(name) || name.eq_ignore_ascii_case(b"content-length") {
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
        if let Some(n) = declared_length(status.as_u16(), &head.headers) {
            h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
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
        tokio::spawn(self.stream_body(tx, complete));
        r
    }

    /// Forwards the response body to the client's stream, and what is left of the request
    /// body to the worker. A response that does not end well resets the stream, so the
    /// client cannot take a cut body as complete.
    async fn stream_body(
        mut self,
        tx: mpsc::Sender<Result<Bytes, io::Error>>,
        done: Arc<AtomicBool>,
    ) {
        let mut bytes = 0u64;
        // The client reset the stream (not the worker or the front failing it).
        let mut reset = false;
        let timeout = self.front.cfg.timeout;
        let complete = loop {
            let failed = match self.next().await {
                Step::Reply(Reply::Body(data)) => {
                    if !self.is_head && !data.is_empty() {
                        bytes += data.len() as u64;
                        match send_within(&tx, data, timeout).await {
                            Sent::Yes => {}
                            // The client reset the stream: dropping the exchange stops
                            // the application.
                            Sent::Reset => {
                                reset = true;
                                break false;
                            }
                            // The client takes nothing (no WINDOW_UPDATE) for --timeout.
                            Sent::Stalled => {
                                self.ex.time_out(&self.client, Stalled::Client);
                                break false;
                            }
                        }
                    }
                    self.ex.delivered();
                    None
                }
                Step::Reply(Reply::End) => break true,
                Step::Reply(Reply::Credit) => {
                    self.pump().err().map(|_| "the request body was lost")
                }
                Step::Reply(Reply::Failed(_) | Reply::Head(_)) => {
                    Some("the response failed midway")
                }
                Step::Body(piece) => self
                    .request_body(piece)
                    .err()
                    .map(|_| "the request body was lost"),
                Step::BodyBroken => Some("the request body broke its framing"),
                Step::BodyStalled => {
                    self.ex.body_stalled(&self.client);
                    Some("the request body stalled")
                }
                Step::TimedOut => {
                    self.ex.time_out(&self.client, Stalled::Application);
                    Some("the response stalled")
                }
            };
            if let Some(why) = failed {
                tracing::debug!(client = %self.client, request_id = %String::from_utf8_lossy(&self.request_id), why, "HTTP/2 response cut; resetting the stream");
                break false;
            }
        };
        // Unless set, the end of the sender resets the stream once the client takes what
        // was queued before it.
        done.store(complete, Ordering::Release);
        drop(tx);
        self.active.finished = !reset;
        if let Some(mut r) = self.record.take() {
            let w = self.ex.worker();
            r.worker = w.pid;
            r.generation = w.generation;
            r.bytes = bytes;
            self.front.finish(r);
        }
    }
}

/// How handing a piece of the response to hyper went.
enum Sent {
    Yes,
    /// The stream is gone: the client reset it.
    Reset,
    /// The client took nothing for the whole wait.
    Stalled,
}

/// Queues `data` for the client's stream, waiting at most `timeout` for room (hyper takes
/// pieces as the client's window allows). The timer is armed only when the queue is full.
async fn send_within(
    tx: &mpsc::Sender<Result<Bytes, io::Error>>,
    data: Bytes,
    timeout: std::time::Duration,
) -> Sent {
    let data = match tx.try_send(Ok(data)) {
        Ok(()) => return Sent::Yes,
        Err(mpsc::error::TrySendError::Closed(_)) => return Sent::Reset,
        Err(mpsc::error::TrySendError::Full(data)) => data,
    };
    match tokio::time::timeout(timeout, tx.send(data)).await {
        Ok(Ok(())) => Sent::Yes,
        Ok(Err(_)) => Sent::Reset,
        Err(_) => Sent::Stalled,
    }
}
