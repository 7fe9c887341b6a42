//! One request's exchange with a worker, owned by one value: admission hands it a thread,
//! it opens a stream on that worker, sends the request body as the worker grants credit,
//! receives the response, and grants response credit as the client takes the bytes.
//! Dropping an [`Exchange`] before the response ended cancels the stream on the worker, so
//! a client that leaves never keeps Python busy.
//!
//! The rules every protocol keeps live here, once: the reply order (a head, then body,
//! then the end), the application's declared `Content-Length` (excess dropped, a short
//! body fails the response), the deadlines (the response must start and keep coming
//! within `--timeout`, a streamed upload must keep pace, see [`Upload`]), and what a
//! break costs the worker (it is retired). HTTP/1.1 and HTTP/2 only put the replies on
//! their wire.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spillway_proto::{
    RecvWindow, RequestHead, ResponseHead, SendWindow, INITIAL_REQUEST_WINDOW,
    INITIAL_RESPONSE_WINDOW, MAX_CHUNK,
};

use crate::admission::link::{Event, Inbox, OpenError, WorkerLink};
use crate::admission::pool::Pool;
use crate::admission::upload::{Stall, Upload};
use crate::error::Answer;

/// The workers as requests see them.
pub(crate) type Workers = Pool<Arc<WorkerLink>>;

/// What the worker answered, as the exchange's owner sees it.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Status and headers.
    Head(Box<ResponseHead>),
    /// Body bytes; call [`Exchange::delivered`] once they are on their way to the client.
    Body(Bytes),
    /// More request body may be sent.
    Credit,
    /// The response is complete.
    End,
    /// The response failed: before its head (answer the client with this), or midway
    /// (cut the connection).
    Failed(Failure),
}

/// How a response failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The application raised after sending the head.
    Aborted,
    /// The worker died.
    WorkerLost,
    /// The worker broke the frame, credit or reply-order rules.
    Broken,
    /// The application ended the body short of its `Content-Length`.
    Short,
}

impl Failure {
    /// The answer for a client that has not seen a response head yet.
    pub fn answer(self) -> Answer {
        match self {
            Failure::WorkerLost => Answer::WorkerLost,
            Failure::Aborted | Failure::Broken | Failure::Short => Answer::WorkerBroken,
        }
    }
}

/// The deadlines of an exchange, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// `--timeout`: until the response starts, between its pieces, and for the client to
    /// take each piece.
    pub response: Duration,
    /// `--body-timeout`: longest silence of a client streaming its body.
    pub body: Duration,
    /// `--body-min-rate`: bytes a second a streamed body must average (0: no minimum).
    pub body_min_rate: u64,
}

/// Where the response stands, for the reply-order rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No head yet.
    Waiting,
    /// The head came; `left`: body bytes still owed by the declared `Content-Length`.
    Streaming { left: Option<u64> },
}

/// A request in flight on a worker.
pub(crate) struct Exchange {
    link: Arc<WorkerLink>,
    stream: u32,
    events: Arc<Inbox>,
    /// Request-body credit the worker granted.
    send: SendWindow,
    /// Response-body credit granted to the worker.
    recv: RecvWindow,
    /// Response bytes received and not yet granted back.
    undelivered: bool,
    /// The worker ended the stream (or died): nothing to cancel on drop.
    finished: bool,
    phase: Phase,
    /// A `HEAD` request: its response has no body, whatever it declares.
    head_method: bool,
    /// The application wrote past its `Content-Length`.
    overran: bool,
    deadlines: Deadlines,
    /// When the response must start (or its next piece come) by.
    due: Instant,
    upload: Upload,
    request_id: Bytes,
}

impl Exchange {
    /// Waits for a thread (admission) and opens the request on its worker. A worker that
    /// died between admission and opening is skipped: only requests already in flight on
    /// a dead worker get 502.
    pub async fn start(
        workers: &Workers,
        head: RequestHead,
        deadlines: Deadlines,
    ) -> Result<Exchange, Answer> {
        let expect_continue = head.expect_continue;
        let head_method = head.method.as_ref() == b"HEAD";
        let request_id = crate::telemetry::request_id::request_id_of(&head);
        let mut head = Box::new(head);
        loop {
            let lease = workers.acquire().await.map_err(Answer::Refused)?;
            let link = lease.worker;
            match link.open(lease.claim, head) {
                Ok((stream, events)) => {
                    return Ok(Exchange {
                        link,
                        stream,
                        events,
                        send: SendWindow::new(if expect_continue {
                            0
                        } else {
                            INITIAL_REQUEST_WINDOW
                        }),
                        recv: RecvWindow::new(INITIAL_RESPONSE_WINDOW, INITIAL_RESPONSE_WINDOW),
                        undelivered: false,
                        finished: false,
                        phase: Phase::Waiting,
                        head_method,
                        overran: false,
                        deadlines,
                        due: Instant::now() + deadlines.response,
                        upload: Upload::new(deadlines.body, deadlines.body_min_rate),
                        request_id,
                    })
                }
                Err(OpenError::Dead(mut claim, returned)) => {
                    claim.forget();
                    head = returned;
                }
                Err(OpenError::TooLarge(e)) => {
                    tracing::warn!(error = %e, "request head too large for a frame; 431");
                    return Err(Answer::HeadersTooLarge);
                }
            }
        }
    }

