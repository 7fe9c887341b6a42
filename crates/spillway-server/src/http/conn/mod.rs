//! Client connections over HTTP/1.1: one task per connection reads request heads, hands
//! each request to its [`Exchange`](crate::admission::dispatch::Exchange), and writes the response,
//! one request at a time (pipelined requests wait in the read buffer, in order).
//!
//! Connection timing is ours: an idle keep-alive connection lives `--keep-alive` seconds
//! (announced in `Keep-Alive: timeout=N`), a started head must complete within
//! `--header-timeout`, and a connection that sees a request arriving is never closed for
//! idleness: exactly the proxy race (`502 error reading status line`) this server exists to
//! avoid. Every close lingers so unread request bytes do not turn the FIN into a RST that
//! destroys the response.

mod buffer;
mod exchange;
mod front;
pub(crate) mod h2;
pub(crate) mod h2_head;
pub(crate) mod h2_stream;
mod hold;
mod prefixed;
mod proxy;
mod start;

pub(crate) use front::Front;
pub(crate) use start::{serve_connection, serve_tls_connection};

use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use spillway_proto::RequestHead;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::error::Answer;
use crate::h1::head::{self, Framing};
use crate::h1::response::{encode_answer, Reply};
use crate::http::request::{build_head, HeadView, Peer};
use crate::telemetry::access_log::AccessRecord;
use crate::telemetry::request_id::request_id_of;

/// Read-ahead kept while a request is in flight: enough to see the next pipelined head and
/// the client's FIN, not enough to buffer an upload nobody asked for.
const PEEK_LIMIT: usize = 64 * 1024;
/// Header slots kept on the stack for a head's parse.
const STACK_HEADERS: usize = 128;
/// How long a closing connection keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Where reading a head stands.
// Returned once per request and moved straight out; boxing it would cost an allocation
// per request instead.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// A request, or `None`: the connection closes.
    Done(Option<Parsed>),
    /// Not complete yet.
    More,
}

/// A request read off the connection, before it is served.
struct Parsed {
    /// The frame head, or the answer that refuses the request.
    head: Result<RequestHead, Answer>,
    framing: Framing,
    reply: Reply,
    expect_continue: bool,
    /// `METHOD target HTTP/1.x`, only when there is an access log.
    line: Option<String>,
    /// The request's id (empty for a refused head).
    request_id: Bytes,
    /// For the access log: `REMOTE_ADDR`, and `Referer` and `User-Agent` when its format
    /// logs them.
    remote_addr: Bytes,
    referer: Bytes,
    user_agent: Bytes,
}

/// One client connection.
pub(crate) struct Conn<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    peer: Peer,
    front: Arc<Front>,
    draining: watch::Receiver<bool>,
    is_draining: bool,
    accepted: Instant,
}

