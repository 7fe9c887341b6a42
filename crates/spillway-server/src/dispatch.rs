//! One request's exchange with a worker, owned by one value: admission hands it a thread,
//! it opens a stream on that worker, sends the request body as the worker grants credit,
//! receives the response, and grants response credit as the client takes the bytes.
//! Dropping an [`Exchange`] before the response ended cancels the stream on the worker, so
//! a client that leaves never keeps Python busy.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use spillway_proto::{
    RecvWindow, RequestHead, ResponseHead, SendWindow, INITIAL_REQUEST_WINDOW,
    INITIAL_RESPONSE_WINDOW, MAX_CHUNK,
};

use crate::error::Answer;
use crate::link::{Event, Inbox, OpenError, WorkerLink};
use crate::pool::Pool;

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
    /// The worker broke the frame or credit rules.
    Broken,
}

impl Failure {
    /// The answer for a client that has not seen a response head yet.
    pub fn answer(self) -> Answer {
        match self {
            Failure::WorkerLost => Answer::WorkerLost,
            Failure::Aborted | Failure::Broken => Answer::WorkerBroken,
        }
    }
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
}

impl Exchange {
    /// Waits for a thread (admission) and opens the request on its worker. A worker that
    /// died between admission and opening is skipped: only requests already in flight on
    /// a dead worker get 502.
    pub async fn start(workers: &Workers, head: RequestHead) -> Result<Exchange, Answer> {
        let expect_continue = head.expect_continue;
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
            Event::Head(h) => Reply::Head(h),
            Event::Body(b) => {
                if self.recv.received(b.len()).is_err() {
                    return self.broken("sent more response body than it was granted");
                }
                self.undelivered = true;
                Reply::Body(b)
            }
            Event::BodyCredit(n) => {
                if self.send.grant(n).is_err() {
                    return self.broken("granted request-body credit past the maximum");
                }
                Reply::Credit
            }
            Event::End => {
                self.finished = true;
                Reply::End
            }
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

    fn broken(&mut self, what: &str) -> Reply {
        tracing::error!(
            worker = self.link.pid,
            generation = self.link.generation,
            "the worker {what}; the request fails and its worker is replaced"
        );
        self.link.request_retire(
            crate::metrics::Recycle::Protocol,
            format!("broke the credit rules: it {what}"),
        );
        self.link.cancel(self.stream);
        self.finished = true;
        Reply::Failed(Failure::Broken)
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

    /// The response did not start (or stalled) within `--timeout`: the Python thread is
    /// marked stuck and told to stop, and the exchange is over for the client.
    pub fn time_out(&mut self) {
        if !self.finished {
            self.link.mark_stuck(self.stream);
            self.finished = true;
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away (or its connection failed): stop the application.
            self.link.cancel(self.stream);
        }
    }
}