    /// The worker running the request.
    pub fn worker(&self) -> &WorkerLink {
        &self.link
    }

    /// Waits for the worker's next reply.
    pub async fn next(&mut self) -> Reply {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next reply if one is already here (to batch what arrived together).
    pub fn try_next(&mut self) -> Option<Reply> {
        let ev = self.events.try_recv()?;
        Some(self.apply(ev))
    }

    /// Polls for the worker's next reply.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Reply> {
        if self.finished {
            return Poll::Pending;
        }
        self.events.poll_recv(cx).map(|ev| self.apply(ev))
    }

    fn apply(&mut self, ev: Event) -> Reply {
        match ev {
            Event::Head(h) => {
                if self.phase != Phase::Waiting {
                    return self.broken("sent a second response head");
                }
                let left = if self.head_method {
                    None
                } else {
                    declared_length(h.status, &h.headers)
                };
                self.phase = Phase::Streaming { left };
                self.due = Instant::now() + self.deadlines.response;
                Reply::Head(h)
            }
            Event::Body(b) => {
                if self.recv.received(b.len()).is_err() {
                    return self.broken("sent more response body than it was granted");
                }
                let Phase::Streaming { left } = &mut self.phase else {
                    return self.broken("sent a body before a head");
                };
                self.undelivered = true;
                self.due = Instant::now() + self.deadlines.response;
                let mut b = b;
                if let Some(left) = left {
                    if b.len() as u64 > *left {
                        if !self.overran {
                            tracing::warn!(
                                worker = self.link.pid,
                                request_id = %String::from_utf8_lossy(&self.request_id),
                                "the application sent more than its Content-Length; the excess is dropped"
                            );
                        }
                        self.overran = true;
                        b.truncate(*left as usize);
                    }
                    *left -= b.len() as u64;
                }
                Reply::Body(b)
            }
            Event::BodyCredit(n) => {
                if self.send.grant(n).is_err() {
                    return self.broken("granted request-body credit past the maximum");
                }
                Reply::Credit
            }
            Event::End => match self.phase {
                Phase::Waiting => self.broken("ended a response it never started"),
                Phase::Streaming { left: Some(n) } if n > 0 => {
                    tracing::warn!(
                        worker = self.link.pid,
                        request_id = %String::from_utf8_lossy(&self.request_id),
                        missing = n,
                        "the application sent less than its Content-Length; the response is cut"
                    );
                    self.finished = true;
                    Reply::Failed(Failure::Short)
                }
                Phase::Streaming { .. } => {
                    self.finished = true;
                    Reply::End
                }
            },
            Event::Abort => {
                self.finished = true;
                Reply::Failed(Failure::Aborted)
            }
            Event::WorkerLost => {
                self.finished = true;
                Reply::Failed(Failure::WorkerLost)
            }
        }
    }

    /// The worker broke a rule: the request fails, and the worker is replaced, whatever
    /// the rule (a worker that breaks one cannot be trusted with the next request).
    fn broken(&mut self, what: &str) -> Reply {
        tracing::error!(
            worker = self.link.pid,
            generation = self.link.generation,
            request_id = %String::from_utf8_lossy(&self.request_id),
            "the worker {what}; the request fails and its worker is replaced"
        );
        self.link.request_retire(
            crate::telemetry::metrics::Recycle::Protocol,
            format!("broke the frame protocol: it {what}"),
        );
        self.link.cancel(self.stream);
        self.finished = true;
        Reply::Failed(Failure::Broken)
    }

    /// The application wrote past its `Content-Length` (the excess was dropped).
    pub fn overran(&self) -> bool {
        self.overran
    }

