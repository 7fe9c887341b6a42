//! The part of a connection's life while one request is with a worker: the request body
//! goes out as the worker grants credit, the response comes back and is written as it
//! arrives (everything that arrived together in one write), and the client's FIN, a
//! worker's death or a silent application end it early.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use super::buffer::Buffered;
use super::{client_body_error, read_more, Conn, PEEK_LIMIT};
use crate::access_log::AccessRecord;
use crate::dispatch::{Exchange, Failure, Reply};
use crate::error::{Answer, Origin};
use crate::h1::body::{BodyDecoder, Piece};
use crate::h1::response::{self, BodyFraming, Reply as ReplyTo};

/// Where the response stands.
enum Response {
    /// No head yet.
    Waiting,
    /// The head is written; the body follows.
    Streaming {
        framing: BodyFraming,
        /// The connection closes after this response.
        close: bool,
    },
}

/// What the loop does after a reply.
enum Flow {
    Continue,
    /// The exchange is over; whether the connection stays open.
    Done(bool),
}

/// The request body, as the exchange sends it: what the front already holds, then what
/// the client still sends.
pub(super) struct Body<'a> {
    pub decoder: &'a mut BodyDecoder,
    pub buffered: Option<Buffered>,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// The per-exchange state the loop and its helpers share.