/// HTTP/1.1 on a connection whose first bytes (`rbuf`) may already be read.
async fn serve_h1<S, T>(
    io: S,
    rbuf: BytesMut,
    peer: Peer,
    front: Arc<Front>,
    draining: watch::Receiver<bool>,
    accepted: Instant,
    slot: T,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Send + 'static,
{
    let is_draining = *draining.borrow();
    let mut conn = Conn {
        io,
        rbuf,
        wbuf: BytesMut::with_capacity(8 * 1024),
        peer,
        front,
        draining,
        is_draining,
        accepted,
    };
    conn.run().await;
    drop(slot);
    conn.linger().await;
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn run(&mut self) {
        let mut first = true;
        while let Some(parsed) = self.read_request(first).await {
            first = false;
            if !self.serve(parsed).await {
                return;
            }
        }
    }

    /// Waits for the next complete request head: `None` when the connection should close
    /// (the client left, it idled past `--keep-alive`, a head took longer than
    /// `--header-timeout`, the server drains, or the head was refused and answered).
    async fn read_request(&mut self, first: bool) -> Option<Parsed> {
        // A new connection must send its first head within the header timeout; so must
        // bytes of a next request that already arrived. The clock is read only when a
        // head is not complete at once.
        let mut head_started = first.then_some(self.accepted);
        let mut idle_since = None;
        // One timer per wait (registered when first polled), moved only when the deadline
        // does.
        let sleep = tokio::time::sleep_until(self.accepted.into());
        tokio::pin!(sleep);
        let mut armed = None;
        let mut scanned = 0;
        let mut probed = 0;
        loop {
            if !self.rbuf.is_empty() {
                match self.try_head(scanned, &mut probed).await {
                    Step::Done(p) => return p,
                    Step::More => {}
                }
                scanned = self.rbuf.len();
                head_started.get_or_insert_with(Instant::now);
            } else if self.is_draining {
                return None;
            }
            let (deadline, why) = match head_started {
                Some(t) => (t + self.front.cfg.header_timeout, "header timeout"),
                None => (
                    *idle_since.get_or_insert_with(Instant::now) + self.front.cfg.keep_alive,
                    "keep-alive idle",
                ),
            };
            if armed.replace(deadline) != Some(deadline) {
                sleep.as_mut().reset(deadline.into());
            }
            tokio::select! {
                n = read_more(&mut self.io, &mut self.rbuf) => {
                    if n == 0 {
                        return None;
                    }
                }
                _ = sleep.as_mut() => {
                    tracing::debug!(client = %self.peer.label, reason = why, "closing connection");
                    return None;
                }
                changed = self.draining.changed(), if !self.is_draining => {
                    self.is_draining = changed.is_err() || *self.draining.borrow();
                }
            }
        }
    }

    /// Parses what the read buffer holds if a head may be complete (new bytes since
    /// `scanned` include an empty line), else checks the limits. An incomplete head is
    /// also parsed whenever it has doubled since the last try (`probed`), so that bytes
    /// no head may contain (a bare CR, a bad version) are refused at once rather than at
    /// `--header-timeout`, while a client trickling a long head costs linear time.
    async fn try_head(&mut self, scanned: usize, probed: &mut usize) -> Step {
        let len = self.rbuf.len();
        let parsed = if head::may_end_head(&self.rbuf, scanned) || len >= 2 * *probed {
            *probed = len;
            self.parse()
        } else {
            head::check_partial(&self.rbuf, &self.front.limits).map(|()| None)
        };
        match parsed {
            Ok(Some(p)) => Step::Done(Some(p)),
            Ok(None) => Step::More,
            Err(answer) => {
                tracing::debug!(client = %self.peer.label, status = answer.status(), origin = %answer.origin(), error = %answer, "malformed request; answered and closing");
                let reply = Reply {
                    head_method: false,
                    version: spillway_proto::Protocol::Http11,
                    keep_alive: false,
                };
                self.answer(answer, &reply, None, b"").await;
                Step::Done(None)
            }
        }
    }

    /// Parses a head from the read buffer; `Ok(None)` if it is not complete yet.
    fn parse(&mut self) -> Result<Option<Parsed>, Answer> {
        let limits = self.front.limits;
        // Room for one header more than the limit, so that one too many is seen. On the
        // stack for the usual limits.
        let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        let mut heap = Vec::new();
        let storage = if limits.fields < STACK_HEADERS {
            &mut stack[..limits.fields + 1]
        } else {
            heap.resize_with(limits.fields + 1, MaybeUninit::uninit);
            &mut heap[..]
        };
        let Some(raw) = head::parse(&self.rbuf, &limits, storage)? else {
            return Ok(None);
        };
        let view = HeadView {
            method: raw.method,
            target: raw.target,
            version: raw.version,
            headers: raw.headers,
            framing: raw.framing,
            expect_continue: raw.expect_continue,
        };
        let head = build_head(&view, &self.peer, &self.front.policy);
        let (referer, user_agent) = if self.front.log_agents {
            let field = |name: &str| {
                raw.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map_or_else(Bytes::new, |h| Bytes::copy_from_slice(h.value))
            };
            (field("referer"), field("user-agent"))
        } else {
            (Bytes::new(), Bytes::new())
        };
        let parsed = Parsed {
            request_id: head.as_ref().map(request_id_of).unwrap_or_default(),
            remote_addr: head
                .as_ref()
                .map_or_else(|_| self.peer.remote_addr.clone(), |h| h.remote_addr.clone()),
            referer,
            user_agent,
            head,
            framing: raw.framing,
            reply: Reply {
                head_method: raw.method == "HEAD",
                version: raw.version,
                keep_alive: raw.keep_alive,
            },
            expect_continue: raw.expect_continue,
            line: self
                .front
                .access_log
                .as_ref()
                .map(|_| format!("{} {} {}", raw.method, raw.target, raw.version.as_str())),
        };
        let len = raw.len;
        self.rbuf.advance(len);
        Ok(Some(parsed))
    }

    /// Serves one request; returns whether the connection stays open for the next.
    async fn serve(&mut self, p: Parsed) -> bool {
        let mut reply = p.reply;
        reply.keep_alive &= !self.is_draining;
        let mut record = self.front.records().then(|| {
            let client = if self.front.access_log.is_some() {
                self.peer.label.clone()
            } else {
                String::new()
            };
            AccessRecord::begin(
                client,
                p.remote_addr,
                p.line.unwrap_or_default(),
                p.request_id.clone(),
                p.referer,
                p.user_agent,
            )
        });
        let mut body = crate::h1::body::BodyDecoder::new(p.framing);
        let head = match p.head {
            Ok(h) => h,
            Err(answer) => {
                tracing::debug!(client = %self.peer.label, status = answer.status(), origin = %answer.origin(), error = %answer, "request refused");
                reply.keep_alive = false;
                return self.answer(answer, &reply, record, &p.request_id).await;
            }
        };
        // The body first, while no Python thread waits for it. (Not for a client that
        // asked for `100 Continue`: it sends nothing until the application reads.)
        let buffered = if !p.expect_continue && hold::buffers(p.framing, self.front.cfg.body_buffer)
        {
            let mut source = hold::H1Body {
                io: &mut self.io,
                rbuf: &mut self.rbuf,
                decoder: &mut body,
            };
            let (limit, timeout) = (self.front.cfg.body_buffer, self.front.cfg.body_timeout);
            match hold::hold(&mut source, limit, timeout, &self.peer.label).await {
                Ok(b) => Some(b),
                Err(Some(answer)) => {
                    reply.keep_alive = false;
                    return self.answer(answer, &reply, record, &p.request_id).await;
                }
                Err(None) => return false,
            }
        } else {
            None
        };
        let admit_start = record.as_ref().map(|_| Instant::now());
        let started = tokio::select! {
            r = crate::admission::dispatch::Exchange::start(&self.front.workers, head, self.front.deadlines()) => r,
            _ = watch_eof(&mut self.io, &mut self.rbuf) => {
                tracing::debug!(client = %self.peer.label, "client left while its request was queued");
                return false;
            }
        };
        if let (Some(r), Some(t)) = (record.as_mut(), admit_start) {
            let now = Instant::now();
            r.queued = now - t;
            r.dispatched = Some(now);
        }
        match started {
            Ok(ex) => {
                let body = exchange::Body {
                    decoder: &mut body,
                    buffered,
                    expect_continue: p.expect_continue,
                };
                self.exchange(ex, body, reply, record, p.request_id).await
            }
            Err(answer) => {
                // Refused, not failed: the connection stays usable for the retry, once the
                // body the client sent is out of the way.
                let keep = self.answer(answer, &reply, record, &p.request_id).await;
                keep && self.discard(&mut body, p.expect_continue, false).await
            }
        }
    }

    /// Whether the server drains now (the flag is sampled before each request; a
    /// response that starts later must still learn of it).
    fn draining_now(&mut self) -> bool {
        self.is_draining |= *self.draining.borrow();
        self.is_draining
    }

    /// Writes the front's own answer; returns whether the connection stays open.
    async fn answer(
        &mut self,
        answer: Answer,
        reply: &Reply,
        record: Option<AccessRecord>,
        request_id: &[u8],
    ) -> bool {
        let mut reply = *reply;
        reply.keep_alive &= !self.draining_now();
        let reply = &reply;
        let close = encode_answer(
            answer,
            self.front.retry_after(answer),
            reply,
            &self.front.keep_alive_value,
            request_id,
            &mut self.wbuf,
        );
        let written = self.flush().await;
        self.front.finish_answer(record, answer, reply.head_method);
        written && !close
    }

    /// Reads and drops the rest of a request body the application did not read, so the
    /// connection can carry the next request; false if it must close instead (the client
    /// waits for `100 Continue` that never came, or sends more than is worth reading).
    async fn discard(
        &mut self,
        body: &mut crate::h1::body::BodyDecoder,
        expect_continue: bool,
        continued: bool,
    ) -> bool {
        const DISCARD_LIMIT: u64 = 1024 * 1024;
        if body.is_done() {
            return true;
        }
        if expect_continue && !continued {
            return false;
        }
        let limit = body.decoded + DISCARD_LIMIT;
        let deadline = Instant::now() + self.front.cfg.header_timeout;
        loop {
            match body.decode(&mut self.rbuf, usize::MAX) {
                Err(_) => return false,
                Ok(Some(crate::h1::body::Piece::End)) => return true,
                Ok(Some(crate::h1::body::Piece::Data(_))) => {
                    if body.decoded > limit {
                        return false;
                    }
                }
                Ok(None) => {
                    let read = tokio::time::timeout_at(
                        deadline.into(),
                        read_more(&mut self.io, &mut self.rbuf),
                    );
                    if !matches!(read.await, Ok(n) if n > 0) {
                        return false;
                    }
                }
            }
        }
    }

    /// Writes the buffered output; false if the client stopped reading for `--timeout`
    /// or the connection broke.
    async fn flush(&mut self) -> bool {
        let timeout = self.front.cfg.timeout;
        while !self.wbuf.is_empty() {
            match tokio::time::timeout(timeout, self.io.write(&self.wbuf)).await {
                Ok(Ok(n)) if n > 0 => self.wbuf.advance(n),
                Ok(_) => return false,
                Err(_) => {
                    tracing::warn!(client = %self.peer.label, timeout_s = timeout.as_secs(), "client stopped reading the response; closing");
                    return false;
                }
            }
        }
        self.wbuf.clear();
        true
    }

    /// Closes gracefully: FIN, then keep reading (and discarding) for a moment, so unread
    /// request bytes do not make the kernel answer with a RST that destroys the response.
    async fn linger(mut self) {
        let _ = self.io.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            let mut total = 0usize;
            while let Ok(n) = self.io.read(&mut sink).await {
                total += n;
                if n == 0 || total > 1 << 20 {
                    break;
                }
            }
        })
        .await;
    }
}

/// Reads what the client sent into `buf`; 0 means it is gone (end of file or error).
async fn read_more<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) -> usize {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    io.read_buf(buf).await.unwrap_or(0)
}

/// Completes when the client closes its side (a FIN, even a half-close, is taken as the
/// client leaving, as nginx and HAProxy's `abortonclose` do); what it sends meanwhile is
/// kept for later, up to [`PEEK_LIMIT`].
async fn watch_eof<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) {
    loop {
        if buf.len() >= PEEK_LIMIT {
            std::future::pending::<()>().await;
        }
        if read_more(io, buf).await == 0 {
            return;
        }
    }
}