    /// When the response must start, or its next piece come, or the client take the last
    /// one, by.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// The request body moved (the client's time, not the application's): the response
    /// deadline counts from now.
    pub fn upload_progress(&mut self) {
        if self.phase == Phase::Waiting {
            self.due = Instant::now() + self.deadlines.response;
        }
    }

    /// Whether the application now waits for request-body bytes the client has yet to
    /// send; while it does, when the client must have sent more by.
    pub fn awaiting_body(&mut self, waiting: bool) -> Option<Instant> {
        if !waiting && !self.upload.is_waiting() {
            // The common case, without reading the clock.
            return None;
        }
        self.upload.wait(waiting, Instant::now())
    }

    /// `n` request-body bytes came from the client while the application waited.
    pub fn body_arrived(&mut self, n: usize) {
        self.upload.received(n, Instant::now());
    }

    /// The client streaming its body missed its due time: the answer, 408 (the client
    /// gets it if nothing was answered yet); dropping the exchange then frees the thread.
    pub fn body_stalled(&self, client: &str) -> Answer {
        let why = match self.upload.stall(Instant::now()) {
            Stall::Silent => "no request-body bytes within --body-timeout",
            Stall::TooSlow => "request body slower than --body-min-rate",
        };
        crate::telemetry::throttle::client_body_refused(client, Answer::BodyTimeout, why);
        Answer::BodyTimeout
    }

    /// The response did not start, or stalled, or the client did not take it, within
    /// `--timeout`: the Python thread is marked stuck and told to stop. The answer for
    /// the client if no head was sent yet; `None`: cut what was sent.
    pub fn time_out(&mut self, client: &str, what: Stalled) -> Option<Answer> {
        let w = &self.link;
        let timeout_s = self.deadlines.response.as_secs();
        let request_id = String::from_utf8_lossy(&self.request_id);
        let waiting = self.phase == Phase::Waiting;
        match (what, waiting) {
            (Stalled::Application, true) => {
                tracing::warn!(client, worker = w.pid, generation = w.generation, timeout_s, origin = %Answer::TimedOut.origin(), request_id = %request_id, "request timed out; 504; its worker thread is marked stuck")
            }
            (Stalled::Application, false) => {
                tracing::warn!(client, worker = w.pid, generation = w.generation, timeout_s, request_id = %request_id, "response body stalled past the request timeout; cutting it; worker thread marked stuck")
            }
            (Stalled::Client, _) => {
                tracing::warn!(client, worker = w.pid, generation = w.generation, timeout_s, request_id = %request_id, "client stopped reading the response; cutting it")
            }
        }
        if !self.finished {
            match what {
                Stalled::Application => self.link.mark_stuck(self.stream),
                Stalled::Client => self.link.cancel(self.stream),
            }
            self.finished = true;
        }
        waiting.then_some(Answer::TimedOut)
    }

    /// Request-body bytes the worker will accept now.
    pub fn body_credit(&self) -> u64 {
        self.send.available()
    }

    /// Sends as much of `data` as the credit allows; returns how many bytes were taken.
    pub fn send_body(&mut self, mut data: &[u8]) -> usize {
        let mut sent = 0;
        while !data.is_empty() {
            let n = self.send.take(data.len().min(MAX_CHUNK));
            if n == 0 {
                break;
            }
            self.link.send_body(self.stream, &data[..n]);
            data = &data[n..];
            sent += n;
        }
        sent
    }

    /// The request body is complete.
    pub fn end_body(&mut self) {
        if !self.finished {
            self.link.end_body(self.stream);
        }
    }

    /// The response bytes received so far are on their way to the client: let the worker
    /// send more once half its window is used.
    pub fn delivered(&mut self) {
        if !std::mem::take(&mut self.undelivered) || self.finished {
            return;
        }
        if let Some(grant) = self.recv.replenish() {
            self.link.grant_response(self.stream, grant);
        }
    }
}

/// Who stalled an exchange past `--timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stalled {
    /// The application did not answer, or stopped midway.
    Application,
    /// The client did not take the response.
    Client,
}

/// The body length a response head promises: its first valid `Content-Length`, unless
/// the status has no body.
pub(crate) fn declared_length(status: u16, headers: &[(Bytes, Bytes)]) -> Option<u64> {
    if status < 200 || status == 204 || status == 304 {
        return None;
    }
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(b"content-length"))
        .find_map(|(_, v)| crate::h1::response::parse_length(v))
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away (or its connection failed): stop the application.
            self.link.cancel(self.stream);
        }
    }
}