struct State<'a> {
    ex: Exchange,
    body: &'a mut BodyDecoder,
    /// Body bytes held by the front, sent before the rest.
    buffered: Option<Buffered>,
    reply: ReplyTo,
    expect_continue: bool,
    /// `100 Continue` was sent.
    continued: bool,
    /// `RequestEnd` was sent (or there was no body to end).
    body_ended: bool,
    response: Response,
    record: Option<AccessRecord>,
    status: u16,
    /// Whose doing the status is: the application's, unless the front answered.
    origin: Origin,
    request_id: bytes::Bytes,
    bytes: u64,
    /// When the response must start (or the next body piece arrive) by.
    deadline: Instant,
    /// When the client must have sent more of the body by, while it is awaited.
    body_deadline: Option<Instant>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Runs a request's exchange to its end; returns whether the connection stays open.
    pub(super) async fn exchange(
        &mut self,
        ex: Exchange,
        body: Body<'_>,
        reply: ReplyTo,
        record: Option<AccessRecord>,
        request_id: bytes::Bytes,
    ) -> bool {
        let body_ended = body.decoder.is_done() && body.buffered.is_none();
        let mut st = State {
            ex,
            body: body.decoder,
            buffered: body.buffered,
            reply,
            expect_continue: body.expect_continue,
            continued: false,
            body_ended,
            response: Response::Waiting,
            record,
            status: 0,
            origin: Origin::Application,
            request_id,
            bytes: 0,
            deadline: Instant::now() + self.front.cfg.timeout,
            body_deadline: None,
        };
        let keep = self.exchange_loop(&mut st).await;
        if let Some(mut r) = st.record.take() {
            let w = st.ex.worker();
            r.status = st.status;
            r.origin = st.origin;
            r.bytes = st.bytes;
            r.worker = w.pid;
            r.generation = w.generation;
            self.front.finish(r);
        }
        keep
    }

    async fn exchange_loop(&mut self, st: &mut State<'_>) -> bool {
        // One timer for the exchange, moved only when the deadline does.
        let sleep = tokio::time::sleep_until(st.deadline.into());
        tokio::pin!(sleep);
        let mut armed = st.deadline;
        loop {
            let due = st.body_deadline.map_or(st.deadline, |b| b.min(st.deadline));
            if armed != due {
                armed = due;
                sleep.as_mut().reset(armed.into());
            }
            if let Err(answer) = self.pump_body(st) {
                // The client's body broke a framing rule: its fault, answered if nothing
                // was sent yet; the exchange is dropped, which stops the application.
                tracing::debug!(client = %self.peer.label, error = %answer, "malformed request body");
                return match st.response {
                    Response::Waiting => {
                        st.status = answer.status();
                        st.reply.keep_alive = false;
                        self.answer_in_exchange(answer, st).await;
                        false
                    }
                    Response::Streaming { .. } => false,
                };
            }
            let want_read = if st.buffered.is_some() || st.body.is_done() {
                self.rbuf.len() < PEEK_LIMIT
            } else {
                st.ex.body_credit() > 0
            };
            // A body the worker wants and the client does not send ends at --body-timeout.
            if want_read && !st.body.is_done() && st.buffered.is_none() {
                st.body_deadline
                    .get_or_insert_with(|| Instant::now() + self.front.cfg.body_timeout);
            } else {
                st.body_deadline = None;
            }
            let flow = tokio::select! {
                biased;
                reply = st.ex.next() => self.on_reply(st, reply).await,
                n = read_more(&mut self.io, &mut self.rbuf), if want_read => {
                    if n == 0 {
                        tracing::debug!(client = %self.peer.label, "client left while its request was served");
                        Flow::Done(false)
                    } else {
                        st.body_deadline = None;
                        Flow::Continue
                    }
                }
                _ = sleep.as_mut() => {
                    if st.body_deadline.is_some_and(|b| b <= Instant::now()) {
                        self.on_body_timeout(st).await
                    } else {
                        self.on_timeout(st).await
                    }
                }
            };
            if let Flow::Done(keep) = flow {
                return keep;
            }
        }
    }

    /// Sends the request body as far as the credit goes: what the front holds first, then
    /// what the read buffer has of the rest.
    fn pump_body(&mut self, st: &mut State<'_>) -> Result<(), Answer> {
        let mut progressed = false;
        while st.ex.body_credit() > 0 {
            let max = st.ex.body_credit().min(spillway_proto::MAX_CHUNK as u64) as usize;
            if let Some(held) = st.buffered.as_mut() {
                match held.next_chunk(max) {
                    Ok(Some(data)) => {
                        st.ex.send_body(&data);
                        progressed = true;
                        continue;
                    }
                    Ok(None) => st.buffered = None,
                    Err(e) => {
                        tracing::error!(client = %self.peer.label, error = %e, "cannot read a held request body back; 503");
                        return Err(Answer::BufferFailed);
                    }
                }
            }
            if st.body.is_done() {
                break;
            }
            match st.body.decode(&mut self.rbuf, max)? {
                Some(Piece::Data(data)) => {
                    st.ex.send_body(&data);
                    progressed = true;
                }
                Some(Piece::End) | None => break,
            }
        }
        if st.buffered.as_ref().is_some_and(|b| b.is_drained()) {
            st.buffered = None;
        }
        if st.body.is_done() && st.buffered.is_none() && !st.body_ended {
            st.body_ended = true;
            st.ex.end_body();
        }
        // Upload time is the client's, not the application's: while the body flows, the
        // response deadline counts from the latest progress.
        if progressed && matches!(st.response, Response::Waiting) {
            st.deadline = Instant::now() + self.front.cfg.timeout;
        }
        Ok(())
    }

    /// The client stopped sending the body the application reads: 408 if nothing was
    /// answered yet, else the connection is cut; the application hears the client left.
    async fn on_body_timeout(&mut self, st: &mut State<'_>) -> Flow {
        client_body_error(&self.peer.label, Answer::BodyTimeout);
        match st.response {
            Response::Waiting => {
                st.status = Answer::BodyTimeout.status();
                st.reply.keep_alive = false;
                self.answer_in_exchange(Answer::BodyTimeout, st).await;
                Flow::Done(false)
            }
            Response::Streaming { .. } => {
                self.flush().await;
                Flow::Done(false)
            }
        }
    }

    async fn on_reply(&mut self, st: &mut State<'_>, reply: Reply) -> Flow {
        match reply {
            Reply::Credit => {
                if st.expect_continue && !st.continued && matches!(st.response, Response::Waiting) {
                    st.continued = true;
                    self.wbuf.extend_from_slice(response::CONTINUE);
                    if !self.flush().await {
                        return Flow::Done(false);
                    }
                }
                Flow::Continue
            }
            Reply::Head(mut head) => {
                head.headers.extend(crate::server_timing::field(
                    &self.front.cfg,
                    self.peer.ip,
                    st.record.as_ref(),
                ));
                if !matches!(st.response, Response::Waiting) {
                    return self.broken(st, "sent a second response head").await;
                }
                // A response that starts while the server drains is the connection's last;
                // so is one to a client still waiting for `100 Continue`, which may or may
                // not send its body now.
                st.reply.keep_alive &= !self.draining_now();
                if st.expect_continue && !st.continued && !st.body.is_done() {
                    st.reply.keep_alive = false;
                }
                let h = response::encode_head(
                    head.status,
                    &head.headers,
                    &st.reply,
                    &self.front.keep_alive_value,
                    &st.request_id,
                    &mut self.wbuf,
                );
                st.status = h.status;
                if let Some(r) = st.record.as_mut() {
                    r.application = r.dispatched.map(|d| d.elapsed());
                }
                st.response = Response::Streaming {
                    framing: h.framing,
                    close: h.close,
                };
                self.write_ready(st).await
            }
            Reply::Body(data) => {
                if matches!(st.response, Response::Waiting) {
                    return self.broken(st, "sent a body before a head").await;
                }
                self.push_body(st, &data);
                self.write_ready(st).await
            }
            Reply::End => {
                if matches!(st.response, Response::Waiting) {
                    return self.broken(st, "ended a response it never started").await;
                }
                self.finish(st).await
            }
            Reply::Failed(f) => self.failed(st, f).await,
        }
    }

    fn push_body(&mut self, st: &mut State<'_>, data: &[u8]) {
        if let Response::Streaming { framing, close } = &mut st.response {
            if !response::encode_body(framing, data, &mut self.wbuf) {
                tracing::warn!(
                    worker = st.ex.worker().pid,
                    "the application sent more than its Content-Length; the excess is dropped"
                );
                *close = true;
            }
            if *framing != BodyFraming::None {
                st.bytes += data.len() as u64;
            }
        }
        st.deadline = Instant::now() + self.front.cfg.timeout;
    }

    /// Adds everything else that already arrived, writes it all at once, then lets the
    /// worker send more.
    async fn write_ready(&mut self, st: &mut State<'_>) -> Flow {
        while let Some(reply) = st.ex.try_next() {
            match reply {
                Reply::Body(data) => self.push_body(st, &data),
                Reply::Credit => {}
                Reply::End => return self.finish(st).await,
                Reply::Head(_) => return self.broken(st, "sent a second response head").await,
                Reply::Failed(f) => return self.failed(st, f).await,
            }
        }
        if !self.flush().await {
            return Flow::Done(false);
        }
        st.ex.delivered();
        Flow::Continue
    }

    async fn finish(&mut self, st: &mut State<'_>) -> Flow {
        let Response::Streaming { framing, close } = st.response else {
            return Flow::Done(false);
        };
        let complete = response::encode_end(framing, &mut self.wbuf);
        if !complete {
            tracing::warn!(
                worker = st.ex.worker().pid,
                "the application sent less than its Content-Length; closing the connection"
            );
        }
        if !self.flush().await {
            return Flow::Done(false);
        }
        let keep = st.reply.keep_alive && !close && complete;
        Flow::Done(
            keep && self
                .discard(st.body, st.expect_continue, st.continued)
                .await,
        )
    }

    async fn failed(&mut self, st: &mut State<'_>, f: Failure) -> Flow {
        match st.response {
            Response::Waiting => {
                if f == Failure::WorkerLost {
                    let w = st.ex.worker();
                    tracing::warn!(client = %self.peer.label, worker = w.pid, generation = w.generation, origin = %Answer::WorkerLost.origin(), request_id = %String::from_utf8_lossy(&st.request_id), "worker died before answering; 502");
                }
                st.status = f.answer().status();
                Flow::Done(self.answer_in_exchange(f.answer(), st).await)
            }
            Response::Streaming { .. } => {
                // Part of the response is out: the only honest signal left is to cut the
                // connection, after what was produced, so the client cannot take it as
                // complete.
                tracing::debug!(client = %self.peer.label, failure = ?f, "response failed midway; cutting the connection");
                self.flush().await;
                Flow::Done(false)
            }
        }
    }

    async fn broken(&mut self, st: &mut State<'_>, what: &str) -> Flow {
        let w = st.ex.worker();
        tracing::error!(
            worker = w.pid,
            generation = w.generation,
            "the worker {what}; the request fails"
        );
        st.ex.time_out();
        self.failed(st, Failure::Broken).await
    }

    async fn on_timeout(&mut self, st: &mut State<'_>) -> Flow {
        st.ex.time_out();
        let w = st.ex.worker();
        let timeout_s = self.front.cfg.timeout.as_secs();
        match st.response {
            Response::Waiting => {
                tracing::warn!(client = %self.peer.label, worker = w.pid, generation = w.generation, timeout_s, origin = %Answer::TimedOut.origin(), request_id = %String::from_utf8_lossy(&st.request_id), "request timed out; 504; its worker thread is marked stuck");
                st.status = Answer::TimedOut.status();
                Flow::Done(self.answer_in_exchange(Answer::TimedOut, st).await)
            }
            Response::Streaming { .. } => {
                tracing::warn!(client = %self.peer.label, worker = w.pid, generation = w.generation, timeout_s, request_id = %String::from_utf8_lossy(&st.request_id), "response body stalled past the request timeout; cutting it; worker thread marked stuck");
                self.flush().await;
                Flow::Done(false)
            }
        }
    }

    /// Answers in place of the application during an exchange; the connection stays
    /// open only if the answer allows it and the rest of the request body is read.
    async fn answer_in_exchange(&mut self, answer: Answer, st: &mut State<'_>) -> bool {
        st.origin = answer.origin();
        st.reply.keep_alive &= !self.draining_now();
        let close = response::encode_answer(
            answer,
            None,
            &st.reply,
            &self.front.keep_alive_value,
            &st.request_id,
            &mut self.wbuf,
        );
        if !st.reply.head_method {
            st.bytes = answer.body().len() as u64;
        }
        self.flush().await
            && !close
            && self
                .discard(st.body, st.expect_continue, st.continued)
                .await
    }
}
