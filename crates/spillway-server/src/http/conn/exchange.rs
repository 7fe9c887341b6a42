//! The HTTP/1.1 wire of an exchange, while one request is with a worker: the request body
//! goes out as the worker grants credit (decoded from the connection), the response is
//! written as it arrives (everything that arrived together in one write), and the
//! client's FIN ends it early. The rules (reply order, deadlines, declared length, what a
//! break costs) are the [`Exchange`]'s, shared with HTTP/2.

use tokio::io::{AsyncRead, AsyncWrite};

use super::buffer::Buffered;
use super::{hold, read_more, Conn, PEEK_LIMIT};
use crate::admission::dispatch::{Exchange, Failure, Reply, Stalled};
use crate::error::{Answer, Origin};
use crate::h1::body::{BodyDecoder, Piece};
use crate::h1::response::{self, BodyFraming, Reply as ReplyTo};
use crate::telemetry::access_log::AccessRecord;

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
    /// When the client must have sent more of the body by, while the application waits
    /// for it.
    body_due: Option<std::time::Instant>,
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
            body_due: None,
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
        let mut armed = st.ex.due();
        let sleep = tokio::time::sleep_until(armed.into());
        tokio::pin!(sleep);
        loop {
            if let Some(held) = st.buffered.as_mut() {
                // The held body's file is read off the event loop, ahead of the credit.
                held.fill(st.ex.body_credit()).await;
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
            // A body the worker wants and the client is slow to send ends at the
            // exchange's pace rules.
            let waiting = want_read && !st.body.is_done() && st.buffered.is_none();
            st.body_due = st.ex.awaiting_body(waiting);
            let due = st.body_due.map_or(st.ex.due(), |b| b.min(st.ex.due()));
            if armed != due {
                armed = due;
                sleep.as_mut().reset(armed.into());
            }
            let flow = tokio::select! {
                biased;
                reply = st.ex.next() => self.on_reply(st, reply).await,
                n = read_more(&mut self.io, &mut self.rbuf), if want_read => {
                    if n == 0 {
                        tracing::debug!(client = %self.peer.label, "client left while its request was served");
                        Flow::Done(false)
                    } else {
                        if waiting {
                            st.ex.body_arrived(n);
                        }
                        Flow::Continue
                    }
                }
                _ = sleep.as_mut() => {
                    if st.body_due.is_some_and(|b| b <= std::time::Instant::now()) {
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
        let mut progressed = hold::send_held(&mut st.ex, &mut st.buffered, &self.peer.label)?;
        while st.buffered.is_none() && st.ex.body_credit() > 0 {
            let max = st.ex.body_credit().min(spillway_proto::MAX_CHUNK as u64) as usize;
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
        if st.body.is_done() && st.buffered.is_none() && !st.body_ended {
            st.body_ended = true;
            st.ex.end_body();
        }
        // Upload time is the client's, not the application's: while the body flows, the
        // response deadline counts from the latest progress.
        if progressed {
            st.ex.upload_progress();
        }
        Ok(())
    }

    /// The client stopped sending (or trickled) the body the application reads: 408 if
    /// nothing was answered yet, else the connection is cut; the application hears the
    /// client left.
    async fn on_body_timeout(&mut self, st: &mut State<'_>) -> Flow {
        let answer = st.ex.body_stalled(&self.peer.label);
        match st.response {
            Response::Waiting => {
                st.status = answer.status();
                st.reply.keep_alive = false;
                self.answer_in_exchange(answer, st).await;
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
            // The exchange lets one head through, before any body.
            Reply::Head(mut head) => {
                head.headers.extend(crate::telemetry::server_timing::field(
                    &self.front.cfg,
                    self.peer.ip,
                    st.record.as_ref(),
                ));
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
                self.push_body(st, &data);
                self.write_ready(st).await
            }
            Reply::End => self.finish(st).await,
            Reply::Failed(f) => self.failed(st, f).await,
        }
    }

    fn push_body(&mut self, st: &mut State<'_>, data: &[u8]) {
        if let Response::Streaming { framing, close } = &mut st.response {
            // An application that wrote past its length is not trusted with the
            // connection's next response.
            if !response::encode_body(framing, data, &mut self.wbuf) || st.ex.overran() {
                // Only past a length the exchange does not enforce (none here yet).
                *close = true;
            }
            if *framing != BodyFraming::None {
                st.bytes += data.len() as u64;
            }
        }
    }

    /// Adds everything else that already arrived, writes it all at once, then lets the
    /// worker send more.
    async fn write_ready(&mut self, st: &mut State<'_>) -> Flow {
        while let Some(reply) = st.ex.try_next() {
            match reply {
                Reply::Body(data) => self.push_body(st, &data),
                Reply::Credit => {}
                Reply::End => return self.finish(st).await,
                // The exchange turns a second head into a failure; never here.
                Reply::Head(_) => return self.failed(st, Failure::Broken).await,
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
        // A short body never ends here: the exchange fails it.
        let complete = response::encode_end(framing, &mut self.wbuf);
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

    async fn on_timeout(&mut self, st: &mut State<'_>) -> Flow {
        match st.ex.time_out(&self.peer.label, Stalled::Application) {
            Some(answer) => {
                st.status = answer.status();
                Flow::Done(self.answer_in_exchange(answer, st).await)
            }
            None => {
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
